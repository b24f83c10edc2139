"""Diversity on image embeddings: k-center greedy (core-set), k-means clusters, near-duplicates.

Distances are Euclidean on the embeddings ("l2") or on L2-normalised embeddings ("cosine";
the Euclidean distance between unit vectors is sqrt(2 - 2 cos), so rankings are the cosine
rankings). Nearest-neighbour, range and k-means work goes through FAISS; FAISS uses OpenMP
threads (set them with `faiss.omp_set_num_threads` in the caller if needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from strategies.pool import BoolArray, Float32Array, FloatArray, IntArray, check_embeddings

Metric = Literal["l2", "cosine"]
METRICS: tuple[str, ...] = ("l2", "cosine")

# Pool items kept fresh on every k-center step; see `kcenter_greedy`.
DEFAULT_SHORTLIST = 2048


def prepare_embeddings(x: Float32Array, metric: Metric = "l2", name: str = "x") -> Float32Array:
    """Validate (n, d) float32 embeddings; return them C-contiguous (unit rows for "cosine").

    Rows of norm 0 stay 0 under "cosine" (distance 1 to every unit vector).

    Raises:
        TypeError: not a float32 numpy array.
        ValueError: not 2-D, non-finite, or unknown metric.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    arr = check_embeddings(x, name)
    if metric == "cosine":
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        arr = np.ascontiguousarray(arr / np.where(norms > 0, norms, 1.0), dtype=np.float32)
    return arr


def nearest_sq_distances(x: Float32Array, reference: Float32Array) -> FloatArray:
    """Squared L2 distance from each row of x to its nearest row of `reference` (FAISS flat).

    Args:
        x: (n, d) float32, C-contiguous.
        reference: (m, d) float32, C-contiguous; m may be 0.

    Returns:
        (n,) float64, +inf everywhere when m == 0. Computed by FAISS as |x|^2 + |y|^2 - 2 x.y
        in float32 (clipped at 0), so very small distances carry absolute error ~1e-6 |x|^2.
    """
    n, d = x.shape
    if reference.shape[0] == 0 or n == 0:
        return np.full(n, np.inf)
    index = faiss.IndexFlatL2(d)
    index.add(reference)
    dist, _ = index.search(x, 1)
    return np.maximum(dist[:, 0].astype(np.float64), 0.0)


def median_neighbour_distance(
    x: Float32Array, *, metric: Metric = "l2", sample: int = 1000
) -> float:
    """The median distance from an item to its nearest other item: the pool's own scale, so a
    near-duplicate threshold can be a fraction of it whatever the embedding.

    Measured on up to `sample` evenly spaced items against the whole pool (deterministic;
    O(sample * n * d)). 0.0 for fewer than two items.
    """
    xs = prepare_embeddings(x, metric, "x")
    n = xs.shape[0]
    if n < 2:
        return 0.0
    probes = np.unique(np.linspace(0, n - 1, min(n, sample)).round().astype(np.int64))
    index = faiss.IndexFlatL2(xs.shape[1])
    index.add(xs)
    dist, found = index.search(xs[probes], 2)
    # the nearest hit is the probe itself unless an exact copy came first: take the other one
    other = np.where(found[:, 0] == probes, dist[:, 1], dist[:, 0])
    return float(np.median(np.sqrt(np.maximum(other, 0.0))))


def central_item(x: Float32Array) -> int:
    """Index of the row nearest to the mean row (lowest index on ties); x is (n, d), n >= 1."""
    centre = x.mean(axis=0, dtype=np.float64).astype(np.float32)[None, :]
    sq = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], 8192):  # chunks: no (n, d) temporary
        diff = x[start : start + 8192] - centre
        sq[start : start + 8192] = np.einsum("ij,ij->i", diff, diff)
    return int(np.argmin(sq))


@dataclass(frozen=True, eq=False)
class KCenterResult:
    """Outcome of `kcenter_greedy` on n pool items.

    Attributes:
        picks: (b,) int64 pool indices in pick order.
        pick_distances: (b,) float64 distance of each pick to its nearest labeled item or
            earlier pick at the moment it was picked (non-increasing; +inf for the first pick
            of a cold start, which had nothing to be far from).
        min_distances: (n,) float64 final distance of every item to its nearest labeled item
            or pick (0 for the picks).
        full_passes: how many times all n items were refreshed (diagnostic; see algorithm).
    """

    picks: IntArray
    pick_distances: FloatArray
    min_distances: FloatArray
    full_passes: int


