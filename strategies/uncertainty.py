"""Box and image uncertainty from full per-class detection scores.

Conventions (whole module):
- A box is a row p of length n_classes with independent sigmoid scores in [0, 1]
  (YOLO heads); rows need not sum to 1. The box's confidence is max(p), its class argmax(p)
  (ties: lowest class id).
- Every function returns HIGHER = more uncertain = label sooner.
- Box measures lie in [0, 1].
- The floor: boxes whose confidence max(p) is below `floor` (default 0.05) are detector noise
  and are ignored by every image-level score.
- "Nothing detected": an image without any box at or above the floor gets `empty_score`
  (default 1.0, the largest box uncertainty) instead of looking certain, because a missed
  object is the costliest error. With `sum` aggregation, DUA or DCUS an image's score can
  exceed 1, so such an image ranks like one maximally uncertain box, not above everything.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from strategies.pool import FloatArray, IntArray

Aggregation = Literal["max", "mean", "sum"]
BoxMeasure = Literal["least_confidence", "margin", "entropy"]
EntropyVariant = Literal["binary", "normalized"]

AGGREGATIONS: tuple[str, ...] = ("max", "mean", "sum")
BOX_MEASURES: tuple[str, ...] = ("least_confidence", "margin", "entropy")
ENTROPY_VARIANTS: tuple[str, ...] = ("binary", "normalized")
DEFAULT_FLOOR = 0.05
DEFAULT_EMPTY_SCORE = 1.0
# PPAL's defaults for the difficulty weights of DCUS.
DCUS_ALPHA = 0.3
DCUS_UPPER = 0.2

_EPS = 1e-12


def _check_scores(scores: FloatArray) -> FloatArray:
    """Return `scores` as (n_boxes, n_classes) float64 or raise ValueError/TypeError."""
    if not isinstance(scores, np.ndarray):
        raise TypeError(f"scores must be a numpy array, got {type(scores).__name__}")
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be 2-D (n_boxes, n_classes>=1), got {scores.shape}")
    return scores.astype(np.float64, copy=False)


def least_confidence(scores: FloatArray) -> FloatArray:
    """1 - max p per box.

    Args:
        scores: (n_boxes, n_classes) class scores in [0, 1].

    Returns:
        (n_boxes,) float64 in [0, 1].
    """
    p = _check_scores(scores)
    return 1.0 - p.max(axis=1)


def margin(scores: FloatArray) -> FloatArray:
    """1 - (p(1) - p(2)) per box, p(1) >= p(2) the two largest class scores.

    A close top-2 gives a high score. With a single class p(2) is taken as 0.

    Args:
        scores: (n_boxes, n_classes) class scores in [0, 1].

    Returns:
        (n_boxes,) float64 in [0, 1].
    """
    p = _check_scores(scores)
    if p.shape[1] == 1:
        return 1.0 - p[:, 0]
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def binary_entropy(s: FloatArray) -> FloatArray:
    """Elementwise binary entropy in bits, -s log2 s - (1-s) log2 (1-s); any shape, in [0, 1]."""
    q = np.clip(np.asarray(s, dtype=np.float64), _EPS, 1.0 - _EPS)
    h = -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))
    return np.clip(h, 0.0, 1.0)


def entropy(scores: FloatArray, variant: EntropyVariant = "binary") -> FloatArray:
    """Box entropy, scaled to [0, 1].

    Variants:
        "binary" (default): mean over classes of the binary entropy (bits) of each sigmoid.
            This is the joint entropy of the independent per-class Bernoulli outputs the
            head actually models, divided by n_classes. It keeps absolute confidence: a box
            whose only score is 0.3 is uncertain. The 1/n_classes scale is shared by every
            box of a model, so rankings are unaffected, but values are small with many
            classes (compare against `empty_score` accordingly).
        "normalized": Shannon entropy of q = p / sum(p), divided by log(n_classes). It only
            measures confusion BETWEEN classes: [0.3, 0.3] and [0.9, 0.9] both score 1 and a
            lone 0.3 scores 0. A box with sum(p) == 0 scores 1. With one class it is always 0.

    Args:
        scores: (n_boxes, n_classes) class scores in [0, 1].
        variant: "binary" or "normalized".

    Returns:
        (n_boxes,) float64 in [0, 1].
    """
    p = _check_scores(scores)
    if variant == "binary":
        return binary_entropy(p).mean(axis=1)
    if variant == "normalized":
        n_classes = p.shape[1]
        if n_classes == 1:
            return np.zeros(p.shape[0], dtype=np.float64)
        total = p.sum(axis=1, keepdims=True)
        q = np.divide(p, total, out=np.full_like(p, 1.0 / n_classes), where=total > 0)
        terms = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
        return np.clip(terms.sum(axis=1) / np.log(n_classes), 0.0, 1.0)
    raise ValueError(f"unknown entropy variant {variant!r}; valid: {', '.join(ENTROPY_VARIANTS)}")


def box_uncertainty(
    scores: FloatArray, measure: BoxMeasure = "entropy", variant: EntropyVariant = "binary"
) -> FloatArray:
    """Dispatch to one box measure by name.

    Args:
        scores: (n_boxes, n_classes) class scores in [0, 1].
        measure: "least_confidence", "margin" or "entropy".
        variant: entropy variant, used only when measure == "entropy".

    Returns:
        (n_boxes,) float64 in [0, 1].
    """
    if measure == "least_confidence":
        return least_confidence(scores)
    if measure == "margin":
        return margin(scores)
    if measure == "entropy":
        return entropy(scores, variant)
    raise ValueError(f"unknown box measure {measure!r}; valid: {', '.join(BOX_MEASURES)}")


def aggregate(
    values: FloatArray,
    image: IntArray,
    n_images: int,
    how: Aggregation = "max",
    empty_score: float = DEFAULT_EMPTY_SCORE,
) -> FloatArray:
    """Reduce per-box values to per-image values.

    Args:
        values: (K,) per-box values.
        image: (K,) int pool index of each box, in [0, n_images).
        n_images: number of images n.
        how: "max", "mean" or "sum" over each image's boxes.
        empty_score: value for images with no box in `image`.

    Returns:
        (n_images,) float64.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; valid: {', '.join(AGGREGATIONS)}")
    values = np.asarray(values, dtype=np.float64)
    image = np.asarray(image, dtype=np.int64)
    if values.shape != image.shape or values.ndim != 1:
        raise ValueError("values and image must both have shape (K,)")
    if image.size and (image.min() < 0 or image.max() >= n_images):
        raise ValueError(f"image ids must lie in [0, {n_images})")
    counts = np.bincount(image, minlength=n_images)
    out: FloatArray
    if how == "max":
        out = np.full(n_images, -np.inf)
        np.maximum.at(out, image, values)
    else:
        out = np.bincount(image, weights=values, minlength=n_images).astype(np.float64)
        if how == "mean":
            out = out / np.maximum(counts, 1)
    out[counts == 0] = empty_score
    return out


