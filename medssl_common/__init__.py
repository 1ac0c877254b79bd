"""Leaf helpers that every layer may import (standard library only): where a result or a
checkpoint came from (`provenance`)."""
