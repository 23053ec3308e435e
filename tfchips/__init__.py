"""tfchips: satellite imagery and vector ground truth to TensorFlow training data."""

__version__ = "0.1.0"
