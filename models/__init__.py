"""Committed TFLite models and the code that trains them (``python -m models.train all``)."""
