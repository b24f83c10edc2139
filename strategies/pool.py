"""Input and output containers shared by every strategy.

`Pool` holds what a strategy may look at for the unlabeled images; `Selection` is what every
strategy returns. Both are frozen and validated on construction, so strategies can trust them.

Score direction, once for the whole package: HIGHER score = label SOONER.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def check_embeddings(x: object, name: str, dim: int | None = None) -> Float32Array:
    """Validate an embedding matrix and return it as a C-contiguous float32 array.

    Args:
        x: (n, d) float32 array; n may be 0.
        name: argument name used in error messages.
        dim: required d, or None to accept any d >= 1.

    Raises:
        TypeError: `x` is not a numpy array or not float32.
        ValueError: wrong number of dimensions, wrong d, or non-finite values.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have d={dim} columns, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def check_class_metric(values: object, name: str, n_classes: int) -> FloatArray:
    """Validate a per-class metric (AP, quality) indexed by class id.

    Args:
        values: (n_classes,) array-like of floats in [0, 1]; NaN marks a class without a
            measurement (the weighting functions treat NaN as the hardest class).
        name: argument name used in error messages.
        n_classes: required length.

    Raises:
        TypeError: not numeric.
        ValueError: wrong shape, infinite values, or values outside [0, 1].
    """
    arr = np.asarray(values)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.shape[0] != n_classes:
        raise ValueError(f"{name} must have shape ({n_classes},), got {arr.shape}")
    known = arr[~np.isnan(arr)]
    if np.isinf(known).any() or (known < 0).any() or (known > 1).any():
        raise ValueError(f"{name} values must lie in [0, 1] (NaN allowed for unknown)")
    return arr


