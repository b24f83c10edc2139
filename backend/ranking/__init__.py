"""Ranking: the active-learning queue, from detections to Label Studio predictions."""
