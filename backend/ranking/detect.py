"""The ranking's detect stage: a detection record and an embedding for every task, from the
stores of the model version (`DetectionCache`, `EmbeddingIndex`) or from the detector.

Unlabeled tasks need their boxes (uncertainty, pre-annotations) and embeddings, labeled tasks
their embeddings (diversity keeps away from them). Both stores are per model version and
survive between rankings, so re-ranking with the same model runs the detector only on new or
changed tasks; both are saved after every run, also a stopped one. When the queue blends in
flip disagreement (`al_flip`), each image is also detected mirrored and the record keeps the
disagreement; records cached without it are detected again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from backend.config import Settings
from backend.errors import ImageError
from backend.labelstudio.images import ImageLoader, LoadedImage
from backend.models.detector import Detector
from backend.ranking.detection_cache import DetectionCache, ImageRecord
from backend.ranking.embedding_index import EmbeddingIndex
from backend.ranking.progress import RankRun
from strategies.consistency import flip_disagreement

logger = logging.getLogger(__name__)

LOAD_WORKERS = 4
_LOG_EVERY_S = 10.0

TaskImage = tuple[int, object]  # (task id, the image reference in its data, unvalidated)


@dataclass(frozen=True)
class Detections:
    """The detect stage's answer: a record per task whose image could be read."""

    records: Mapping[int, ImageRecord]
    failed: Mapping[int, str]  # task id -> why its image could not be loaded
    n_predicted: int  # images that went through the detector in this run


def open_stores(
    settings: Settings, run: RankRun, names: Sequence[str], task_ids: Sequence[int]
) -> tuple[EmbeddingIndex, DetectionCache]:
    """The embedding index and detection cache of the run's model version (other versions'
    files are deleted), holding only tasks of `task_ids`: the project's tasks now."""
    project_id, version = run.project_id, run.model_version
    index = EmbeddingIndex.open(settings.model_dir, project_id, version)
    signature = detection_signature(settings, version, names)
    cache = DetectionCache.open(settings.model_dir, project_id, version, signature)
    cache.retain(set(task_ids))
    index.remove(np.setdiff1d(index.ids(), np.array(task_ids, dtype=np.int64)))
    return index, cache


def detection_signature(
    settings: Settings, model_version: str, names: Sequence[str]
) -> dict[str, object]:
    """What a detection record depends on besides the image: records made under another
    signature are never mixed with these."""
    return {
        "model_version": model_version,
        "image_size": settings.image_size,
        "detect_conf_floor": settings.detect_conf_floor,
        "classes": list(names),
    }


def split_cached(
    tasks: Sequence[TaskImage],
    index: EmbeddingIndex,
    cache: DetectionCache,
    flip_tasks: Collection[int] = frozenset(),
) -> tuple[dict[int, ImageRecord], list[TaskImage]]:
    """The tasks' records the stores hold (same image, an embedding, the flip disagreement
    where needed), and the tasks the detector must see."""
    records: dict[int, ImageRecord] = {}
    todo: list[TaskImage] = []
    for task_id, ref in tasks:
        cached = cache.get(task_id, ref) if isinstance(ref, str) else None
        if (
            cached is not None
            and task_id in index
            and not (task_id in flip_tasks and np.isnan(cached.flip_disagreement))
        ):
            records[task_id] = cached
        else:
            todo.append((task_id, ref))
    return records, todo


