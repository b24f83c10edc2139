"""Flip consistency: how much a detector's answer changes when the image is mirrored.

A model that has learned an object finds the same box, with the same class, on the image and
on its horizontal mirror; where the two answers disagree (a box only one side finds, a box
that moves, a class that changes) the model is unsure in a way class scores alone do not
show: localisation and existence. This is the consistency idea of CALD (Yu et al., 2022),
reduced to one augmentation and one number per image.

Per box, on either side, its consistency with the other side is
    c = IoU(box, best match) * (1 - TV(p, q)),
the best match the other side's box of largest IoU (after mirroring back), TV the total
variation distance between the two boxes' class-score distributions (scores divided by their
sum); c = 0 when the other side found nothing. The image's disagreement is the largest
conf * (1 - c) over the boxes of both sides: its least consistent confident box, as in CALD,
with low-confidence noise weighed down by its confidence. In [0, 1]; 0 when neither side
finds a box at or above the floor (the class-uncertainty part keeps "nothing detected" as a
signal, see `strategies.uncertainty`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from strategies.boxes import box_iou, mirror_boxes
from strategies.pool import FloatArray
from strategies.uncertainty import DEFAULT_FLOOR


def flip_disagreement(
    xyxy: npt.ArrayLike,
    scores: npt.ArrayLike,
    flipped_xyxy: npt.ArrayLike,
    flipped_scores: npt.ArrayLike,
    width: float,
    *,
    floor: float = DEFAULT_FLOOR,
) -> float:
    """The image's disagreement in [0, 1] between its detections and its mirror's.

    Args:
        xyxy, scores: the image's boxes (k, 4) in pixels and their per-class scores
            (k, n_classes) in [0, 1].
        flipped_xyxy, flipped_scores: the same for the horizontally mirrored image, in the
            mirrored image's pixels (as the detector returned them).
        width: the image width in pixels (the mirror axis).
        floor: boxes whose largest class score is below it are ignored on both sides.

    Raises:
        ValueError: shapes that do not match or a width that is not positive.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    boxes, probs = _kept(xyxy, scores, floor)
    mirrored, mirrored_probs = _kept(flipped_xyxy, flipped_scores, floor)
    if probs.shape[1] != mirrored_probs.shape[1] and len(boxes) and len(mirrored):
        raise ValueError("both sides must score the same classes")
    if not len(boxes) and not len(mirrored):
        return 0.0
    back = mirror_boxes(mirrored, width)
    iou = box_iou(boxes, back)
    worst = 0.0
    for side_probs, other_probs, overlap in (
        (probs, mirrored_probs, iou),
        (mirrored_probs, probs, iou.T),
    ):
        if not len(side_probs):
            continue
        conf = side_probs.max(axis=1)
        if not len(other_probs):
            worst = max(worst, float(conf.max()))
            continue
        match = overlap.argmax(axis=1)
        rows = np.arange(len(side_probs))
        agree = 1.0 - _total_variation(side_probs, other_probs[match])
        consistency = overlap[rows, match] * agree
        worst = max(worst, float((conf * (1.0 - consistency)).max()))
    return float(np.clip(worst, 0.0, 1.0))


def _kept(
    xyxy: npt.ArrayLike, scores: npt.ArrayLike, floor: float
) -> tuple[FloatArray, FloatArray]:
    """The boxes and score rows at or above the floor; ValueError on mismatched shapes."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    probs = np.asarray(scores, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must be (n_boxes, n_classes) with one row per box, got {probs.shape} "
            f"for {boxes.shape[0]} boxes"
        )
    keep = probs.max(axis=1, initial=0.0) >= floor
    return boxes[keep], probs[keep]


def _total_variation(p: FloatArray, q: FloatArray) -> FloatArray:
    """Row-wise total variation distance between score rows, each divided by its sum."""
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    q = q / np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
    return 0.5 * np.abs(p - q).sum(axis=1)
