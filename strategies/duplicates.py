"""Near-duplicate images: candidates from embeddings, verified on the pixels.

Why two steps: an embedding learned to group similar images (the project encoder, a
detector's neck) puts two different scenes of one kind as close as two shots of one scene, so
a distance cut cannot tell them apart (measured on the benchmark's scenes: at best 0.73 F1).
Two shots of one scene differ by a small shift, exposure and noise; their grey thumbnails,
aligned by the best small shift, correlate almost perfectly, while two different scenes do
not. So the embedding's nearest neighbours are only candidates, and a pair is a near-duplicate
when its shift-aligned normalised correlation reaches a threshold (calibrated on copies of
known difference by the caller). Correlation is a whole-picture figure: a small object that
comes or goes between two frames of one camera barely moves it, so a pair must also show no
local change (`worst_block_change`). Groups are the connected components of verified pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from strategies.diversity import connected_groups
from strategies.pool import BoolArray, Float32Array, IntArray, check_embeddings

DEFAULT_NEIGHBOURS = 10  # candidates per image
DEFAULT_MAX_SHIFT = 3  # pixels, each way, on the grey thumbnails
DETAIL_WINDOW = 9  # pixels: lighting smoother than this is not what tells pictures apart
CHANGE_BLOCK = 16  # pixels: the side of the blocks compared one by one (half-overlapping)
_CHUNK = 1024  # pairs per vectorised correlation step


@dataclass(frozen=True)
class DuplicateThresholds:
    """What a verified pair must reach: the aligned correlation of the whole grey pictures
    and of their detail (at least), and the worst block's change (at most)."""

    whole: float
    detail: float
    change: float


def grey_thumbnails(thumbs: npt.NDArray[np.uint8]) -> Float32Array:
    """(n, S, S, 3) uint8 RGB -> (n, S, S) float32 grey in [0, 1]."""
    if thumbs.ndim != 4 or thumbs.shape[3] != 3:
        raise ValueError(f"thumbnails must be (n, S, S, 3), got shape {thumbs.shape}")
    return (thumbs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def detail(greys: Float32Array) -> Float32Array:
    """The pictures less their local mean over DETAIL_WINDOW px: what is left when the
    lighting is taken away. Two different pictures under the same smooth lighting gradient
    correlate as well as two shots of one scene (measured on the test shapes: 0.95); their
    detail does not (0.35)."""
    return (greys - _local_mean(greys, DETAIL_WINDOW)).astype(np.float32)


def _local_mean(images: Float32Array, window: int) -> Float32Array:
    """Box-filtered (n, S, S) images (edges replicated), via summed-area tables."""
    half = window // 2
    padded = np.pad(images, ((0, 0), (half + 1, half), (half + 1, half)), mode="edge")
    table = padded.astype(np.float64).cumsum(axis=1).cumsum(axis=2)
    size = images.shape[1]
    total = (
        table[:, window:, window:]
        - table[:, :-window, window:]
        - table[:, window:, :-window]
        + table[:, :-window, :-window]
    )
    return (total[:, :size, :size] / (window * window)).astype(np.float32)


def candidate_pairs(embeddings: Float32Array, neighbours: int = DEFAULT_NEIGHBOURS) -> IntArray:
    """(P, 2) unique pairs (i < j) where j is among i's `neighbours` nearest or vice versa."""
    x = check_embeddings(embeddings, "embeddings")
    n = x.shape[0]
    k = min(neighbours, n - 1)
    if k < 1:
        return np.zeros((0, 2), dtype=np.int64)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, found = index.search(x, k + 1)
    rows = np.repeat(np.arange(n, dtype=np.int64), k + 1)
    cols = found.reshape(-1).astype(np.int64)
    keep = (cols >= 0) & (rows != cols)
    pairs = np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1)
    return np.unique(pairs, axis=0)