def _kept_boxes(
    flat_scores: FloatArray, flat_image: IntArray, floor: float
) -> tuple[FloatArray, IntArray]:
    """Drop boxes whose confidence is below the floor."""
    keep = flat_scores.max(axis=1, initial=0.0) >= floor
    return flat_scores[keep], flat_image[keep]


def image_uncertainty(
    flat_scores: FloatArray,
    flat_image: IntArray,
    n_images: int,
    *,
    measure: BoxMeasure = "entropy",
    how: Aggregation = "max",
    floor: float = DEFAULT_FLOOR,
    empty_score: float = DEFAULT_EMPTY_SCORE,
    variant: EntropyVariant = "binary",
) -> FloatArray:
    """Per-image uncertainty: box measure on boxes >= floor, then aggregated.

    Args:
        flat_scores: (K, n_classes) class scores of all boxes stacked (see `Pool.flat_scores`).
        flat_image: (K,) pool index of each box.
        n_images: number of images n.
        measure, variant: box measure (see `box_uncertainty`).
        how: "max", "mean" or "sum" over kept boxes.
        floor: boxes with max p < floor are ignored.
        empty_score: score of an image with no kept box ("nothing detected").

    Returns:
        (n_images,) float64, higher = more uncertain.
    """
    scores, image = _kept_boxes(flat_scores, flat_image, floor)
    values = box_uncertainty(scores, measure, variant)
    return aggregate(values, image, n_images, how, empty_score)


def dua_weights(class_ap: FloatArray | None, n_classes: int) -> FloatArray:
    """DUA class weights w_c = 1 - (AP_c - min AP) / (max AP - min AP).

    The class with the lowest AP gets weight 1, the best class weight 0. NaN (unknown) AP is
    treated as the hardest class: weight 1. If no AP is known, or max AP == min AP, every
    class gets weight 1 (no class is preferred).

    Args:
        class_ap: (n_classes,) per-class AP in [0, 1] with NaN for unknown, or None.
        n_classes: number of classes.

    Returns:
        (n_classes,) float64 in [0, 1].
    """
    if class_ap is None:
        return np.ones(n_classes, dtype=np.float64)
    ap = np.asarray(class_ap, dtype=np.float64)
    if ap.shape != (n_classes,):
        raise ValueError(f"class_ap must have shape ({n_classes},), got {ap.shape}")
    known = ~np.isnan(ap)
    if not known.any():
        return np.ones(n_classes, dtype=np.float64)
    lo, hi = float(ap[known].min()), float(ap[known].max())
    if hi - lo <= 0.0:
        return np.ones(n_classes, dtype=np.float64)
    filled = np.where(known, ap, lo)
    return 1.0 - (filled - lo) / (hi - lo)


