"""Rank a project's unlabeled tasks by active learning and write the queue into Label Studio.

Why here and not in `/predict`: scoring needs every unlabeled task at once (diversity compares
tasks with each other and with the labeled set), which no 100 s `/predict` call can do.

`rank_project` is a sequence of stages, each a function of the values the ones before
returned (frozen records); only the stores on disk carry state from one run to the next:
1. fetch: the project (label config) and every task with its predictions, paginated
   (`backend.labelstudio.predictions`);
2. detect: the live model over the tasks it has no current detections for, reusing what
   earlier runs of the same model version stored (`detect`); with REDIS_URL, a large pass is
   shared with idle workers in chunks (`chunks`);
3. encode and select: every task's thumbnail through the project encoder (trained in the
   ranking when the project has none or has grown; `encoder_stage`), its near-duplicate
   groups, then a `strategies.Pool` of the ranked tasks (the class-score vectors of all kept
   boxes of the classes the label config maps) and the strategy's selection (before the
   first promoted model: typical picks on the encoder's embeddings, `cold_start`);
4. order: the queue Label Studio will serve and one prediction per unlabeled task: `result`
   (the pre-annotation) and `score` (`queue`, where the maths is explained);
5. publish: the queue as a new queue version (`v3.q2`: `backend.labelstudio.versions`),
   imported in bulk, then the project switched to it in one PATCH (`model_version`, and
   `sampling = "Uncertainty sampling"`) (`publish`, where crash safety is explained);
6. store: the ranked predictions and their queue version under MODEL_DIR, so `/setup` and
   `/predict` answer with that version and from them (`store.precomputed_prediction`); the
   "Active learning queue" tab kept, and the tasks behind a near-duplicate given
   `near_duplicate_of` in their data and a "Near-duplicates" tab;
7. remove: the older queue versions, one DELETE each, after keeping their predictions on
   annotated tasks (`publish.remove_old_versions`).
One ranking per project runs at a time (a file lock in the project's ranking folder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.analytics.cost import ActionSeconds
from backend.audit import split_key
from backend.config import Settings
from backend.files import exclusive_lock
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.labelstudio.label_config import BoxControl, ParsedConfig, parse_label_config
from backend.labelstudio.predictions import (
    DesiredPrediction,
    duplicates_view_data,
    ensure_queue_view,
    ensure_view,
    list_tasks,
    mark_near_duplicates,
    read_project,
)
from backend.layout import ModelDir
from backend.models.detector import DetectorPool
from backend.models.registry import ModelRegistry
from backend.project_params import TrainParams, load_project_params
from backend.ranking.chunks import ChunkQueue, detect_shared
from backend.ranking.detect import Detections, open_stores
from backend.ranking.detection_cache import ImageRecord
from backend.ranking.embedding_index import EmbeddingIndex
from backend.ranking.encoder_stage import EncodedTasks, encode_tasks
from backend.ranking.errors import RankingBusy, RankingConfigError
from backend.ranking.progress import ProgressCallback, RankRun
from backend.ranking.publish import publish_queue, remove_old_versions
from backend.ranking.queue import (
    QueuedTask,
    class_ap_vector,
    empty_selection,
    mapped_class_mask,
    near_duplicate_marks,
    pool_box_scores,
    predicted_seconds,
    queue_head,
    queue_predictions,
    queue_tasks,
)
from backend.ranking.queue_config import ENCODER_EMBEDDING, QueueConfig, queue_config
from backend.ranking.store import (
    ranking_document,
    ranking_entry,
    ranking_path,
    remove_other_rankings,
    save_ranking,
)
from backend.services import Services
from strategies import Pool, Selection, Strategy

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------- public records
@dataclass(frozen=True)
class RankSummary:
    """What a ranking did, for logs, the CLI and the scheduler."""

    project_id: int
    model_version: str
    strategy: str
    n_tasks: int  # every task of the project
    n_labeled: int  # tasks with at least one non-cancelled annotation
    n_ranked: int  # unlabeled tasks that got a queue position
    n_failed: int  # unlabeled tasks whose image could not be loaded (not ranked)
    n_predicted: int  # images run through the detector in this call
    n_reused: int  # tasks whose detections came from an earlier run of this model version
    queue_version: str  # the model_version the queue's predictions carry in Label Studio
    imported: int  # predictions imported (one per ranked task)
    removed_versions: tuple[str, ...]  # older queue versions deleted from Label Studio
    removed: int  # their predictions deleted
    kept: int  # their predictions on annotated tasks, moved to the detector's version instead
    view_id: int | None
    top_task_ids: tuple[int, ...]  # the first `batch_size` tasks of the queue, in order
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per stage + total
    ranking_path: Path | None = None
    encoder_version: str | None = None  # the project encoder the ranking used, if any
    near_duplicates: int = 0  # ranked tasks moved behind a near-duplicate (and marked)

    @property
    def tasks_per_s(self) -> float:
        """Ranked tasks per second of the whole call."""
        total = self.timings.get("total", 0.0)
        return self.n_ranked / total if total > 0 else 0.0


# ------------------------------------------------------------------ values between stages
@dataclass(frozen=True)
class RankTask:
    """A task as the ranking needs it."""

    id: int
    ref: object  # the image reference in task data (validated when loaded)
    labeled: bool
    data: Mapping[str, Any]  # the task's data as Label Studio holds it


# ------------------------------------------------------------------------- entry points
def rank_as_configured(
    services: Services,
    project_id: int,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    offload: ChunkQueue | None = None,
) -> RankSummary:
    """Rank with the project's queue settings (extra params saved at /setup over the tag's
    attributes), `overrides` (al_* keys, e.g. from the CLI) on top of both.

    The one entry point of the training pipeline (after a promotion or START_TRAINING) and
    the CLI. Raises what `rank_project` raises, and BadRequest for invalid queue settings.
    """
    settings = services.settings
    extra = {**load_project_params(settings.paths, project_id), **dict(overrides or {})}
    project = read_project(services.label_studio, project_id)
    controls = parse_label_config(str(project.label_config or "")).controls
    return rank_project(
        settings=settings,
        detectors=services.detectors,
        images=services.images,
        label_studio=services.label_studio,
        registry=services.registry,
        project_id=project_id,
        queue=queue_config(
            extra,
            controls[0].queue_attributes,
            val_percent=TrainParams.resolve(settings, extra).val_percent,
        ),
        progress=progress,
        offload=offload,
    )


def rank_project(
    *,
    settings: Settings,
    detectors: DetectorPool,
    images: ImageLoader,
    label_studio: LabelStudioClient,
    registry: ModelRegistry,
    project_id: int,
    queue: QueueConfig,
    progress: ProgressCallback | None = None,
    offload: ChunkQueue | None = None,
) -> RankSummary:
    """Rank a project's unlabeled tasks with the live model and write the queue to Label Studio.

    Args:
        settings, detectors, images, label_studio, registry: the process's services.
        project_id: the Label Studio project.
        queue: the strategy, its parameters and the batch size (how many tasks the strategy
            picks as its batch: the head of the queue).
        progress: called after each detector chunk and import chunk; it may raise
            `RankingCancelled` to stop (the detections computed so far are kept; a partly
            imported queue version is never served and the next ranking removes it).
        offload: where workers hear of the detect pass's chunks (RQ, with REDIS_URL): they
            share the pass when it is large (`chunks.detect_shared`); None: all done here.

    Raises:
        RankingConfigError, RankingBusy, RankingCancelled; ProjectNotFound and
        LabelStudioApiError from Label Studio; LabelConfigError and ModelError from the label
        config and model; ConfigError when Label Studio's URL or key are not set.
    """
    strategy = checked_strategy(queue)
    project_id = int(project_id)
    with ranking_lock(settings.paths, project_id):
        started = time.perf_counter()
        project = read_project(label_studio, project_id)
        controls = primary_controls(parse_label_config(str(project.label_config or "")), project_id)
        first = controls[0]
        detector = detectors.get(detectors.source_for(project_id, first.labels, first.model_path))
        run = RankRun(project_id, detector.version, progress)
        tasks = fetch_tasks(label_studio, project_id, first.value_key)
        timings = {"fetch": time.perf_counter() - started}
        labeled = [t for t in tasks if t.labeled]
        unlabeled = [t for t in tasks if not t.labeled]
        logger.info(
            "project=%s model_version=%s ranking %d unlabeled tasks (%d labeled) with %s",
            project_id,
            run.model_version,
            len(unlabeled),
            len(labeled),
            strategy.name,
        )

        remove_other_rankings(settings.model_dir, project_id, run.model_version)
        index, cache = open_stores(settings, run, detector.names, [t.id for t in tasks])
        detections = detect_shared(
            run,
            [(t.id, t.ref) for t in unlabeled + labeled],
            settings=settings,
            offload=offload,
            detector=detector,
            images=images,
            index=index,
            cache=cache,
            chunk=max(16, 2 * settings.predict_batch),
            image_field=first.value_key,
            flip_tasks={t.id for t in unlabeled} if queue.flip_pass else frozenset(),
        )
        ranked = [t for t in unlabeled if t.id in detections.records]
        timings["predict"] = time.perf_counter() - started - timings["fetch"]

        tick = time.perf_counter()
        encoded = encode_tasks(settings, project_id, [(t.id, t.ref) for t in tasks], images)
        timings["encode"] = time.perf_counter() - tick
        if cold_start(queue, registry, project_id, encoded, ranked):
            assert encoded is not None  # cold_start checked it
            strategy, embeddings = queue.build_cold_start(), encoded.index
        elif queue.embedding == ENCODER_EMBEDDING and covers(encoded, ranked):
            assert encoded is not None  # covers checked it
            embeddings = encoded.index
        else:
            embeddings = index

        tick = time.perf_counter()
        selection = select(
            strategy,
            queue.batch_size,
            ranked,
            [t for t in labeled if t.id in detections.records and t.id in embeddings],
            detections.records,
            embeddings,
            mapped_class_mask(detector.names, controls),
            live_class_ap(registry, run, detector.names),
            detector.source.shown_from(first.score_threshold, settings.score_threshold),
            encoded,
        )
        ranked_ids = [t.id for t in ranked]
        queued = queue_tasks(selection, ranked_ids)
        marks = (
            {}
            if encoded is None
            else near_duplicate_marks(queued, encoded.groups, [t.id for t in labeled])
        )
        desired = queue_predictions(
            queued,
            detections.records,
            detector.names,
            controls,
            detector.source.shown_from(None, settings.score_threshold),
        )
        timings["select"] = time.perf_counter() - tick

        tick = time.perf_counter()
        head = sorted(queued, key=lambda q: q.position)[: queue.queue_length or None]
        published = publish_queue(
            label_studio,
            project_id,
            project,
            run.model_version,
            [(q.task_id, desired[q.task_id]) for q in head],
            progress=lambda done, total, elapsed: run.notify(
                run.report("write", done, total, elapsed)
            ),
        )
        target = published.version
        timings["write"] = published.import_s
        timings["switch"] = time.perf_counter() - tick - published.import_s
        tick = time.perf_counter()
        path = store_ranking(
            settings.model_dir, run, target, strategy.name, queued, desired, detections, len(head)
        )
        timings["switch"] += time.perf_counter() - tick
        tick = time.perf_counter()
        view_id = ensure_queue_view(label_studio, project_id, model_version=target)
        if encoded is not None:
            mark_near_duplicates(
                label_studio,
                project_id,
                {t.id: t.data for t in unlabeled},
                marks,
                model_version=target,
            )
            if marks:
                data = duplicates_view_data()
                ensure_view(label_studio, project_id, data, model_version=target)
        timings["views"] = time.perf_counter() - tick

        tick = time.perf_counter()
        removed = remove_old_versions(label_studio, project_id, published.before, target, project)
        timings["remove"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - started
        summary = RankSummary(
            project_id=project_id,
            model_version=run.model_version,
            strategy=strategy.name,
            n_tasks=len(tasks),
            n_labeled=len(labeled),
            n_ranked=len(ranked),
            n_failed=len([t for t in unlabeled if t.id in detections.failed]),
            n_predicted=detections.n_predicted,
            n_reused=len(detections.records) - detections.n_predicted,
            queue_version=target,
            imported=published.imported,
            removed_versions=removed.versions,
            removed=removed.predictions,
            kept=removed.kept,
            view_id=view_id,
            top_task_ids=queue_head(queued, queue.batch_size),
            timings=timings,
            ranking_path=path,
            encoder_version=None if encoded is None else encoded.version,
            near_duplicates=len(marks),
        )
        _log_summary(summary)
        return summary


# ------------------------------------------------------------------------------- stages
def checked_strategy(queue: QueueConfig) -> Strategy:
    """The strategy `queue` names; RankingConfigError for a bad name, parameter or batch."""
    batch_size = queue.batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RankingConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    try:
        return queue.build()
    except ValueError as exc:
        raise RankingConfigError(str(exc)) from None


@contextmanager
def ranking_lock(paths: ModelDir, project_id: int) -> Iterator[None]:
    """One ranking per project at a time, across threads and processes; else RankingBusy."""
    with exclusive_lock(paths.project(project_id).ranking_lock) as acquired:
        if not acquired:
            raise RankingBusy(f"project {project_id} is already being ranked")
        yield


def primary_controls(config: ParsedConfig, project_id: int) -> list[BoxControl]:
    """The controls over the first control's image field (they share one detection), with a
    warning when the config has controls over other fields."""
    chosen = list(config.primary_controls)
    if len(chosen) < len(config.controls):
        logger.warning(
            "project=%s ranking uses image field %r only; controls over other image "
            "fields get no pre-annotation from the ranking",
            project_id,
            chosen[0].value_key,
        )
    return chosen


def fetch_tasks(ls: LabelStudioClient, project_id: int, image_field: str) -> list[RankTask]:
    """Every task of the project, its image reference read from the data field `image_field`."""
    return [parse_task(raw, image_field) for raw in list_tasks(ls, project_id)]


def parse_task(raw: Mapping[str, Any], image_field: str) -> RankTask:
    """A task as Label Studio lists it, reduced to what the ranking needs."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    return RankTask(
        id=int(raw["id"]),
        ref=data.get(image_field) if data else None,
        labeled=int(raw.get("total_annotations") or 0) > 0,
        data=data or {},
    )


