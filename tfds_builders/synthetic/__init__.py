"""Synthetic generators writing the real on-disk formats of the suite's datasets."""