def dua_image_scores(
    flat_scores: FloatArray,
    flat_image: IntArray,
    n_images: int,
    weights: FloatArray,
    *,
    floor: float = DEFAULT_FLOOR,
    empty_score: float = DEFAULT_EMPTY_SCORE,
) -> FloatArray:
    """DUA image score: sum over predicted classes c of w_c * mean(1 - conf of class-c boxes).

    Args:
        flat_scores: (K, n_classes) stacked class scores; flat_image: (K,) pool index per box.
        n_images: number of images n.
        weights: (n_classes,) class weights (see `dua_weights`).
        floor: boxes with conf < floor are ignored.
        empty_score: score of an image with no kept box.

    Returns:
        (n_images,) float64 >= 0.
    """
    scores, image = _kept_boxes(flat_scores, flat_image, floor)
    n_classes = flat_scores.shape[1]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_classes,):
        raise ValueError(f"weights must have shape ({n_classes},), got {w.shape}")
    out = np.full(n_images, float(empty_score))
    if scores.shape[0] == 0:
        return out
    cls = scores.argmax(axis=1)
    u = 1.0 - scores.max(axis=1)
    key = image * n_classes + cls
    groups, inverse = np.unique(key, return_inverse=True)
    mean_u = np.bincount(inverse, weights=u) / np.bincount(inverse)
    group_image = groups // n_classes
    group_class = groups % n_classes
    total = np.bincount(group_image, weights=w[group_class] * mean_u, minlength=n_images)
    has_box = np.bincount(image, minlength=n_images) > 0
    out[has_box] = total[has_box]
    return out


def dcus_weights(
    class_quality: FloatArray | None,
    n_classes: int,
    *,
    alpha: float = DCUS_ALPHA,
    upper: float = DCUS_UPPER,
) -> FloatArray:
    """PPAL difficulty weights w_c = 1 + alpha * upper * ln(1 + g * (1 - Q_c)), g = e^(1/alpha) - 1.

    w_c runs from 1 (Q_c = 1, easy) to 1 + upper (Q_c = 0, hard). NaN (unknown) quality and
    `class_quality=None` are treated as the hardest class, Q_c = 0.

    Args:
        class_quality: (n_classes,) per-class quality in [0, 1] with NaN for unknown, or None.
        n_classes: number of classes.
        alpha: curvature a > 0 (PPAL: 0.3).
        upper: weight upper bound z >= 0 (PPAL: 0.2).

    Returns:
        (n_classes,) float64 in [1, 1 + upper].
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if upper < 0:
        raise ValueError(f"upper must be >= 0, got {upper}")
    q: FloatArray
    if class_quality is None:
        q = np.zeros(n_classes, dtype=np.float64)
    else:
        q = np.asarray(class_quality, dtype=np.float64)
        if q.shape != (n_classes,):
            raise ValueError(f"class_quality must have shape ({n_classes},), got {q.shape}")
        q = np.where(np.isnan(q), 0.0, q)
    g = np.expm1(1.0 / alpha)
    return 1.0 + alpha * upper * np.log1p(g * (1.0 - q))


def dcus_image_scores(
    flat_scores: FloatArray,
    flat_image: IntArray,
    n_images: int,
    weights: FloatArray,
    *,
    floor: float = DEFAULT_FLOOR,
    empty_score: float = DEFAULT_EMPTY_SCORE,
) -> FloatArray:
    """DCUS image score: sum over boxes with s >= floor of w_class * H(s).

    s is the box confidence max(p), class its argmax, H the binary entropy in bits (as in
    PPAL, applied to the predicted class score). PPAL's score threshold is 0.05 = the default
    floor. PPAL gives empty images 0; here they get `empty_score` (see the module docstring).

    Args:
        flat_scores: (K, n_classes) stacked class scores; flat_image: (K,) pool index per box.
        n_images: number of images n.
        weights: (n_classes,) difficulty weights (see `dcus_weights`).
        floor: boxes with s < floor are ignored.
        empty_score: score of an image with no kept box.

    Returns:
        (n_images,) float64 >= 0.
    """
    scores, image = _kept_boxes(flat_scores, flat_image, floor)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (flat_scores.shape[1],):
        raise ValueError(f"weights must have shape ({flat_scores.shape[1]},), got {w.shape}")
    if scores.shape[0] == 0:
        return np.full(n_images, float(empty_score))
    values = w[scores.argmax(axis=1)] * binary_entropy(scores.max(axis=1))
    return aggregate(values, image, n_images, "sum", empty_score)