def aligned_correlation(
    greys: Float32Array, pairs: IntArray, max_shift: int = DEFAULT_MAX_SHIFT
) -> npt.NDArray[np.float64]:
    """(P,) for each pair, the best normalised correlation of the two grey thumbnails over
    every shift of up to `max_shift` pixels each way (on the overlap): 1.0 for the same
    picture moved, brighter or darker; noise and different content lower it."""
    out = np.full(pairs.shape[0], -1.0)
    size = greys.shape[1]
    for start in range(0, pairs.shape[0], _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        a, b = greys[chunk[:, 0]], greys[chunk[:, 1]]
        best = out[start : start + _CHUNK]
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                pa = a[:, max(0, dy) : size + min(0, dy), max(0, dx) : size + min(0, dx)]
                pb = b[:, max(0, -dy) : size + min(0, -dy), max(0, -dx) : size + min(0, -dx)]
                pa = pa - pa.mean(axis=(1, 2), keepdims=True)
                pb = pb - pb.mean(axis=(1, 2), keepdims=True)
                num = np.einsum("pij,pij->p", pa, pb, dtype=np.float64)
                den = np.sqrt(
                    np.einsum("pij,pij->p", pa, pa, dtype=np.float64)
                    * np.einsum("pij,pij->p", pb, pb, dtype=np.float64)
                )
                np.maximum(best, num / np.maximum(den, 1e-12), out=best)
    return out


def worst_block_change(
    pictures: Float32Array, pairs: IntArray, max_shift: int = DEFAULT_MAX_SHIFT
) -> npt.NDArray[np.float64]:
    """(P,) for each pair, how much the most changed place differs: each picture is scaled to
    zero mean and unit deviation, cut into half-overlapping CHANGE_BLOCK px blocks (inside a
    `max_shift` border), and each block is matched in the other picture at its best shift of
    up to `max_shift` px (objects drift, cameras shake); the figure is the largest mean
    squared difference of any block, either way. About 0 for the same picture moved; an
    object that came or left makes its block's figure large, however small the object."""
    z = pictures - pictures.mean(axis=(1, 2), keepdims=True)
    z = (z / np.maximum(z.std(axis=(1, 2), keepdims=True), 1e-6)).astype(np.float32)
    size, step = z.shape[1], CHANGE_BLOCK // 2
    inner = size - 2 * max_shift
    if inner < CHANGE_BLOCK:
        raise ValueError(f"pictures of {size} px are too small for {CHANGE_BLOCK} px blocks")
    blocks = (inner - CHANGE_BLOCK) // step + 1
    span = (blocks - 1) * step + CHANGE_BLOCK
    lo = max_shift + (inner - span) // 2  # the blocks' grid, centred
    out = np.zeros(pairs.shape[0])
    for start in range(0, pairs.shape[0], _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        worst = out[start : start + _CHUNK]
        for first, second in ((0, 1), (1, 0)):
            a = z[chunk[:, first], lo : lo + span, lo : lo + span]
            best = np.full((len(chunk), blocks, blocks), np.inf)
            for dy in range(-max_shift, max_shift + 1):
                for dx in range(-max_shift, max_shift + 1):
                    b = z[chunk[:, second], lo + dy : lo + dy + span, lo + dx : lo + dx + span]
                    np.minimum(best, _block_means((a - b) ** 2, blocks, step), out=best)
            np.maximum(worst, best.reshape(len(chunk), -1).max(axis=1), out=worst)
    return out


def _block_means(values: Float32Array, blocks: int, step: int) -> npt.NDArray[np.float64]:
    """(P, blocks, blocks) means of the CHANGE_BLOCK px blocks `step` apart, via summed-area
    tables of (P, span, span) `values`."""
    table = np.pad(values, ((0, 0), (1, 0), (1, 0))).astype(np.float64).cumsum(1).cumsum(2)
    starts = np.arange(blocks) * step
    ends = starts + CHANGE_BLOCK
    total = (
        table[:, ends[:, None], ends[None, :]]
        - table[:, starts[:, None], ends[None, :]]
        - table[:, ends[:, None], starts[None, :]]
        + table[:, starts[:, None], starts[None, :]]
    )
    return total / (CHANGE_BLOCK * CHANGE_BLOCK)


def duplicate_groups(
    embeddings: Float32Array,
    greys: Float32Array,
    thresholds: DuplicateThresholds,
    *,
    neighbours: int = DEFAULT_NEIGHBOURS,
    max_shift: int = DEFAULT_MAX_SHIFT,
) -> IntArray:
    """(n,) group id per image: images linked by verified near-duplicate pairs share the id
    of their smallest member; an image without near-duplicates keeps its own index.

    A candidate pair is verified when the aligned correlation of the whole grey pictures
    reaches `thresholds.whole`, that of their `detail` reaches `thresholds.detail`, and the
    `worst_block_change` of their detail stays within `thresholds.change`.
    """
    n = embeddings.shape[0]
    if greys.shape[0] != n or greys.ndim != 3:
        raise ValueError(f"greys must be (n={n}, S, S), got shape {greys.shape}")
    pairs = candidate_pairs(embeddings, neighbours)
    pairs = pairs[aligned_correlation(greys, pairs, max_shift) >= thresholds.whole]
    fine = detail(greys)
    pairs = pairs[aligned_correlation(fine, pairs, max_shift) >= thresholds.detail]
    verified = pairs[worst_block_change(fine, pairs, max_shift) <= thresholds.change]
    return connected_groups(n, verified)


def demote_duplicate_groups(
    order: IntArray, groups: IntArray, labeled_groups: IntArray | None = None
) -> tuple[IntArray, BoolArray]:
    """Keep the first image of each near-duplicate group in `order`; move the others (and
    every image of a group that holds a labeled image) to the end, in their relative order.

    Args:
        order: (n,) permutation of pool indices.
        groups: (n,) group id per pool index (equal ids: near-duplicates).
        labeled_groups: group ids that hold an already labeled image.

    Returns:
        the new order and (n,) True for the demoted pool indices.
    """
    seen = set() if labeled_groups is None else {int(g) for g in labeled_groups}
    demoted = np.zeros(order.shape[0], dtype=bool)
    for item in order.tolist():
        group = int(groups[item])
        if group in seen:
            demoted[item] = True
        else:
            seen.add(group)
    return np.concatenate([order[~demoted[order]], order[demoted[order]]]), demoted