@dataclass(frozen=True, eq=False)
class Pool:
    """Everything a strategy may use about the unlabeled pool (n images).

    Attributes:
        box_scores: n arrays, one per image, each (n_boxes_i, n_classes) with the detector's
            full per-class scores in [0, 1] for every predicted box. YOLO heads use independent
            sigmoids, so a row need not sum to 1. n_boxes_i may be 0; n_classes is shared.
        embeddings: (n, d) float32 image embeddings, same order as `box_scores`.
        labeled_embeddings: (m, d) float32 embeddings of already-labeled images; m may be 0.
            None means m = 0.
        class_ap: optional (n_classes,) per-class AP on validation, NaN where unknown (DUA).
        class_quality: optional (n_classes,) per-class quality Q_c in [0, 1], NaN where unknown
            (PPAL's DCUS; Q_c = mean of p^0.6 * IoU^0.4 over matched validation boxes).
        split_keys: optional (n,) stable random keys in [0, 1), one per image (a hash of its
            task id): the images below a strategy's `audit_share` form the audit slice, served
            in key order (see `Strategy`).
        seconds: optional (n,) predicted annotator seconds per image, > 0 (the backend's cost
            model applied to the model's boxes); cost-aware strategies divide by it.
        flip_disagreement: optional (n,) in [0, 1], how much the detections change when the
            image is mirrored (`strategies.consistency.flip_disagreement`); score strategies
            with a `flip` weight blend it into their order.
        duplicate_groups: optional (n,) int64 near-duplicate group per image
            (`strategies.duplicates.duplicate_groups`, equal ids: near-duplicates); every
            strategy then keeps the first image of each group and moves the others to the end.
        labeled_groups: optional group ids (same numbering) that hold a labeled image: their
            unlabeled members all go to the end.

    Derived (read-only) attributes, computed once on construction:
        flat_scores: (K, n_classes) float64, every box of every image stacked in image order.
        flat_image: (K,) int64, the pool index of each stacked box (non-decreasing).
        n_classes: number of class columns (0 only for an empty pool).

    Raises:
        TypeError / ValueError on construction when shapes, dtypes or values are wrong.
    """

    box_scores: Sequence[npt.NDArray[np.floating]]
    embeddings: Float32Array
    labeled_embeddings: Float32Array | None = None
    class_ap: FloatArray | None = None
    class_quality: FloatArray | None = None
    split_keys: FloatArray | None = None
    seconds: FloatArray | None = None
    flip_disagreement: FloatArray | None = None
    duplicate_groups: IntArray | None = None
    labeled_groups: IntArray | None = None
    flat_scores: FloatArray = field(init=False, repr=False)
    flat_image: IntArray = field(init=False, repr=False)
    n_classes: int = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.box_scores, np.ndarray) or not isinstance(self.box_scores, Sequence):
            raise TypeError("box_scores must be a list or tuple of (n_boxes, n_classes) arrays")
        emb = check_embeddings(self.embeddings, "embeddings")
        n, d = emb.shape
        if len(self.box_scores) != n:
            raise ValueError(
                f"box_scores has {len(self.box_scores)} images but embeddings has {n} rows"
            )
        if self.labeled_embeddings is None:
            labeled: Float32Array = np.zeros((0, d), dtype=np.float32)
        else:
            labeled = check_embeddings(self.labeled_embeddings, "labeled_embeddings", dim=d)
        flat, image, n_classes = _stack_box_scores(self.box_scores)
        object.__setattr__(self, "box_scores", tuple(self.box_scores))
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "labeled_embeddings", labeled)
        object.__setattr__(self, "flat_scores", flat)
        object.__setattr__(self, "flat_image", image)
        object.__setattr__(self, "n_classes", 0 if n_classes is None else n_classes)
        for name in ("class_ap", "class_quality"):
            value = getattr(self, name)
            if value is not None:
                if n_classes is None:
                    raise ValueError(f"{name} given but the pool has no images to infer n_classes")
                object.__setattr__(self, name, check_class_metric(value, name, n_classes))
        if self.split_keys is not None:
            keys = _per_image(self.split_keys, "split_keys", n)
            if (keys < 0).any() or (keys >= 1).any():
                raise ValueError("split_keys must lie in [0, 1)")
            object.__setattr__(self, "split_keys", keys)
        if self.seconds is not None:
            seconds = _per_image(self.seconds, "seconds", n)
            if (seconds <= 0).any():
                raise ValueError("seconds must be > 0")
            object.__setattr__(self, "seconds", seconds)
        if self.flip_disagreement is not None:
            flip = _per_image(self.flip_disagreement, "flip_disagreement", n)
            if (flip < 0).any() or (flip > 1).any():
                raise ValueError("flip_disagreement must lie in [0, 1]")
            object.__setattr__(self, "flip_disagreement", flip)
        for name, shape in (("duplicate_groups", (n,)), ("labeled_groups", None)):
            value = getattr(self, name)
            if value is not None:
                ids = np.asarray(value)
                if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 1:
                    raise ValueError(f"{name} must be a 1-D integer array")
                if shape is not None and ids.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {ids.shape}")
                object.__setattr__(self, name, ids.astype(np.int64))

    @property
    def n(self) -> int:
        """Number of pool images."""
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        return int(self.embeddings.shape[1])

    @property
    def labeled(self) -> Float32Array:
        """(m, d) float32 labeled embeddings (m may be 0); never None."""
        if self.labeled_embeddings is None:  # unreachable after __post_init__
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.labeled_embeddings

    def subset(self, keep: BoolArray) -> Pool:
        """The pool of the images where `keep` is True (labeled images and class figures kept)."""
        index = np.flatnonzero(keep)
        return Pool(
            box_scores=[self.box_scores[i] for i in index],
            embeddings=self.embeddings[index],
            labeled_embeddings=self.labeled,
            class_ap=self.class_ap,
            class_quality=self.class_quality,
            split_keys=None if self.split_keys is None else self.split_keys[index],
            seconds=None if self.seconds is None else self.seconds[index],
            flip_disagreement=(
                None if self.flip_disagreement is None else self.flip_disagreement[index]
            ),
            duplicate_groups=(
                None if self.duplicate_groups is None else self.duplicate_groups[index]
            ),
            labeled_groups=self.labeled_groups,
        )

    @property
    def n_boxes(self) -> IntArray:
        """(n,) int64 number of boxes per image."""
        return np.bincount(self.flat_image, minlength=self.n).astype(np.int64)


