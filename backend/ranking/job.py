"""Rank a project's unlabeled tasks by active learning and write the queue into Label Studio.

Why here and not in `/predict`: scoring needs every unlabeled task at once (diversity compares
tasks with each other and with the labeled set), which no 100 s `/predict` call can do.

One `rank_project` call:
1. reads the project (label config) and every task from Label Studio, paginated;
2. runs the live model over the tasks it has no current detections for (unlabeled tasks for
   uncertainty and pre-annotations, labeled tasks for their embeddings), reusing what earlier
   runs of the same model version stored: embeddings in the FAISS `EmbeddingIndex`, boxes in a
   `DetectionCache` next to it;
3. builds a `strategies.Pool` (the class-score vectors of ALL kept boxes, down to
   DETECT_CONF_FLOOR, of the classes the label config maps) and selects with the strategy;
4. turns the order into Label Studio's queue (see "The queue" below) and writes one prediction
   per unlabeled task: `result` (the pre-annotation), `score`, `cluster` (unless
   `clusters=False`), `model_version`;
5. sets the project's `model_version` and `sampling = "Uncertainty sampling"`, and keeps a
   Data Manager tab "Active learning queue" sorted by the same scores;
6. stores the ranked predictions under MODEL_DIR so `/predict` can answer from them
   (`precomputed_prediction`).

The queue (Label Studio 1.23, verified against a real server):
* `GET /api/projects/{id}/next` with uncertainty sampling serves, among unlabeled tasks with a
  prediction of `project.model_version`, the one whose `cluster` the annotator has labeled
  least, and within those the LOWEST `score`.
* So the strategy's order (higher = label sooner) is first made cluster-fair the way Label
  Studio will serve it (`queue_order`: the best task of every cluster, then the second best,
  ...; `n_clusters=1` keeps the strategy's order exactly), and the position p of a task in that
  queue of n tasks becomes its score: `score = p / n` (top pick 0.0, all scores in [0, 1)).
  One annotator labeling in order is then served exactly this queue.
* Cluster ids are the strategy's k-means ids plus an offset above every cluster id on
  predictions this run does not replace, so clusters of older runs (on labeled tasks) never
  count against the new ones.
* The Data Manager tab sorts by `tasks:predictions_score` (the mean score of the predictions
  of `project.model_version`: one per task here), ascending, and hides labeled tasks; "Label
  Tasks As Displayed" serves it in that order.

Writing predictions (measured on Label Studio 1.23.2, SQLite, 2 CPU cores, idle machine): bulk
`POST /api/projects/{id}/import/predictions` is fast (~750/s) but drops `cluster` and returns no
ids, so each prediction would still need a `PATCH` (~35/s with 4 threads) after listing them
again; `POST /api/predictions/` keeps `cluster` at the same ~38/s with 4 threads. So new
predictions are created one by one (4 threads), an existing prediction of the same model
version is updated in place (`PATCH`, only the fields that changed; unchanged ones cost
nothing), and extra copies are deleted: re-ranking never duplicates. With `clusters=False`
new predictions go through the bulk import instead (same queue, no cluster ids).
"""

from __future__ import annotations

import copy
import fcntl
import functools
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.config import Settings
from backend.errors import BackendError, ImageError
from backend.files import atomic_write
from backend.labelstudio import format as ls_format
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader, LoadedImage
from backend.labelstudio.label_config import BoxControl, parse_label_config
from backend.models.detector import Box, Detector, DetectorPool, ImageDetections
from backend.models.registry import ModelRegistry
from backend.ranking.embedding_index import EmbeddingIndex, version_file_stem
from strategies import Pool, Selection, Strategy, get_strategy

logger = logging.getLogger(__name__)

QUEUE_VIEW_TITLE = "Active learning queue"
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
DEFAULT_STRATEGY = "hybrid"
DEFAULT_BATCH_SIZE = 50
QUEUE_ORDERING = ("tasks:predictions_score",)
PAGE_SIZE = 100
BULK_CHUNK = 500
WRITE_WORKERS = 4
LOAD_WORKERS = 4
_TASK_FIELDS = "id,data,total_annotations,predictions"
_LOG_EVERY_S = 10.0
_RANKING_SUFFIX = ".json"
_CACHE_SUFFIX = ".detections.npz"

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------------- errors
class RankingError(BackendError):
    """Ranking a project failed."""

    code = "ranking_error"


class RankingConfigError(RankingError):
    """A bad strategy name, strategy parameter or batch size."""

    status = 400
    code = "bad_ranking_request"


class ProjectNotFound(RankingError):
    """Label Studio has no such project (or the API key cannot see it)."""

    status = 404
    code = "project_not_found"


class LabelStudioApiError(RankingError):
    """A Label Studio API call failed; the message holds the status and LS's answer only."""

    status = 502
    code = "label_studio_error"


class RankingBusy(RankingError):
    """Another ranking of the same project is running (in this or another process)."""

    status = 409
    code = "ranking_busy"


class RankingCancelled(RankingError):
    """Raised by a progress callback to stop a ranking; work done so far is kept on disk."""

    status = 409
    code = "ranking_cancelled"


# ------------------------------------------------------------------------- public records
@dataclass(frozen=True)
class RankProgress:
    """What a progress callback receives: one stage's count so far."""

    project_id: int
    model_version: str
    stage: str  # "predict" or "write"
    done: int
    total: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first item)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None


