"""The self-supervised image encoder learned from a project's own images, and the detector
backbone pretrained on them."""
