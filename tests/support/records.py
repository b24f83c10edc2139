"""Detection records with known boxes and scores, for the ranking's tests."""

from __future__ import annotations

import numpy as np

from backend.ranking.detection_cache import ImageRecord

NAMES = ("square", "circle", "triangle")


def record(classes: list[int], conf: list[float], ref: str = "a.jpg") -> ImageRecord:
    """A record with one box per class id; box i's score vector puts conf[i] on its class."""
    k = len(classes)
    scores = np.zeros((k, len(NAMES)), dtype=np.float32)
    scores[np.arange(k), classes] = conf
    return ImageRecord(
        ref=ref,
        width=200,
        height=100,
        xyxy=np.array([[10.0 * i, 5.0, 10.0 * i + 8, 25.0] for i in range(k)], np.float32).reshape(
            -1, 4
        ),
        class_ids=np.array(classes, dtype=np.int64),
        conf=np.array(conf, dtype=np.float32),
        class_scores=scores,
    )
