"""CheXpert builder (`cxr_chexpert`)."""
