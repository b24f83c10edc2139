"""Training: Label Studio annotations -> a YOLO dataset -> a fine-tuned, gated version."""