ProgressCallback = Callable[[RankProgress], None]


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
    created: int  # predictions written to Label Studio
    updated: int
    deleted: int
    unchanged: int
    view_id: int | None
    top_task_ids: tuple[int, ...]  # the first `batch_size` tasks of the queue, in order
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per stage + total
    ranking_path: Path | None = None

    @property
    def tasks_per_s(self) -> float:
        """Ranked tasks per second of the whole call."""
        total = self.timings.get("total", 0.0)
        return self.n_ranked / total if total > 0 else 0.0


@dataclass(frozen=True)
class ExistingPrediction:
    """A prediction already stored in Label Studio (as the task list reports it)."""

    id: int
    task: int
    model_version: str
    score: float | None
    cluster: int | None
    result: list[dict[str, Any]]


@dataclass(frozen=True)
class DesiredPrediction:
    """What a ranked task's prediction must hold."""

    result: list[dict[str, Any]]
    score: float
    cluster: int | None  # None when clusters are not written


@dataclass(frozen=True)
class WritePlan:
    """The Label Studio writes that turn the existing predictions into the desired ones."""

    create: tuple[tuple[int, DesiredPrediction], ...]  # (task id, prediction)
    update: tuple[tuple[int, dict[str, Any]], ...]  # (prediction id, changed fields)
    delete: tuple[int, ...]  # prediction ids
    unchanged: int

    @property
    def n_writes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


# ----------------------------------------------------------------------- pure queue logic
def queue_order(order: npt.ArrayLike, clusters: npt.ArrayLike) -> IntArray:
    """The order Label Studio's uncertainty sampling serves, given the strategy's order.

    Label Studio serves the task of the least-labeled cluster with the lowest score. Starting
    from clusters nobody has labeled, one annotator labeling in turn is served the best task
    of each cluster (in strategy order), then the second best of each, and so on. That is a
    sort by (position inside the task's cluster, position in the strategy's order).

    Args:
        order: (n,) permutation of pool indices, label-first first (`Selection.order`).
        clusters: (n,) cluster id per pool index (`Selection.clusters`).

    Returns:
        (n,) int64 permutation of pool indices: the queue, first served first.
    """
    order = np.asarray(order, dtype=np.int64)
    clusters = np.asarray(clusters, dtype=np.int64)
    n = order.shape[0]
    if order.ndim != 1 or clusters.shape != (n,):
        raise ValueError("order and clusters must both have shape (n,)")
    if not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError("order must be a permutation of range(n)")
    ordered_clusters = clusters[order]
    within = np.zeros(n, dtype=np.int64)  # rank of each order position inside its cluster
    seen: dict[int, int] = {}
    for position, cluster in enumerate(ordered_clusters.tolist()):
        within[position] = seen.get(cluster, 0)
        seen[cluster] = within[position] + 1
    positions = np.lexsort((np.arange(n), within))
    return order[positions]


def queue_scores(queue: npt.ArrayLike) -> FloatArray:
    """Label Studio scores from a queue: the task at position p of n gets p / n.

    Label Studio serves the LOWEST score first, so the first task gets 0.0 and scores grow
    along the queue, all in [0, 1).

    Returns:
        (n,) float64 score per pool index.
    """
    queue = np.asarray(queue, dtype=np.int64)
    n = queue.shape[0]
    scores = np.empty(n, dtype=np.float64)
    scores[queue] = np.arange(n, dtype=np.float64) / max(n, 1)
    return scores


def pool_box_scores(record: ImageRecord, mapped_classes: npt.NDArray[np.bool_]) -> Float32Array:
    """(k, n_classes) class-score vectors of the record's boxes whose class the config maps.

    Every kept box counts (the detector keeps them down to DETECT_CONF_FLOOR); boxes of
    classes no control shows are left out, so an image where only those were found reads as
    "nothing detected", which the strategies treat as uncertain.
    """
    if record.class_ids.shape[0] == 0:
        return record.class_scores
    ids = record.class_ids
    valid = (ids >= 0) & (ids < mapped_classes.shape[0])
    keep = np.zeros(ids.shape[0], dtype=bool)
    keep[valid] = mapped_classes[ids[valid]]
    return record.class_scores[keep]


def mapped_class_mask(
    names: Sequence[str], controls: Sequence[BoxControl]
) -> npt.NDArray[np.bool_]:
    """(n_classes,) True where a model class maps to a label of one of `controls`."""
    return np.array(
        [any(c.label_for(name) is not None for c in controls) for name in names], dtype=bool
    )


def class_ap_vector(meta: Mapping[str, Any], names: Sequence[str]) -> FloatArray | None:
    """Per-class AP50 from a model version's meta, indexed by class id; None if unknown.

    Reads `meta["metrics"]["per_class_ap50"] = {class_name: ap50}`; classes without a value
    (or with a value that is not a number in [0, 1]) get NaN, which DUA treats as hardest.
    """
    metrics = meta.get("metrics") if isinstance(meta, Mapping) else None
    per_class = metrics.get("per_class_ap50") if isinstance(metrics, Mapping) else None
    if not isinstance(per_class, Mapping) or not names:
        return None
    values = np.full(len(names), np.nan, dtype=np.float64)
    for i, name in enumerate(names):
        value = per_class.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and 0.0 <= value <= 1.0:
                values[i] = float(value)
    return None if np.isnan(values).all() else values


