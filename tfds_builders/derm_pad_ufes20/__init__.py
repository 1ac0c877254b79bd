"""PAD-UFES-20 builder (`derm_pad_ufes20`)."""
