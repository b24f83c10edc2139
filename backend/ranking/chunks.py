"""The detect stage shared with RQ workers: with REDIS_URL, a ranking with many tasks to detect
splits them into chunks that idle `ls-active-yolo worker`s take too, while the ranking works
through them itself. The results are merged into the model version's detection cache and
embedding index, and the selection then runs once, in the ranking.

Coordination goes through MODEL_DIR, which every process shares; Redis only carries the jobs
that point workers at a chunk (`ChunkQueue`):

    projects/<id>/detect-chunks/<token>/plan.json   the model, the detection signature, the
                                                    image field and the chunk count
    <k>.json        the chunk's tasks [[task id, image ref]] and those needing flip figures
    <k>.claim       created exclusively by whoever takes the chunk; touched after every
                    detector batch
    <k>.detections.npz, <k>.faiss, then <k>.done    its records, embeddings, failures

The ranking never waits on the queue: it does any chunk nobody has claimed, so a ranking in
the only worker cannot deadlock on its own chunks, and with no idle worker the pass costs what
it did. A claim not touched for CLAIM_STALE_S (its holder died) is taken over; a chunk done
twice is harmless (results are written atomically, and equal). Only a model with weights is
shared: a random init differs from process to process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from backend.config import Settings
from backend.files import atomic_write
from backend.labelstudio.images import ImageLoader
from backend.models.detector import Detector, DetectorPool, ModelSource
from backend.ranking.detect import (
    Detections,
    TaskImage,
    detect,
    detection_signature,
    split_cached,
)
from backend.ranking.detection_cache import DetectionCache
from backend.ranking.embedding_index import EmbeddingIndex
from backend.ranking.progress import RankProgress, RankRun

logger = logging.getLogger(__name__)

CHUNK_TASKS = 256  # tasks per chunk; fewer than two chunks' worth are detected locally
CLAIM_STALE_S = 120.0  # a claim untouched this long is taken over
_POLL_S = 0.5


class ChunkQueue(Protocol):
    """Where a ranking announces its chunks to workers (best effort: never raises)."""

    def submit(self, project_id: int, token: str, chunks: int) -> None: ...


@dataclass(frozen=True)
class ChunkPlan:
    """One ranking's shared detect pass: a folder under the project's detect-chunks."""

    folder: Path

    @classmethod
    def create(
        cls,
        settings: Settings,
        project_id: int,
        source: ModelSource,
        signature: dict[str, object],
        image_field: str,
        tasks: Sequence[TaskImage],
        flip_tasks: Collection[int],
        size: int,
        batch: int,
    ) -> ChunkPlan:
        """Write the plan and its chunks, after removing every earlier plan of the project
        (the caller holds the project's ranking lock, so they are leftovers)."""
        root = settings.paths.project(project_id).detect_chunks
        shutil.rmtree(root, ignore_errors=True)
        plan = cls(root / uuid.uuid4().hex)
        chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        for k, part in enumerate(chunks):
            spec = {
                "tasks": [[task_id, ref] for task_id, ref in part],
                "flip": [task_id for task_id, _ in part if task_id in flip_tasks],
            }
            atomic_write(plan._file(k, ".json"), json.dumps(spec).encode())
        model = {
            "version": source.version,
            "weights": str(source.weights),
            "kind": source.kind,
            "display_threshold": source.display_threshold,
        }
        head = {
            "project_id": project_id,
            "model": model,
            "signature": signature,
            "image_field": image_field,
            "chunks": len(chunks),
            "batch": batch,  # images loaded and detected at a time (`detect`'s chunk)
        }
        atomic_write(plan.folder / "plan.json", json.dumps(head).encode())
        return plan

    @property
    def token(self) -> str:
        return self.folder.name

    def head(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "plan.json").read_text(encoding="utf-8")))

    def signature(self) -> dict[str, object]:
        return dict(self.head()["signature"])

    def source(self) -> ModelSource:
        model = self.head()["model"]
        return ModelSource(
            version=model["version"],
            weights=Path(model["weights"]),
            kind=model["kind"],
            display_threshold=model["display_threshold"],
        )

    def tasks(self, k: int) -> tuple[list[TaskImage], set[int]]:
        spec = json.loads(self._file(k, ".json").read_text(encoding="utf-8"))
        return [(int(t), ref) for t, ref in spec["tasks"]], {int(t) for t in spec["flip"]}

    def claim(self, k: int) -> bool:
        """Take chunk `k`: unclaimed, or its claim gone stale."""
        path = self._file(k, ".claim")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            pass
        try:
            if time.time() - path.stat().st_mtime < CLAIM_STALE_S:
                return False
        except FileNotFoundError:
            return False
        logger.warning("detect chunk %s/%d: claim stale, taken over", self.token, k)
        os.utime(path)
        return True

    def done(self, k: int) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._file(k, ".done").read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def run(
        self,
        k: int,
        detector: Detector,
        images: ImageLoader,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Detect chunk `k` (claimed) into its own stores, then mark it done; the claim is
        touched after every detector batch, then `on_batch` hears how many of the chunk's
        tasks are through (it may raise RankingCancelled)."""
        tasks, flip = self.tasks(k)
        head = self.head()
        claim = self._file(k, ".claim")

        def progress(report: RankProgress) -> None:
            os.utime(claim)
            if on_batch is not None:
                on_batch(report.done)

        started = time.perf_counter()
        found = detect(
            RankRun(int(head["project_id"]), str(head["model"]["version"]), progress),
            tasks,
            detector=detector,
            images=images,
            index=EmbeddingIndex(self._file(k, ".faiss")),
            cache=DetectionCache(self._file(k, ".detections.npz"), head["signature"]),
            chunk=int(head["batch"]),
            image_field=head["image_field"],
            flip_tasks=flip,
        )
        record = {
            "failed": {str(t): why for t, why in found.failed.items()},
            "predicted": found.n_predicted,
            "by": f"{socket.gethostname()}:{os.getpid()}",
            "seconds": round(time.perf_counter() - started, 3),
        }
        atomic_write(self._file(k, ".done"), json.dumps(record).encode())

    def merge(self, k: int, index: EmbeddingIndex, cache: DetectionCache) -> dict[str, Any]:
        """Chunk `k`'s records and embeddings into the ranking's stores; its done record."""
        tasks, _ = self.tasks(k)
        found = DetectionCache(self._file(k, ".detections.npz"), self.signature())
        for task_id, ref in tasks:
            record = found.get(task_id, ref) if isinstance(ref, str) else None
            if record is not None:
                cache.put(task_id, record)
        vectors = EmbeddingIndex(self._file(k, ".faiss"))
        ids = vectors.ids()
        if len(ids):
            index.upsert(ids, vectors.get(ids))
        done = self.done(k)
        assert done is not None  # merged only once done
        return done

    def _file(self, k: int, suffix: str) -> Path:
        return self.folder / f"{int(k)}{suffix}"


def detect_shared(
    run: RankRun,
    tasks: Sequence[TaskImage],
    *,
    settings: Settings,
    detector: Detector,
    images: ImageLoader,
    index: EmbeddingIndex,
    cache: DetectionCache,
    chunk: int,
    image_field: str,
    flip_tasks: Collection[int] = frozenset(),
    offload: ChunkQueue | None = None,
    chunk_tasks: int = CHUNK_TASKS,
) -> Detections:
    """`detect`, with the tasks to detect shared with workers through `offload` when there
    are at least two chunks of `chunk_tasks` and the model has weights; else `detect`."""
    here = functools.partial(
        detect,
        run,
        detector=detector,
        images=images,
        index=index,
        cache=cache,
        chunk=chunk,
        image_field=image_field,
        flip_tasks=flip_tasks,
    )
    _, todo = split_cached(tasks, index, cache, flip_tasks)
    if offload is None or detector.source.weights is None or len(todo) < 2 * chunk_tasks:
        return here(tasks)
    signature = detection_signature(settings, run.model_version, detector.names)
    plan = ChunkPlan.create(
        settings,
        run.project_id,
        detector.source,
        signature,
        image_field,
        todo,
        flip_tasks,
        chunk_tasks,
        chunk,
    )
    n = plan.head()["chunks"]
    offload.submit(run.project_id, plan.token, n)
    started = time.perf_counter()
    failed: dict[int, str] = {}
    predicted = 0
    by: dict[str, int] = {}
    pending = list(range(n))
    merged = 0  # tasks of the chunks merged so far

    def report(extra: int) -> None:
        elapsed = time.perf_counter() - started
        run.notify(run.report("predict", merged + extra, len(todo), elapsed))

    try:
        while pending:
            progressed = False
            for k in list(pending):
                if plan.done(k) is None and plan.claim(k):
                    plan.run(k, detector, images, report)
                if plan.done(k) is None:
                    continue
                done = plan.merge(k, index, cache)
                failed.update({int(t): why for t, why in done["failed"].items()})
                predicted += int(done["predicted"])
                by[done["by"]] = by.get(done["by"], 0) + 1
                pending.remove(k)
                progressed = True
                merged += len(plan.tasks(k)[0])
                report(0)
            if pending and not progressed:
                time.sleep(_POLL_S)
    finally:
        index.save()
        cache.save()
        shutil.rmtree(plan.folder, ignore_errors=True)
    logger.info(
        "project=%s model_version=%s detected %d tasks in %d chunks of %d in %.1fs; "
        "chunks by process: %s",
        run.project_id,
        run.model_version,
        len(todo),
        n,
        chunk_tasks,
        time.perf_counter() - started,
        by,
    )
    records, missing = split_cached(tasks, index, cache, flip_tasks)
    missing = [(t, ref) for t, ref in missing if t not in failed]
    if missing:  # not expected: a chunk's stores lost a record
        rest = here(missing)
        records.update(rest.records)
        failed.update(rest.failed)
        predicted += rest.n_predicted
    return Detections(records, failed, predicted)


def take_chunk(
    settings: Settings,
    detectors: DetectorPool,
    images: ImageLoader,
    project_id: int,
    token: str,
    k: int,
) -> str:
    """A worker's part: detect chunk `k` of plan `token` unless it is gone, taken, or was
    planned under another detection setup than this worker's; returns which."""
    plan = ChunkPlan(settings.paths.project(project_id).detect_chunks / token)
    try:
        source = plan.source()
    except FileNotFoundError:
        return "gone"  # the ranking finished (or was cancelled) first
    if plan.done(k) is not None:
        return "done"
    detector = detectors.get(source)
    signature = detection_signature(settings, source.version, detector.names)
    if signature != plan.signature():
        logger.error(
            "project=%s detect chunk %s/%d: this worker's setup %s differs from the ranking's "
            "%s (IMAGE_SIZE, DETECT_CONF_FLOOR?); left to the ranking",
            project_id,
            token,
            k,
            signature,
            plan.signature(),
        )
        return "refused"
    if not plan.claim(k):
        return "taken"
    plan.run(k, detector, images)
    return "done"