def cold_start(
    queue: QueueConfig,
    registry: ModelRegistry,
    project_id: int,
    encoded: EncodedTasks | None,
    ranked: Sequence[RankTask],
) -> bool:
    """Whether the ranking picks by the project encoder (`QueueConfig.build_cold_start`):
    before the project's first promoted model, when the encoder covers every ranked task and
    the project did not ask for a random queue."""
    return (
        queue.strategy != "random" and registry.live(project_id) is None and covers(encoded, ranked)
    )


def covers(encoded: EncodedTasks | None, ranked: Sequence[RankTask]) -> bool:
    """Whether the project encoder has an embedding for every ranked task."""
    return (
        encoded is not None
        and bool(ranked)
        and bool(encoded.index.contains([t.id for t in ranked]).all())
    )


def live_class_ap(
    registry: ModelRegistry, run: RankRun, names: Sequence[str]
) -> npt.NDArray[np.float64] | None:
    """Per-class AP50 of the run's model when it is the live version (its meta holds them)."""
    live = registry.live(run.project_id)
    if live is None or live.version != run.model_version:
        return None
    return class_ap_vector(live.meta, names)


def select(
    strategy: Strategy,
    batch_size: int,
    ranked: Sequence[RankTask],
    labeled: Sequence[RankTask],
    records: Mapping[int, ImageRecord],
    index: EmbeddingIndex,
    mapped_classes: np.ndarray,
    class_ap: np.ndarray | None,
    threshold: float,
    encoded: EncodedTasks | None = None,
) -> Selection:
    """The strategy's selection over the ranked tasks, with the labeled ones' embeddings as
    what diversity keeps away from, each task's audit key (`split_key`, the validation
    split's too), its predicted annotator seconds with boxes shown from `threshold`, its
    flip disagreement when every record has one, and the near-duplicate groups of
    `encoded` (the first task of each is kept, the others go behind)."""
    if not ranked:
        return empty_selection(strategy.name)
    labeled_ids = [t.id for t in labeled]
    flip = np.array([records[t.id].flip_disagreement for t in ranked])
    pool = Pool(
        box_scores=[pool_box_scores(records[t.id], mapped_classes) for t in ranked],
        embeddings=index.get([t.id for t in ranked]),
        labeled_embeddings=index.get(labeled_ids) if labeled_ids else None,
        class_ap=class_ap,
        split_keys=np.array([split_key(t.id) for t in ranked]),
        seconds=predicted_seconds([records[t.id] for t in ranked], threshold, ActionSeconds()),
        flip_disagreement=flip if np.isfinite(flip).all() else None,
        duplicate_groups=None if encoded is None else _groups(encoded, ranked),
        labeled_groups=None if encoded is None else _groups(encoded, labeled),
    )
    return strategy.select(pool, batch_size)