def plan_writes(
    desired: Mapping[int, DesiredPrediction],
    existing: Mapping[int, Sequence[ExistingPrediction]],
    model_version: str,
    retire: Sequence[int] = (),
) -> WritePlan:
    """Diff what Label Studio holds against what the ranking wants.

    For each task in `desired`, one existing prediction of `model_version` is kept (the newest
    that already matches, else the newest) and updated in place (only the changed fields),
    and its other copies are deleted; a task without one gets a new prediction. Tasks in
    `retire` (unlabeled but not ranked, e.g. their image failed) lose their predictions of
    `model_version`, so a stale score cannot put them at the head of the queue. Predictions of
    other versions are never touched.
    """
    create: list[tuple[int, DesiredPrediction]] = []
    update: list[tuple[int, dict[str, Any]]] = []
    delete: list[int] = []
    unchanged = 0
    for task_id in sorted(desired):
        want = desired[task_id]
        same = sorted(
            (p for p in existing.get(task_id, ()) if p.model_version == model_version),
            key=lambda p: p.id,
        )
        if not same:
            create.append((task_id, want))
            continue
        matching = [p for p in same if not _changed_fields(p, want)]
        keep = matching[-1] if matching else same[-1]
        delete.extend(p.id for p in same if p.id != keep.id)
        changed = _changed_fields(keep, want)
        if changed:
            update.append((keep.id, changed))
        else:
            unchanged += 1
    for task_id in sorted(set(retire) - set(desired)):
        delete.extend(p.id for p in existing.get(task_id, ()) if p.model_version == model_version)
    return WritePlan(tuple(create), tuple(update), tuple(delete), unchanged)


def _changed_fields(current: ExistingPrediction, want: DesiredPrediction) -> dict[str, Any]:
    """The fields of `want` that `current` does not already hold."""
    changed: dict[str, Any] = {}
    if current.score is None or not math.isclose(current.score, want.score, abs_tol=1e-12):
        changed["score"] = want.score
    if current.cluster != want.cluster:
        changed["cluster"] = want.cluster
    if current.result != want.result:
        changed["result"] = want.result
    return changed


# ------------------------------------------------------------------- local persistence
def ranking_dir(model_dir: Path, project_id: int) -> Path:
    """Folder of a project's ranking files."""
    return Path(model_dir) / "projects" / str(int(project_id)) / "ranking"


def ranking_path(model_dir: Path, project_id: int, model_version: str) -> Path:
    """The stored ranking of `model_version`."""
    stem = version_file_stem(model_version)
    return ranking_dir(model_dir, project_id) / f"{stem}{_RANKING_SUFFIX}"


def detection_cache_path(model_dir: Path, project_id: int, model_version: str) -> Path:
    """The stored detections of `model_version`."""
    stem = version_file_stem(model_version)
    return ranking_dir(model_dir, project_id) / f"{stem}{_CACHE_SUFFIX}"


def save_ranking(path: Path, ranking: Mapping[str, Any]) -> Path:
    """Write a ranking document atomically (temp file + os.replace)."""
    atomic_write(path, json.dumps(ranking, separators=(",", ":")).encode("utf-8"))
    return path


def load_ranking(model_dir: Path, project_id: int, model_version: str) -> dict[str, Any] | None:
    """The stored ranking of `model_version`, or None (missing or unreadable)."""
    path = ranking_path(model_dir, project_id, model_version)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _read_ranking(str(path), stat.st_mtime_ns, stat.st_size)


def precomputed_prediction(
    model_dir: Path,
    project_id: int,
    task_id: int,
    model_version: str,
    *,
    image_ref: str | None = None,
) -> dict[str, Any] | None:
    """The ranked prediction of a task, for `/predict` to answer without the detector.

    Returns `{"result", "score", "model_version"}` (a fresh copy) when the project's stored
    ranking is of `model_version` and holds the task, and (if `image_ref` is given) the task
    still points at the image that was ranked; else None. Reads are cached per file version,
    so a call is a dict lookup once the file has been read.
    """
    ranking = load_ranking(model_dir, project_id, model_version)
    if ranking is None or ranking.get("model_version") != model_version:
        return None
    entry = ranking.get("tasks", {}).get(str(int(task_id)))
    if not isinstance(entry, dict):
        return None
    if image_ref is not None and entry.get("ref") != image_ref:
        return None
    return {
        "result": copy.deepcopy(entry["result"]),
        "score": entry["score"],
        "model_version": model_version,
    }


