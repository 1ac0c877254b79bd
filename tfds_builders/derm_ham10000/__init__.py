"""HAM10000 builder (`derm_ham10000`)."""
