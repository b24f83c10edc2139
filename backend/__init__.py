"""ls-active-yolo: a Label Studio ML backend serving, retraining and ranking with YOLO."""

__version__ = "0.1.0"