def detect(
    run: RankRun,
    tasks: Sequence[TaskImage],
    *,
    detector: Detector,
    images: ImageLoader,
    index: EmbeddingIndex,
    cache: DetectionCache,
    chunk: int,
    image_field: str,
    flip_tasks: Collection[int] = frozenset(),
) -> Detections:
    """Detections for every task, from the stores or the detector, `chunk` images at a time
    (loaded by LOAD_WORKERS threads one chunk ahead); reports "predict" progress after each
    chunk. `image_field` names the data field in the error of a task without one; the tasks
    of `flip_tasks` (those the queue ranks, when it blends flip disagreement in) need their
    record's flip disagreement too."""
    records, todo = split_cached(tasks, index, cache, flip_tasks)
    failed: dict[int, str] = {}
    if not todo:
        return Detections(records, failed, 0)
    load = functools.partial(_load_image, images, image_field)
    n_classes = len(detector.names)
    started = last_log = time.perf_counter()
    done = 0
    try:
        with ThreadPoolExecutor(LOAD_WORKERS, thread_name_prefix="rank-load") as loaders:
            pending = [loaders.submit(load, ref) for _, ref in todo[:chunk]]
            for start in range(0, len(todo), chunk):
                batch = todo[start : start + chunk]
                loaded = [f.result() for f in pending]
                upcoming = todo[start + chunk : start + 2 * chunk]
                pending = [loaders.submit(load, ref) for _, ref in upcoming]
                ok: list[tuple[TaskImage, LoadedImage]] = []
                for task, image in zip(batch, loaded, strict=True):
                    if isinstance(image, LoadedImage):
                        ok.append((task, image))
                    else:
                        failed[task[0]] = image
                found = detector.predict([image.pixels for _, image in ok]) if ok else []
                fresh = {
                    task_id: ImageRecord.from_detections(str(ref), image, detections, n_classes)
                    for ((task_id, ref), image), detections in zip(ok, found, strict=True)
                }
                mirrored = [(task, image) for task, image in ok if task[0] in flip_tasks]
                if mirrored:
                    plain = [fresh[task_id] for (task_id, _), _ in mirrored]
                    figures = flip_disagreements(detector, [i for _, i in mirrored], plain)
                    for ((task_id, _), _), figure in zip(mirrored, figures, strict=True):
                        fresh[task_id] = replace(fresh[task_id], flip_disagreement=figure)
                for task_id, record in fresh.items():
                    cache.put(task_id, record)
                    records[task_id] = record
                if ok:
                    index.upsert(
                        [task_id for (task_id, _), _ in ok],
                        np.stack([d.embedding for d in found]).astype(np.float32),
                    )
                done += len(batch)
                now = time.perf_counter()
                report = run.report("predict", done, len(todo), now - started)
                if now - last_log >= _LOG_EVERY_S or done == len(todo):
                    last_log = now
                    logger.info(
                        "project=%s model_version=%s predicted %d/%d tasks "
                        "(%.1f tasks/s, ETA %.0fs)",
                        run.project_id,
                        run.model_version,
                        done,
                        len(todo),
                        report.rate,
                        report.eta_s or 0.0,
                    )
                run.notify(report)
            for future in pending:
                future.cancel()
    finally:
        index.save()
        cache.save()
    if failed:
        logger.warning(
            "project=%s model_version=%s %d task image(s) could not be loaded, e.g. task %s: %s",
            run.project_id,
            run.model_version,
            len(failed),
            next(iter(failed)),
            next(iter(failed.values())),
        )
    return Detections(records, failed, len(todo) - len(failed))


def flip_disagreements(
    detector: Detector, images: Sequence[LoadedImage], plain: Sequence[ImageRecord]
) -> list[float]:
    """Each image's flip disagreement: `plain` (the detector's answer on `images`) against
    its answer on the horizontally mirrored images."""
    n_classes = len(detector.names)
    mirrored = detector.predict([np.ascontiguousarray(image.pixels[:, ::-1]) for image in images])
    out = []
    for image, a, flipped in zip(images, plain, mirrored, strict=True):
        b = ImageRecord.from_detections("", image, flipped, n_classes)
        width = image.pixels.shape[1]
        out.append(flip_disagreement(a.xyxy, a.class_scores, b.xyxy, b.class_scores, width))
    return out


def _load_image(images: ImageLoader, image_field: str, ref: object) -> LoadedImage | str:
    """The task's image, or the reason it failed (never raises ImageError)."""
    try:
        if ref is None:
            raise ImageError(f"task data has no {image_field!r} field")
        return images.load(ref)
    except ImageError as exc:
        return str(exc)
