"""Models: loading and running YOLO detectors, and the versioned registry of weights."""
