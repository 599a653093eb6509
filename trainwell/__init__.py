"""trainwell: one training loop for every paradigm."""

__version__ = "0.1.0"
