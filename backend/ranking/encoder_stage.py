"""The encoder stage of a ranking: every task's thumbnail, the project encoder (trained when
the project has none or has grown, `backend.encoder.store`), its embeddings in a FAISS index
beside the detector's, and the near-duplicate groups over all tasks, labeled ones included.

Why in the ranking: a ranking is the one job that sees every task at once, and it already
runs in the background; the encoder is what the first ranking of a project without a trained
model picks by (`job.select`), and the groups are what keeps near-duplicates out of every
batch from day one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from backend.config import Settings
from backend.encoder.contrastive import U8Array, embed
from backend.encoder.store import MIN_IMAGES, is_stale, live_encoder, train_version
from backend.encoder.thumbnails import ThumbnailCache, thumbnail
from backend.labelstudio.images import ImageError, ImageLoader
from backend.ranking.embedding_index import EmbeddingIndex
from strategies import duplicate_groups, grey_thumbnails

logger = logging.getLogger(__name__)

_LOADERS = 4  # images read at once for new thumbnails


@dataclass(frozen=True)
class EncodedTasks:
    """The encoder's view of the project's tasks (those whose image could be read)."""

    version: str
    index: EmbeddingIndex  # the encoder's embeddings by task id
    groups: Mapping[int, int]  # task id -> near-duplicate group (its smallest task id)

    def group_of(self, task_id: int) -> int:
        """The task's group; a task without a thumbnail is its own group."""
        return self.groups.get(task_id, task_id)


def encode_tasks(
    settings: Settings,
    project_id: int,
    tasks: Sequence[tuple[int, object]],
    images: ImageLoader,
) -> EncodedTasks | None:
    """The encoder stage over `tasks` (task id, image reference); None when the encoder is
    off (ENCODER_TRAIN_SECONDS=0) or fewer than MIN_IMAGES images could be read."""
    if settings.encoder_train_seconds <= 0:
        return None
    started = time.perf_counter()
    paths = settings.paths.project(project_id)
    thumbs = task_thumbnails(ThumbnailCache(paths.thumbnails), tasks, images)
    if len(thumbs) < MIN_IMAGES:
        logger.info("project=%s: %d readable images, no encoder", project_id, len(thumbs))
        return None
    ids = np.array(sorted(thumbs), dtype=np.int64)
    stacked = np.stack([thumbs[int(i)] for i in ids])
    version = live_encoder(paths.encoder)
    trained = version is None or is_stale(version, len(ids))
    if version is None or trained:
        version = train_version(paths.encoder, stacked, seconds=settings.encoder_train_seconds)
    index = EmbeddingIndex(version.index_path(paths.encoder))
    if trained:
        index.remove(index.ids())
    index.remove(np.setdiff1d(index.ids(), ids))
    missing = ~index.contains(ids)
    if missing.any():
        index.upsert(ids[missing], embed(version.encoder, stacked[missing]))
    index.save()
    groups = duplicate_groups(
        index.get(ids), grey_thumbnails(stacked), version.duplicate_thresholds
    )
    logger.info(
        "project=%s encoder %s: %d images, %d in near-duplicate groups, %.1fs",
        project_id,
        version.name,
        len(ids),
        int((np.bincount(groups)[groups] > 1).sum()),
        time.perf_counter() - started,
    )
    return EncodedTasks(
        version=version.name,
        index=index,
        groups={int(t): int(ids[g]) for t, g in zip(ids, groups, strict=True)},
    )


def task_thumbnails(
    cache: ThumbnailCache, tasks: Sequence[tuple[int, object]], images: ImageLoader
) -> dict[int, U8Array]:
    """Thumbnails of the tasks whose image can be read: cached ones, the rest loaded (and
    cached). A task whose image fails is left out (the detect stage reports it)."""
    refs = {task_id: ref for task_id, ref in tasks if isinstance(ref, str)}
    cache.retain(refs)
    out: dict[int, U8Array] = {}
    missing: list[int] = []
    for task_id, ref in refs.items():
        cached = cache.get(task_id, ref)
        if cached is None:
            missing.append(task_id)
        else:
            out[task_id] = cached

    def load(task_id: int) -> U8Array | None:
        try:
            return thumbnail(images.load(refs[task_id]).pixels)
        except ImageError:
            return None

    with ThreadPoolExecutor(_LOADERS, thread_name_prefix="thumbnail") as loaders:
        for task_id, thumb in zip(missing, loaders.map(load, missing), strict=True):
            if thumb is not None:
                cache.put(task_id, refs[task_id], thumb)
                out[task_id] = thumb
    cache.save()
    return out