@functools.lru_cache(maxsize=8)
def _read_ranking(path: str, _mtime_ns: int, _size: int) -> dict[str, Any] | None:
    """Parse a ranking file; keyed by its mtime and size, so a rewrite is read afresh."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable ranking %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _remove_other_versions(folder: Path, keep_version: str) -> None:
    """Delete ranking and detection files of every other model version."""
    if not folder.is_dir():
        return
    stem = version_file_stem(keep_version)
    keep = {f"{stem}{_RANKING_SUFFIX}", f"{stem}{_CACHE_SUFFIX}"}
    for path in folder.iterdir():
        if path.name.endswith((_RANKING_SUFFIX, _CACHE_SUFFIX)) and path.name not in keep:
            path.unlink(missing_ok=True)
            logger.debug("removed %s (older model version)", path)


# ------------------------------------------------------------------------ detection cache
@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One task's detections as arrays: what ranking needs, cheap to store and reload."""

    ref: str  # the task's image reference when it was predicted
    width: int
    height: int
    xyxy: Float32Array  # (k, 4) pixels
    class_ids: IntArray  # (k,)
    conf: Float32Array  # (k,)
    class_scores: Float32Array  # (k, n_classes)

    @classmethod
    def from_detections(
        cls, ref: str, image: LoadedImage, found: ImageDetections, n_classes: int
    ) -> ImageRecord:
        boxes = found.boxes
        return cls(
            ref=ref,
            width=int(image.width),
            height=int(image.height),
            xyxy=np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32).reshape(
                -1, 4
            ),
            class_ids=np.array([b.class_id for b in boxes], dtype=np.int64),
            conf=np.array([b.conf for b in boxes], dtype=np.float32),
            class_scores=(
                np.stack([np.asarray(b.class_scores, dtype=np.float32) for b in boxes])
                if boxes
                else np.zeros((0, n_classes), dtype=np.float32)
            ),
        )

    def boxes(self, min_conf: float = 0.0) -> tuple[Box, ...]:
        """The detections at or above `min_conf` as `Box`es (for Label Studio regions)."""
        boxes = []
        for i in np.flatnonzero(self.conf >= min_conf):
            x1, y1, x2, y2 = (float(v) for v in self.xyxy[i])
            cls, conf = int(self.class_ids[i]), float(self.conf[i])
            boxes.append(Box(x1, y1, x2, y2, cls, conf, self.class_scores[i]))
        return tuple(boxes)


class DetectionCache:
    """Detections per task id for one model version and inference setup, kept on disk.

    Re-ranking with the same model then only runs the detector on new or changed tasks. The
    `signature` (model version, image size, confidence floor, ...) is stored with the data;
    a file written under another signature is ignored.
    """

    def __init__(self, path: Path, signature: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.signature = json.dumps(dict(signature), sort_keys=True)
        self._records: dict[int, ImageRecord] = {}
        self._dirty = False
        if self.path.is_file():
            self._load()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, task_id: int, ref: str) -> ImageRecord | None:
        """The cached record of a task, or None when absent or its image reference changed."""
        record = self._records.get(int(task_id))
        return record if record is not None and record.ref == ref else None

    def put(self, task_id: int, record: ImageRecord) -> None:
        self._records[int(task_id)] = record
        self._dirty = True

    def retain(self, task_ids: set[int]) -> None:
        """Forget tasks that no longer exist in the project."""
        gone = [t for t in self._records if t not in task_ids]
        for task_id in gone:
            del self._records[task_id]
        self._dirty = self._dirty or bool(gone)

    def save(self) -> None:
        """Write atomically when something changed."""
        if not self._dirty:
            return
        ids = sorted(self._records)
        records = [self._records[t] for t in ids]
        n_classes = max((r.class_scores.shape[1] for r in records), default=0)
        counts = np.array([r.class_ids.shape[0] for r in records], dtype=np.int64)
        arrays = {
            "signature": np.array(self.signature),
            "task_ids": np.array(ids, dtype=np.int64),
            "refs": np.array([r.ref for r in records], dtype=np.str_),
            "sizes": np.array([[r.width, r.height] for r in records], dtype=np.int64).reshape(
                -1, 2
            ),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "xyxy": _stack([r.xyxy for r in records], (0, 4), np.float32),
            "class_ids": _stack([r.class_ids for r in records], (0,), np.int64),
            "conf": _stack([r.conf for r in records], (0,), np.float32),
            "class_scores": _stack([r.class_scores for r in records], (0, n_classes), np.float32),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp.npz")
        try:
            np.savez(temp, **arrays)
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)
        self._dirty = False

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["signature"]) != self.signature:
                    logger.info("detection cache %s is for another setup: ignored", self.path)
                    return
                offsets = data["offsets"]
                xyxy, class_ids = data["xyxy"], data["class_ids"]
                conf, scores = data["conf"], data["class_scores"]
                for i, (task_id, ref, size) in enumerate(
                    zip(data["task_ids"], data["refs"], data["sizes"], strict=True)
                ):
                    lo, hi = int(offsets[i]), int(offsets[i + 1])
                    self._records[int(task_id)] = ImageRecord(
                        ref=str(ref),
                        width=int(size[0]),
                        height=int(size[1]),
                        xyxy=xyxy[lo:hi],
                        class_ids=class_ids[lo:hi],
                        conf=conf[lo:hi],
                        class_scores=scores[lo:hi],
                    )
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("ignoring unreadable detection cache %s: %s", self.path, exc)
            self._records.clear()


def _stack(parts: list[npt.NDArray[Any]], empty: tuple[int, ...], dtype: type) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty, dtype=dtype)


# ------------------------------------------------------------------------ the ranking job
@dataclass
class _Task:
    """A task as the ranking needs it."""

    id: int
    ref: object  # the image reference in task data (validated when loaded)
    labeled: bool
    predictions: list[ExistingPrediction]