def _per_image(values: object, name: str, n: int) -> FloatArray:
    """A finite (n,) float64 array, one value per pool image, or ValueError."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _stack_box_scores(
    box_scores: Sequence[object],
) -> tuple[FloatArray, IntArray, int | None]:
    """Stack per-image (n_boxes_i, C) matrices into one (K, C) float64 matrix plus image ids."""
    n_classes: int | None = None
    arrays: list[FloatArray] = []
    counts = np.zeros(len(box_scores), dtype=np.int64)
    for i, item in enumerate(box_scores):
        if not isinstance(item, np.ndarray):
            raise TypeError(f"box_scores[{i}] must be a numpy array, got {type(item).__name__}")
        if not (np.issubdtype(item.dtype, np.floating) or np.issubdtype(item.dtype, np.integer)):
            raise TypeError(f"box_scores[{i}] must be numeric, got dtype {item.dtype}")
        if item.ndim != 2:
            raise ValueError(
                f"box_scores[{i}] must be 2-D (n_boxes, n_classes), got shape {item.shape}"
            )
        if n_classes is None:
            n_classes = int(item.shape[1])
            if n_classes < 1:
                raise ValueError("box_scores matrices need at least one class column")
        elif item.shape[1] != n_classes:
            raise ValueError(f"box_scores[{i}] has {item.shape[1]} classes, expected {n_classes}")
        counts[i] = item.shape[0]
        arrays.append(item.astype(np.float64, copy=False))
    width = 1 if n_classes is None else n_classes
    flat = np.concatenate(arrays) if arrays else np.zeros((0, width), dtype=np.float64)
    if not np.isfinite(flat).all():
        raise ValueError("box_scores contain NaN or infinite values")
    if (flat < 0).any() or (flat > 1).any():
        raise ValueError("box_scores values must lie in [0, 1]")
    image = np.repeat(np.arange(len(box_scores), dtype=np.int64), counts)
    return np.ascontiguousarray(flat), image, n_classes


@dataclass(frozen=True, eq=False)
class Selection:
    """What every strategy returns for a pool of n images.

    Attributes:
        order: (n,) int64 permutation of ALL pool indices, label-first first. The first
            `batch_size` entries are the chosen batch.
        scores: (n,) float64 finite, per pool index, higher = label sooner; non-increasing
            along `order` (``scores[order]`` is sorted descending).
        clusters: (n,) int64 cluster id per pool index (faiss k-means on the embeddings,
            ids 0..k-1 numbered by first appearance in pool order).
        batch_size: number of chosen items (min of the request and n).
        strategy: registry name of the strategy that produced it.
        details: optional named (n,) float64 component scores (e.g. "uncertainty",
            "diversity", "near_duplicate"), per pool index, for inspection only.

    Raises:
        ValueError on construction if the invariants above do not hold.
    """

    order: IntArray
    scores: FloatArray
    clusters: IntArray
    batch_size: int
    strategy: str
    details: Mapping[str, FloatArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.order.shape[0]
        if self.order.ndim != 1 or self.scores.shape != (n,) or self.clusters.shape != (n,):
            raise ValueError("order, scores and clusters must all have shape (n,)")
        if not np.array_equal(np.sort(self.order), np.arange(n)):
            raise ValueError("order must be a permutation of range(n)")
        if not np.isfinite(self.scores).all():
            raise ValueError("scores must be finite")
        if not 0 <= self.batch_size <= n:
            raise ValueError(f"batch_size must be in [0, {n}], got {self.batch_size}")
        for name, values in self.details.items():
            if values.shape != (n,):
                raise ValueError(f"details[{name!r}] must have shape ({n},)")

    @property
    def batch(self) -> IntArray:
        """(batch_size,) int64 pool indices of the chosen batch, in label order."""
        return self.order[: self.batch_size]

    @property
    def ranks(self) -> IntArray:
        """(n,) int64 position of each pool index in `order` (0 = label first)."""
        ranks = np.empty_like(self.order)
        ranks[self.order] = np.arange(self.order.shape[0], dtype=np.int64)
        return ranks
