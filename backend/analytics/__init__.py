"""Annotation analytics: what annotators did to the pre-annotations, and what it cost."""
