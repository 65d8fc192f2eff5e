"""Reproducible training of the ANPR detector and OCR from synthetic data (see models/README.md)."""