def kcenter_greedy(
    x: Float32Array,
    batch_size: int,
    labeled: Float32Array | None = None,
    *,
    metric: Metric = "l2",
    shortlist: int = DEFAULT_SHORTLIST,
) -> KCenterResult:
    """Core-set k-center greedy: repeatedly pick the item farthest from labeled + picked.

    The result is the classic greedy (Sener & Savarese 2018): pick t maximises the distance to
    the nearest labeled item or earlier pick, ties to the lowest index. With no labeled items
    the first pick is the item nearest to the pool mean (deterministic, no seed needed).

    Algorithm (exact, lazily evaluated): a running min-distance array holds for every item an
    upper bound of its squared distance to labeled + picked, initialised by one FAISS search
    against the labeled set. Bounds only shrink, so an item whose bound is already below the
    best exact value can never win. A shortlist of the `shortlist` largest bounds is kept
    exact: each pick updates only the shortlist (one (L, d) matrix-vector product). While the
    shortlist's best exact value beats every bound outside the shortlist, it is the true
    argmax. Otherwise all n bounds are brought up to date in one batched FAISS search against
    the picks made since the last full pass, and the shortlist is rebuilt. Worst case this is
    the plain O(n * b * d) running-min algorithm; typically a handful of full passes.

    Args:
        x: (n, d) float32 pool embeddings.
        batch_size: number of picks b (clipped to n), >= 0.
        labeled: (m, d) float32 labeled embeddings, or None / m == 0 for a cold start.
        metric: "l2" or "cosine".
        shortlist: shortlist size L >= 1 (speed only; the picks do not depend on it, up to
            float rounding between the two distance paths).

    Returns:
        KCenterResult with plain (not squared) distances.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if isinstance(shortlist, bool) or not isinstance(shortlist, int) or shortlist < 1:
        raise ValueError(f"shortlist must be an int >= 1, got {shortlist!r}")
    xs = prepare_embeddings(x, metric, "x")
    n, d = xs.shape
    if labeled is None:
        lab: Float32Array = np.zeros((0, d), dtype=np.float32)
    else:
        lab = prepare_embeddings(labeled, metric, "labeled")
        if lab.shape[1] != d:
            raise ValueError(f"labeled must have d={d} columns, got shape {lab.shape}")
    b = min(int(batch_size), n)
    state = _KCenterState(xs, nearest_sq_distances(xs, lab), shortlist)
    picks = np.empty(b, dtype=np.int64)
    pick_sq = np.empty(b, dtype=np.float64)
    for t in range(b):
        if t == 0 and lab.shape[0] == 0:
            item, value = central_item(xs), np.inf
        else:
            item, value = state.argmax()
        picks[t], pick_sq[t] = item, value
        state.take(item)
    state.full_refresh()
    final_sq = np.maximum(state.bound, 0.0)
    final_sq[picks] = 0.0
    return KCenterResult(
        picks=picks,
        pick_distances=np.sqrt(pick_sq),
        min_distances=np.sqrt(final_sq),
        full_passes=state.full_passes,
    )


class _KCenterState:
    """Running squared min-distance bounds with an exact shortlist (see `kcenter_greedy`)."""

    def __init__(self, xs: Float32Array, bound: FloatArray, shortlist: int) -> None:
        self.xs = xs
        self.bound = bound  # (n,) upper bounds; -inf marks picked items
        self.shortlist_size = shortlist
        self.pending: list[int] = []  # picks not yet applied to all n bounds
        self.full_passes = 0
        self.short: IntArray | None = None  # (L,) sorted pool indices, exact bounds
        self.short_x: Float32Array = np.zeros((0, xs.shape[1]), dtype=np.float32)
        self.short_sq_norm = np.zeros(0, dtype=np.float64)
        self.outside_max = -np.inf  # bound of every item outside the shortlist is <= this

    def take(self, item: int) -> None:
        """Record a pick: update the shortlist exactly, defer the rest."""
        self.bound[item] = -np.inf
        self.pending.append(item)
        if self.short is not None:
            c = self.xs[item]
            # einsum: single-threaded SIMD loop; a tiny threaded BLAS gemv per step is slower
            # and fights FAISS's OpenMP threads on small machines.
            dots = np.einsum("ij,j->i", self.short_x, c)
            sq = self.short_sq_norm + float(np.dot(c, c)) - 2.0 * dots.astype(np.float64)
            self.bound[self.short] = np.minimum(self.bound[self.short], np.maximum(sq, 0.0))

    def full_refresh(self) -> None:
        """Apply all pending picks to all n bounds with one batched FAISS search."""
        if self.pending:
            picked = self.xs[np.asarray(self.pending, dtype=np.int64)]
            np.minimum(self.bound, nearest_sq_distances(self.xs, picked), out=self.bound)
            self.bound[np.asarray(self.pending, dtype=np.int64)] = -np.inf
            self.pending.clear()
            self.full_passes += 1

    def argmax(self) -> tuple[int, float]:
        """Exact (index, squared distance) of the farthest unpicked item, lowest index on ties."""
        if self.short is not None:
            values = self.bound[self.short]
            j = int(np.argmax(values))
            if values[j] > self.outside_max:
                return int(self.short[j]), float(values[j])
        self.full_refresh()
        self._rebuild_shortlist()
        item = int(np.argmax(self.bound))
        return item, float(self.bound[item])

    def _rebuild_shortlist(self) -> None:
        n = self.bound.shape[0]
        size = min(self.shortlist_size, n)
        if size < n:
            part = np.argpartition(-self.bound, size)
            self.short = np.sort(part[:size])
            self.outside_max = float(self.bound[part[size]])
        else:
            self.short = np.arange(n, dtype=np.int64)
            self.outside_max = -np.inf
        self.short_x = np.ascontiguousarray(self.xs[self.short])
        self.short_sq_norm = np.einsum("ij,ij->i", self.short_x, self.short_x).astype(np.float64)


def kcenter_ranking(result: KCenterResult) -> tuple[IntArray, FloatArray]:
    """Full label order and finite diversity scores from a k-center result.

    The b picks come first in pick order. The remaining items follow by their final distance
    to labeled + picks, largest first (ties: lowest index); computing the greedy order for all
    n items would cost O(n^2 d), and the first of these is exactly the next greedy pick.
    Scores are the pick distances, then the final distances, so they are non-increasing along
    the order. A cold-start first pick (distance +inf) gets the largest finite score.

    Returns:
        order: (n,) int64 permutation; scores: (n,) float64 finite, per pool index.
    """
    n = result.min_distances.shape[0]
    scores = result.min_distances.copy()
    scores[result.picks] = result.pick_distances
    rest_mask = np.ones(n, dtype=bool)
    rest_mask[result.picks] = False
    rest = np.flatnonzero(rest_mask)
    rest = rest[np.argsort(-scores[rest], kind="stable")]
    order = np.concatenate([result.picks, rest]).astype(np.int64)
    infinite = ~np.isfinite(scores)
    if infinite.any():
        finite = scores[~infinite]
        scores[infinite] = float(finite.max()) if finite.size else 0.0
    return order, scores


def kmeans_clusters(
    x: Float32Array,
    n_clusters: int,
    *,
    seed: int = 0,
    niter: int = 20,
    metric: Metric = "l2",
    max_points_per_centroid: int = 256,
    nredo: int = 1,
) -> IntArray:
    """Cluster ids from seeded FAISS k-means.

    FAISS trains on a seeded subsample of at most `max_points_per_centroid * k` rows, then
    every row is assigned to its nearest centroid. Ids are renumbered 0..k'-1 by first
    appearance in row order (k' <= k when clusters end up empty or rows coincide).

    Args:
        x: (n, d) float32 embeddings.
        n_clusters: requested k >= 1 (clipped to n).
        seed: FAISS k-means seed (same seed, same data, same threads -> same ids).
        niter: k-means iterations.
        metric: "l2" or "cosine" (spherical k-means on unit rows).
        max_points_per_centroid: training subsample size per centroid.
        nredo: k-means runs from different starts; the one of least inertia is kept (more
            runs: less risk of one cluster split in two while two others share a centroid).

    Returns:
        (n,) int64 cluster ids.
    """
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
    if isinstance(niter, bool) or not isinstance(niter, int) or niter < 1:
        raise ValueError(f"niter must be an int >= 1, got {niter!r}")
    xs = prepare_embeddings(x, metric, "x")
    n, d = xs.shape
    k = min(n_clusters, n)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    kmeans = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=int(seed) % (2**31),
        verbose=False,
        spherical=metric == "cosine",
        min_points_per_centroid=1,
        max_points_per_centroid=max_points_per_centroid,
        nredo=nredo,
    )
    kmeans.train(xs)
    _, assign = kmeans.index.search(xs, 1)
    labels = assign[:, 0].astype(np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    renumber = np.empty(first.shape[0], dtype=np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(first.shape[0], dtype=np.int64)
    return renumber[inverse.reshape(-1)]


def _search_slack(*arrays: Float32Array) -> float:
    """Squared-distance margin covering FAISS's float32 |x|^2 + |y|^2 - 2x.y rounding."""
    largest = max((float(np.einsum("ij,ij->i", a, a).max()) for a in arrays if a.size), default=0)
    return 1e-5 * 2.0 * largest + 1e-12


def _exact_distances(a: Float32Array, b: Float32Array) -> FloatArray:
    """Row-wise exact distances |a_i - b_i| in float64; a, b are (k, d)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def near_duplicate_pairs(x: Float32Array, threshold: float, *, metric: Metric = "l2") -> IntArray:
    """All pairs (i, j), i < j, whose distance is <= threshold.

    FAISS range search finds candidates with a small safety margin; each candidate's distance
    is then recomputed exactly, so the cut at `threshold` is exact. Cost O(n^2 d): meant for
    pools up to tens of thousands (strategies use `demote_near_duplicates`, which only scans
    the head of an order).

    Args:
        x: (n, d) float32 embeddings.
        threshold: distance >= 0.
        metric: "l2" or "cosine".

    Returns:
        (P, 2) int64 pairs, sorted lexicographically.
    """
    _check_threshold(threshold)
    xs = prepare_embeddings(x, metric, "x")
    n, d = xs.shape
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    index = faiss.IndexFlatL2(d)
    index.add(xs)
    radius = float(threshold) ** 2 + _search_slack(xs)
    lims, _, found = index.range_search(xs, radius)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(lims).astype(np.int64))
    cols = found.astype(np.int64)
    keep = rows < cols
    rows, cols = rows[keep], cols[keep]
    exact = _exact_distances(xs[rows], xs[cols]) <= threshold
    pairs = np.stack([rows[exact], cols[exact]], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def near_duplicate_groups(x: Float32Array, threshold: float, *, metric: Metric = "l2") -> IntArray:
    """Group id per item: connected components of `near_duplicate_pairs` (single linkage).

    Returns:
        (n,) int64; each group's id is its smallest member index (singletons: their own index).
    """
    pairs = near_duplicate_pairs(x, threshold, metric=metric)
    return connected_groups(x.shape[0], pairs)


def connected_groups(n: int, pairs: IntArray) -> IntArray:
    """Group id per item from (P, 2) linked pairs: connected components (single linkage).

    Returns:
        (n,) int64; each group's id is its smallest member index (singletons: their own index).
    """
    parent = np.arange(n, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for i, j in pairs:
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def demote_near_duplicates(
    order: IntArray,
    x: Float32Array,
    threshold: float,
    *,
    labeled: Float32Array | None = None,
    keep: int | None = None,
    metric: Metric = "l2",
) -> tuple[IntArray, BoolArray]:
    """Move near-duplicates of labeled items and of earlier kept items to the end of `order`.

    Walking `order` from the front, an item is demoted when it lies within `threshold` of
    any labeled item, or of an item kept earlier in the walk. The walk stops once `keep`
    items are kept (None: walk everything, O(n * kept * d)); items after that point are
    checked against the labeled set only. Result: kept items, then the unwalked rest, then
    the demoted items, each part in its original relative order.

    Args:
        order: (n,) int64 permutation of range(n).
        x: (n, d) float32 pool embeddings (indexed by pool index).
        threshold: distance >= 0 (exact, float64 check).
        labeled: (m, d) float32 labeled embeddings or None.
        keep: number of items to keep in the walk, or None for all.
        metric: "l2" or "cosine".

    Returns:
        new order (n,) int64, and demoted (n,) bool per pool index.
    """
    _check_threshold(threshold)
    xs = prepare_embeddings(x, metric, "x")
    n, d = xs.shape
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError("order must be a permutation of range(n)")
    demoted = np.zeros(n, dtype=bool)
    if labeled is not None and labeled.shape[0] > 0:
        lab = prepare_embeddings(labeled, metric, "labeled")
        if lab.shape[1] != d:
            raise ValueError(f"labeled must have d={d} columns, got shape {lab.shape}")
        demoted |= _near_labeled(xs, lab, threshold)
    limit = n if keep is None else max(0, min(int(keep), n))
    kept = np.empty((limit, d), dtype=np.float32)
    n_kept = 0
    walked = 0
    for item in order:
        if n_kept >= limit:
            break
        walked += 1
        if demoted[item]:
            continue
        v = xs[item]
        if n_kept:
            diff = kept[:n_kept] - v
            if float(np.einsum("ij,ij->i", diff, diff).min()) <= threshold * threshold:
                demoted[item] = True
                continue
        kept[n_kept] = v
        n_kept += 1
    head, tail = order[:walked], order[walked:]
    new_order = np.concatenate(
        [head[~demoted[head]], tail[~demoted[tail]], order[demoted[order]]]
    ).astype(np.int64)
    return new_order, demoted


def _near_labeled(xs: Float32Array, lab: Float32Array, threshold: float) -> BoolArray:
    """(n,) True where an item lies within `threshold` of some labeled item (exact check)."""
    radius = float(threshold) ** 2 + _search_slack(xs, lab)
    index = faiss.IndexFlatL2(xs.shape[1])
    index.add(lab)
    lims, _, found = index.range_search(xs, radius)
    rows = np.repeat(np.arange(xs.shape[0], dtype=np.int64), np.diff(lims).astype(np.int64))
    cols = found.astype(np.int64)
    close = _exact_distances(xs[rows], lab[cols]) <= threshold
    out = np.zeros(xs.shape[0], dtype=bool)
    out[rows[close]] = True
    return out


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
