"""NIH ChestX-ray14 builder (`cxr_nih14`)."""