def rank_project(
    *,
    settings: Settings,
    detectors: DetectorPool,
    images: ImageLoader,
    ls: LabelStudioClient,
    registry: ModelRegistry,
    project_id: int,
    strategy: str = DEFAULT_STRATEGY,
    strategy_params: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    clusters: bool = True,
    progress: ProgressCallback | None = None,
) -> RankSummary:
    """Rank a project's unlabeled tasks with the live model and write the queue to Label Studio.

    Args:
        settings, detectors, images, ls, registry: the process's built services.
        project_id: the Label Studio project.
        strategy: a `strategies` registry name (default "hybrid", lam=0.5).
        strategy_params: its parameters, e.g. {"lam": 0.5, "n_clusters": 8}.
        batch_size: how many tasks the strategy picks as its batch (the head of the queue).
        clusters: write `cluster` ids (new predictions one request each). False leaves them
            out and creates new predictions in bulk, much faster for large projects; the
            queue (scores) is the same, but Label Studio then cannot rebalance clusters per
            annotator.
        progress: called after each detector chunk and write batch; it may raise
            `RankingCancelled` to stop (the detections computed so far are kept).

    Raises:
        RankingConfigError, ProjectNotFound, LabelStudioApiError, RankingBusy,
        RankingCancelled; LabelConfigError and ModelError from the label config and model;
        ConfigError when Label Studio's URL or key are not set.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RankingConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    try:
        chosen = get_strategy(strategy, **dict(strategy_params or {}))
    except ValueError as exc:
        raise RankingConfigError(str(exc)) from None
    job = _RankJob(settings, detectors, images, ls, registry, int(project_id), progress)
    with _project_lock(ranking_dir(settings.model_dir, project_id), int(project_id)):
        return job.run(chosen, batch_size, clusters)


class _RankJob:
    """The state of one `rank_project` call, stage by stage."""

    def __init__(
        self,
        settings: Settings,
        detectors: DetectorPool,
        images: ImageLoader,
        ls: LabelStudioClient,
        registry: ModelRegistry,
        project_id: int,
        progress: ProgressCallback | None,
    ) -> None:
        self.settings = settings
        self.detectors = detectors
        self.images = images
        self.ls = ls
        self.registry = registry
        self.project_id = project_id
        self.progress = progress
        self.version = ""
        self.write_clusters = True
        self.value_key = ""  # the task data field holding the ranked image
        self.timings: dict[str, float] = {}

    # -- orchestration ---------------------------------------------------------------------
    def run(self, strategy: Strategy, batch_size: int, clusters: bool) -> RankSummary:
        started = time.perf_counter()
        self.write_clusters = clusters
        sdk = self.ls.sdk
        project = self._call(
            "reading the project", lambda: sdk.projects.get(id=self.project_id), project_call=True
        )
        config = parse_label_config(str(project.label_config or ""))
        controls = self._primary_controls(config.controls)
        first = controls[0]
        self.value_key = first.value_key
        detector = self.detectors.get(
            self.detectors.source_for(self.project_id, first.labels, first.model_path)
        )
        self.version = detector.version
        tasks = self._fetch_tasks()
        self.timings["fetch"] = time.perf_counter() - started
        labeled = [t for t in tasks if t.labeled]
        unlabeled = [t for t in tasks if not t.labeled]
        logger.info(
            "project=%s model_version=%s ranking %d unlabeled tasks (%d labeled) with %s",
            self.project_id,
            self.version,
            len(unlabeled),
            len(labeled),
            strategy.name,
        )

        folder = ranking_dir(self.settings.model_dir, self.project_id)
        _remove_other_versions(folder, self.version)
        index = EmbeddingIndex.open(self.settings.model_dir, self.project_id, self.version)
        cache = DetectionCache(
            detection_cache_path(self.settings.model_dir, self.project_id, self.version),
            {
                "model_version": self.version,
                "image_size": self.settings.image_size,
                "detect_conf_floor": self.settings.detect_conf_floor,
                "classes": list(detector.names),
            },
        )
        cache.retain({t.id for t in tasks})
        index.remove(np.setdiff1d(index.ids(), np.array([t.id for t in tasks], dtype=np.int64)))

        records, failed, n_predicted = self._detect(detector, unlabeled + labeled, index, cache)
        ranked = [t for t in unlabeled if t.id in records]
        self.timings["predict"] = time.perf_counter() - started - self.timings["fetch"]

        tick = time.perf_counter()
        selection = self._select(
            strategy, batch_size, ranked, labeled, records, index, detector, controls
        )
        queue, desired, entries = self._queue(
            selection, ranked, tasks, records, detector.names, controls, clusters
        )
        self.timings["select"] = time.perf_counter() - tick

        tick = time.perf_counter()
        existing = {t.id: t.predictions for t in tasks}
        plan = plan_writes(desired, existing, self.version, retire=[t.id for t in unlabeled])
        self._write(plan)
        self._update_project(project)
        view_id = self._ensure_view()
        self.timings["write"] = time.perf_counter() - tick

        path = ranking_path(self.settings.model_dir, self.project_id, self.version)
        save_ranking(
            path,
            {
                "project_id": self.project_id,
                "model_version": self.version,
                "strategy": strategy.name,
                "created_at": time.time(),
                "n_ranked": len(ranked),
                "tasks": entries,
            },
        )
        self.timings["total"] = time.perf_counter() - started
        top = [ranked[i].id for i in queue[:batch_size]]
        summary = RankSummary(
            project_id=self.project_id,
            model_version=self.version,
            strategy=strategy.name,
            n_tasks=len(tasks),
            n_labeled=len(labeled),
            n_ranked=len(ranked),
            n_failed=len([t for t in unlabeled if t.id in failed]),
            n_predicted=n_predicted,
            n_reused=len(records) - n_predicted,
            created=len(plan.create),
            updated=len(plan.update),
            deleted=len(plan.delete),
            unchanged=plan.unchanged,
            view_id=view_id,
            top_task_ids=tuple(top),
            timings=dict(self.timings),
            ranking_path=path,
        )
        logger.info(
            "project=%s model_version=%s ranked %d tasks in %.1fs (%.1f tasks/s; predicted %d, "
            "reused %d, failed %d; predictions created %d, updated %d, deleted %d, "
            "unchanged %d); first: %s",
            self.project_id,
            self.version,
            summary.n_ranked,
            self.timings["total"],
            summary.tasks_per_s,
            summary.n_predicted,
            summary.n_reused,
            summary.n_failed,
            summary.created,
            summary.updated,
            summary.deleted,
            summary.unchanged,
            list(summary.top_task_ids[:5]),
        )
        return summary

    # -- stage 1: Label Studio reads -------------------------------------------------------
    def _primary_controls(self, controls: Sequence[BoxControl]) -> list[BoxControl]:
        """The controls over the first control's image field: they share one detection."""
        field_key = controls[0].value_key
        chosen = [c for c in controls if c.value_key == field_key]
        if len(chosen) < len(controls):
            logger.warning(
                "project=%s ranking uses image field %r only; controls over other image "
                "fields get no pre-annotation from the ranking",
                self.project_id,
                field_key,
            )
        return chosen

    def _fetch_tasks(self) -> list[_Task]:
        sdk = self.ls.sdk
        tasks: list[_Task] = []

        def collect() -> None:
            pager = sdk.tasks.list(
                project=self.project_id, fields="all", include=_TASK_FIELDS, page_size=PAGE_SIZE
            )
            for item in pager:
                tasks.append(self._task(_as_dict(item)))

        self._call("listing tasks", collect)
        return tasks

    def _task(self, raw: Mapping[str, Any]) -> _Task:
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        predictions = []
        for p in raw.get("predictions") or []:
            item = _as_dict(p)
            score = item.get("score")
            cluster = item.get("cluster")
            predictions.append(
                ExistingPrediction(
                    id=int(item["id"]),
                    task=int(raw["id"]),
                    model_version=str(item.get("model_version") or ""),
                    score=float(score) if isinstance(score, int | float) else None,
                    cluster=int(cluster) if isinstance(cluster, int) else None,
                    result=list(item.get("result") or []),
                )
            )
        return _Task(
            id=int(raw["id"]),
            ref=data.get(self.value_key) if data else None,
            labeled=int(raw.get("total_annotations") or 0) > 0,
            predictions=predictions,
        )

    # -- stage 2: detections ---------------------------------------------------------------
    def _detect(
        self,
        detector: Detector,
        tasks: list[_Task],
        index: EmbeddingIndex,
        cache: DetectionCache,
    ) -> tuple[dict[int, ImageRecord], dict[int, str], int]:
        """Detections for every task, from the cache or the detector; saves both stores."""
        records: dict[int, ImageRecord] = {}
        failed: dict[int, str] = {}
        todo: list[_Task] = []
        for task in tasks:
            ref = task.ref if isinstance(task.ref, str) else None
            cached = cache.get(task.id, ref) if ref is not None else None
            if cached is not None and task.id in index:
                records[task.id] = cached
            else:
                todo.append(task)
        if not todo:
            return records, failed, 0
        chunk = max(16, 2 * self.settings.predict_batch)
        n_classes = len(detector.names)
        started = last_log = time.perf_counter()
        done = 0
        try:
            with ThreadPoolExecutor(LOAD_WORKERS, thread_name_prefix="rank-load") as loaders:
                pending = [loaders.submit(self._load, t) for t in todo[:chunk]]
                for start in range(0, len(todo), chunk):
                    batch = todo[start : start + chunk]
                    loaded = [f.result() for f in pending]
                    upcoming = todo[start + chunk : start + 2 * chunk]
                    pending = [loaders.submit(self._load, t) for t in upcoming]
                    ok: list[tuple[_Task, LoadedImage]] = []
                    for task, image in zip(batch, loaded, strict=True):
                        if isinstance(image, LoadedImage):
                            ok.append((task, image))
                        else:
                            failed[task.id] = image
                    found = detector.predict([image.pixels for _, image in ok]) if ok else []
                    for (task, image), detections in zip(ok, found, strict=True):
                        record = ImageRecord.from_detections(
                            str(task.ref), image, detections, n_classes
                        )
                        cache.put(task.id, record)
                        records[task.id] = record
                    if ok:
                        index.upsert(
                            [t.id for t, _ in ok],
                            np.stack([d.embedding for d in found]).astype(np.float32),
                        )
                    done += len(batch)
                    now = time.perf_counter()
                    report = RankProgress(
                        self.project_id, self.version, "predict", done, len(todo), now - started
                    )
                    if now - last_log >= _LOG_EVERY_S or done == len(todo):
                        last_log = now
                        logger.info(
                            "project=%s model_version=%s predicted %d/%d tasks "
                            "(%.1f tasks/s, ETA %.0fs)",
                            self.project_id,
                            self.version,
                            done,
                            len(todo),
                            report.rate,
                            report.eta_s or 0.0,
                        )
                    if self.progress is not None:
                        self.progress(report)
                for future in pending:
                    future.cancel()
        finally:
            index.save()
            cache.save()
        if failed:
            logger.warning(
                "project=%s model_version=%s %d task image(s) could not be loaded, e.g. task "
                "%s: %s",
                self.project_id,
                self.version,
                len(failed),
                next(iter(failed)),
                next(iter(failed.values())),
            )
        return records, failed, len(todo) - len(failed)

    def _load(self, task: _Task) -> LoadedImage | str:
        """The task's image, or the reason it failed (never raises ImageError)."""
        try:
            if task.ref is None:
                raise ImageError(f"task data has no {self.value_key!r} field")
            return self.images.load(task.ref)
        except ImageError as exc:
            return str(exc)

    # -- stage 3: selection ----------------------------------------------------------------
    def _select(
        self,
        strategy: Strategy,
        batch_size: int,
        ranked: list[_Task],
        labeled: list[_Task],
        records: Mapping[int, ImageRecord],
        index: EmbeddingIndex,
        detector: Detector,
        controls: Sequence[BoxControl],
    ) -> Selection:
        if not ranked:
            empty = np.zeros(0, dtype=np.int64)
            return Selection(empty, np.zeros(0), empty.copy(), 0, strategy.name)
        mapped = mapped_class_mask(detector.names, controls)
        labeled_ids = [t.id for t in labeled if t.id in records]
        live = self.registry.live(self.project_id)
        class_ap = None
        if live is not None and live.version == self.version:
            class_ap = class_ap_vector(live.meta, detector.names)
        pool = Pool(
            box_scores=[pool_box_scores(records[t.id], mapped) for t in ranked],
            embeddings=index.get([t.id for t in ranked]),
            labeled_embeddings=index.get(labeled_ids) if labeled_ids else None,
            class_ap=class_ap,
        )
        return strategy.select(pool, batch_size)

    def _queue(
        self,
        selection: Selection,
        ranked: list[_Task],
        tasks: list[_Task],
        records: Mapping[int, ImageRecord],
        names: Sequence[str],
        controls: Sequence[BoxControl],
        clusters: bool,
    ) -> tuple[IntArray, dict[int, DesiredPrediction], dict[str, dict[str, Any]]]:
        """The queue (pool indices, first served first), each ranked task's prediction for
        Label Studio, and the entries stored for `/predict`."""
        n = len(ranked)
        queue = queue_order(selection.order, selection.clusters) if n else np.zeros(0, np.int64)
        scores = queue_scores(queue)
        positions = np.empty(n, dtype=np.int64)
        positions[queue] = np.arange(n, dtype=np.int64)
        # Cluster ids start above every cluster on predictions this run does not replace
        # (Label Studio counts the clusters of labeled tasks via their highest cluster id).
        replaced = {p.id for t in ranked for p in t.predictions if p.model_version == self.version}
        base = 1 + max(
            (
                p.cluster
                for t in tasks
                for p in t.predictions
                if p.cluster is not None and p.id not in replaced
            ),
            default=-1,
        )
        ranks = selection.ranks
        desired: dict[int, DesiredPrediction] = {}
        entries: dict[str, dict[str, Any]] = {}
        for i, task in enumerate(ranked):
            record = records[task.id]
            prediction = DesiredPrediction(
                result=self._regions(record, names, controls),
                score=float(scores[i]),
                cluster=int(base + selection.clusters[i]) if clusters else None,
            )
            desired[task.id] = prediction
            entries[str(task.id)] = {
                "result": prediction.result,
                "score": prediction.score,
                "cluster": prediction.cluster,
                "model_version": self.version,
                "rank": int(positions[i]),
                "strategy_rank": int(ranks[i]),
                "strategy_score": float(selection.scores[i]),
                "ref": record.ref,
            }
        return queue, desired, entries

    def _regions(
        self, record: ImageRecord, names: Sequence[str], controls: Sequence[BoxControl]
    ) -> list[dict[str, Any]]:
        regions: list[dict[str, Any]] = []
        for control in controls:
            threshold = (
                control.score_threshold
                if control.score_threshold is not None
                else self.settings.score_threshold
            )
            regions.extend(
                ls_format.control_regions(
                    record.boxes(threshold),
                    names,
                    control,
                    record.width,
                    record.height,
                    threshold,
                )
            )
        return regions

    # -- stage 4: Label Studio writes ------------------------------------------------------
    def _write(self, plan: WritePlan) -> None:
        sdk = self.ls.sdk
        jobs: list[tuple[str, Callable[[], object]]] = []
        for prediction_id in plan.delete:
            jobs.append(
                (
                    f"deleting prediction {prediction_id}",
                    functools.partial(self._delete_prediction, sdk, prediction_id),
                )
            )
        for prediction_id, fields in plan.update:
            jobs.append(
                (
                    f"updating prediction {prediction_id}",
                    functools.partial(sdk.predictions.update, prediction_id, **fields),
                )
            )
        creates = plan.create if self.write_clusters else ()
        for task_id, want in creates:
            jobs.append(
                (
                    f"creating a prediction for task {task_id}",
                    functools.partial(
                        sdk.predictions.create,
                        task=task_id,
                        result=want.result,
                        score=want.score,
                        cluster=want.cluster,
                        model_version=self.version,
                        project=self.project_id,
                    ),
                )
            )
        if not self.write_clusters:
            self._bulk_create(sdk, plan.create)
        if not jobs:
            return
        errors: list[str] = []
        started = time.perf_counter()
        with ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="rank-write") as writers:
            futures: list[tuple[str, Future[object]]] = [
                (what, writers.submit(self._guarded, what, call)) for what, call in jobs
            ]
            for done, (_, future) in enumerate(futures, start=1):
                error = future.result()
                if isinstance(error, str):
                    errors.append(error)
                if self.progress is not None and (done % 50 == 0 or done == len(futures)):
                    self.progress(
                        RankProgress(
                            self.project_id,
                            self.version,
                            "write",
                            done,
                            len(futures),
                            time.perf_counter() - started,
                        )
                    )
        if errors:
            raise LabelStudioApiError(
                f"{len(errors)} of {len(jobs)} prediction writes failed; first: {errors[0]}"
            )

    def _bulk_create(self, sdk: Any, creates: Sequence[tuple[int, DesiredPrediction]]) -> None:
        """Create predictions without clusters through the bulk import, in chunks."""
        for start in range(0, len(creates), BULK_CHUNK):
            chunk = creates[start : start + BULK_CHUNK]
            items = [
                {
                    "task": task_id,
                    "result": want.result,
                    "score": want.score,
                    "model_version": self.version,
                }
                for task_id, want in chunk
            ]
            self._call(
                f"importing {len(items)} predictions",
                lambda items=items: sdk.projects.import_predictions(
                    id=self.project_id, request=items
                ),
            )

    def _guarded(self, what: str, call: Callable[[], object]) -> str | None:
        """Run one write; return its error message instead of raising (collected above)."""
        try:
            self._call(what, call)
        except LabelStudioApiError as exc:
            return str(exc)
        return None

    def _delete_prediction(self, sdk: Any, prediction_id: int) -> None:
        from label_studio_sdk.core.api_error import ApiError  # noqa: PLC0415

        try:
            sdk.predictions.delete(prediction_id)
        except ApiError as exc:
            if exc.status_code != 404:  # already gone is what we wanted
                raise

    def _update_project(self, project: Any) -> None:
        changes: dict[str, Any] = {}
        if project.model_version != self.version:
            changes["model_version"] = self.version
        if project.sampling != UNCERTAINTY_SAMPLING:
            changes["sampling"] = UNCERTAINTY_SAMPLING
        if changes:
            sdk = self.ls.sdk
            self._call(
                "updating the project",
                lambda: sdk.projects.update(id=self.project_id, **changes),
            )
            logger.info("project=%s set %s", self.project_id, sorted(changes))

    def _ensure_view(self) -> int | None:
        """Create or update the "Active learning queue" Data Manager tab; returns its id."""
        sdk = self.ls.sdk
        data = queue_view_data()
        views = self._call(
            "listing Data Manager tabs", lambda: sdk.views.list(project=self.project_id)
        )
        for view in views:
            current = view.data if isinstance(view.data, dict) else {}
            if current.get("title") != QUEUE_VIEW_TITLE:
                continue
            wanted = {**current, **data}
            if wanted != current:
                self._call(
                    "updating the queue tab",
                    lambda view=view, wanted=wanted: sdk.views.update(
                        str(view.id), data=wanted, project=self.project_id
                    ),
                )
            return int(view.id) if view.id is not None else None
        created = self._call(
            "creating the queue tab", lambda: sdk.views.create(project=self.project_id, data=data)
        )
        logger.info("project=%s created Data Manager tab %r", self.project_id, QUEUE_VIEW_TITLE)
        return int(created.id) if created.id is not None else None

    # -- helpers ---------------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], Any], *, project_call: bool = False) -> Any:
        """Run one Label Studio call, turning SDK and transport errors into ranking errors.

        `project_call`: a 404 means the project itself is missing (ProjectNotFound).
        """
        import httpx  # noqa: PLC0415
        from label_studio_sdk.core.api_error import ApiError  # noqa: PLC0415

        try:
            return call()
        except ApiError as exc:
            if exc.status_code == 404 and project_call:
                raise ProjectNotFound(f"Label Studio has no project {self.project_id}") from None
            message = f"{what} failed: HTTP {exc.status_code}: {_short(exc.body)}"
        except httpx.HTTPError as exc:
            message = f"{what} failed: {type(exc).__name__}"
        logger.error(
            "project=%s model_version=%s %s", self.project_id, self.version or "-", message
        )
        raise LabelStudioApiError(message)