def _groups(encoded: EncodedTasks, tasks: Sequence[RankTask]) -> npt.NDArray[np.int64]:
    return np.array([encoded.group_of(t.id) for t in tasks], dtype=np.int64)


def store_ranking(
    model_dir: Path,
    run: RankRun,
    queue_version: str,
    strategy: str,
    queued: Sequence[QueuedTask],
    desired: Mapping[int, DesiredPrediction],
    detections: Detections,
    written: int,
) -> Path:
    """Write the ranked predictions, the queue version they carry and how many of the queue's
    first tasks Label Studio holds (`written`), for `/setup` and `/predict`; returns the
    file."""
    entries = {
        str(q.task_id): ranking_entry(
            result=desired[q.task_id].result,
            score=q.score,
            rank=q.position,
            strategy_rank=q.strategy_rank,
            strategy_score=q.strategy_score,
            ref=detections.records[q.task_id].ref,
        )
        for q in queued
    }
    document = ranking_document(
        project_id=run.project_id,
        model_version=run.model_version,
        queue_version=queue_version,
        strategy=strategy,
        created_at=time.time(),
        tasks=entries,
        written=written,
    )
    return save_ranking(ranking_path(model_dir, run.project_id, run.model_version), document)


def _log_summary(summary: RankSummary) -> None:
    logger.info(
        "project=%s model_version=%s ranked %d tasks in %.1fs (%.1f tasks/s; predicted %d, "
        "reused %d, failed %d); queue %s: %d predictions imported in %.1fs; removed %s "
        "(%d predictions, %d kept on annotated tasks); first: %s",
        summary.project_id,
        summary.model_version,
        summary.n_ranked,
        summary.timings["total"],
        summary.tasks_per_s,
        summary.n_predicted,
        summary.n_reused,
        summary.n_failed,
        summary.queue_version,
        summary.imported,
        summary.timings.get("write", 0.0),
        list(summary.removed_versions) or "nothing",
        summary.removed,
        summary.kept,
        list(summary.top_task_ids[:5]),
    )
