"""The cold start, on the product's code: what a new project's own encoder makes of its pool
before any project model exists.

`encode_pool` does what a ranking does for a project without an encoder: thumbnails of every
image, an encoder trained on them within a time budget with its calibrated near-duplicate
threshold (`backend.encoder`), the pool's embeddings, and its near-duplicate groups
(`strategies.duplicate_groups`). `typiclust_batch` picks a first batch from embeddings alone,
as the queue must before a project's first model (no boxes to score).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.encoder.contrastive import embed
from backend.encoder.store import train_version
from backend.encoder.thumbnails import thumbnail
from backend.labelstudio.images import LoadedImage
from benchmarks.label_efficiency.metrics import linked_pairs, pair_precision_recall
from strategies import Pool, duplicate_groups, get_strategy, grey_thumbnails
from strategies.pool import Float32Array, IntArray

COLDSTART_STRATEGY = "typiclust"  # the product's cold-start picks


@dataclass(frozen=True)
class PoolEncoding:
    """A pool as the project's encoder sees it."""

    embeddings: Float32Array  # (n, EMBED_DIM), L2-normalised
    groups: IntArray  # (n,) near-duplicate group ids
    meta: dict[str, Any]  # the encoder version's: its training report and threshold
    images_per_s: float  # embedding throughput

    def record(self, truth: IntArray) -> dict[str, dict[str, Any]]:
        """The groups against the known ones (`truth`, (n,) group ids), and the encoder's cost."""
        precision, recall = pair_precision_recall(self.groups, truth)
        return {
            "near_duplicates": {
                "precision": precision,
                "recall": recall,
                "true_pairs": linked_pairs(truth),
                "found_pairs": linked_pairs(self.groups),
                "thresholds": dict(self.meta["duplicate_thresholds"]),
            },
            "encoder": {
                "train_s": self.meta["seconds"],
                "steps": self.meta["steps"],
                "epochs": self.meta["epochs"],
                "images_per_s": self.images_per_s,
            },
        }


def encode_pool(
    images: Sequence[LoadedImage], folder: Path, seconds: float, seed: int
) -> PoolEncoding:
    """Train the product's encoder on the pool's thumbnails within `seconds` (stored under
    `folder`, as a project's), embed the pool and group its near-duplicates."""
    thumbs = np.stack([thumbnail(image.pixels, bgr=True) for image in images])
    version = train_version(folder, thumbs, seconds=seconds, seed=seed)
    started = time.perf_counter()
    embeddings = embed(version.encoder, thumbs)
    images_per_s = len(thumbs) / (time.perf_counter() - started)
    groups = duplicate_groups(embeddings, grey_thumbnails(thumbs), version.duplicate_thresholds)
    return PoolEncoding(embeddings, groups, dict(version.meta), images_per_s)


def typiclust_batch(embeddings: Float32Array, n_classes: int, size: int, seed: int) -> list[int]:
    """The first `size` images the product's cold-start strategy picks from `embeddings`
    ((n, d) float32) alone: a pool whose images have no boxes yet."""
    pool = Pool(
        box_scores=[np.zeros((0, n_classes))] * embeddings.shape[0],
        embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
    )
    chosen = get_strategy(COLDSTART_STRATEGY, seed=seed).select(pool, size)
    return [int(i) for i in chosen.batch]