def queue_view_data() -> dict[str, Any]:
    """The Data Manager tab: unlabeled tasks by ascending prediction score (the queue)."""
    return {
        "title": QUEUE_VIEW_TITLE,
        "ordering": list(QUEUE_ORDERING),
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
    }


@contextmanager
def _project_lock(folder: Path, project_id: int) -> Iterator[None]:
    """One ranking per project at a time, across threads and processes (flock)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RankingBusy(f"project {project_id} is already being ranked") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return dict(item.model_dump())
    return dict(item.dict())


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def rank_as_configured(
    settings: Settings,
    project_id: int,
    *,
    overrides: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    detectors: DetectorPool | None = None,
) -> RankSummary:
    """Rank with the project's queue settings (extra params saved at /setup, tag attributes),
    `overrides` (al_* keys, e.g. from the CLI) on top; builds the services it needs.

    The one entry point of the trainer (after a promotion or START_TRAINING) and the CLI.
    """
    from backend.ranking.queue_config import queue_config  # noqa: PLC0415  (avoid an import cycle)
    from backend.training.trainer import project_extra_params  # noqa: PLC0415

    registry = ModelRegistry(settings.model_dir)
    ls = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)
    extra = {**project_extra_params(registry, project_id), **dict(overrides or {})}
    project = ls.sdk.projects.get(id=project_id)
    controls = parse_label_config(project.label_config or "").controls
    config = queue_config(extra, controls[0].queue_attributes)
    return rank_project(
        settings=settings,
        detectors=detectors or DetectorPool(settings, registry),
        images=ImageLoader(settings, ls),
        ls=ls,
        registry=registry,
        project_id=project_id,
        strategy=config.strategy,
        strategy_params=config.params,
        batch_size=config.batch_size,
        clusters=config.clusters,
        progress=progress,
    )
