"""The queue's maths, pure: from detections to a strategy's batch, from its order to the scores
and clusters Label Studio serves, and from what Label Studio holds to the writes that fix it.

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
  predictions this run does not replace (`cluster_offset`), so clusters of older runs (on
  labeled tasks) never count against the new ones.

The pool a strategy sees holds the class-score vectors of ALL kept boxes (down to
DETECT_CONF_FLOOR) of the classes the label config maps; the pre-annotation shows only the
boxes at or above each control's score threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.analytics.cost import ActionSeconds
from backend.labelstudio import format as ls_format
from backend.labelstudio.label_config import BoxControl
from backend.labelstudio.predictions import DesiredPrediction, ExistingPrediction, WritePlan
from backend.ranking.detection_cache import ImageRecord
from strategies import Selection

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


# ---------------------------------------------------------------------------- the pool
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


def predicted_seconds(
    records: Sequence[ImageRecord], threshold: float, costs: ActionSeconds
) -> FloatArray:
    """(n,) annotator seconds each record's pre-annotation is predicted to cost
    (`ActionSeconds.expected`: boxes at or above `threshold` are shown, the others would be
    drawn if real). An image without any kept box costs what the others cost on average:
    nothing detected says nothing about how much there is to draw.
    """
    seconds = np.array(
        [costs.expected(r.conf[r.conf >= threshold], r.conf[r.conf < threshold]) for r in records],
        dtype=np.float64,
    )
    empty = np.array([r.conf.shape[0] == 0 for r in records], dtype=bool)
    if empty.any():
        seconds[empty] = seconds[~empty].mean() if (~empty).any() else costs.per_image
    return seconds


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


def empty_selection(strategy: str) -> Selection:
    """The selection over no tasks (a `Pool` needs at least one image, so no strategy runs)."""
    empty = np.zeros(0, dtype=np.int64)
    return Selection(empty, np.zeros(0), empty.copy(), 0, strategy)


# --------------------------------------------------------------------------- the queue
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


def cluster_offset(
    existing: Mapping[int, Sequence[ExistingPrediction]],
    ranked: Sequence[int],
    model_version: str,
) -> int:
    """The first cluster id the new predictions may use: above every cluster id on predictions
    this run does not replace (those of `model_version` on the `ranked` tasks are replaced).

    Label Studio counts an annotator's clusters through the cluster ids of the predictions on
    the tasks they labeled, so old ids must never coincide with new ones.
    """
    replaced = {
        p.id for task in ranked for p in existing.get(task, ()) if p.model_version == model_version
    }
    kept = (
        p.cluster
        for predictions in existing.values()
        for p in predictions
        if p.cluster is not None and p.id not in replaced
    )
    return 1 + max(kept, default=-1)


@dataclass(frozen=True)
class QueuedTask:
    """A ranked task's place in the queue and what the strategy thought of it."""

    task_id: int
    position: int  # in the queue Label Studio serves, 0 = first
    score: float  # the Label Studio score: position / n
    cluster: int | None  # the cluster id written (offset applied), None without clusters
    strategy_rank: int  # position in the strategy's own order
    strategy_score: float  # the strategy's score, higher = label sooner


def queue_tasks(
    selection: Selection,
    task_ids: Sequence[int],
    *,
    first_cluster: int,
    clusters: bool = True,
) -> tuple[QueuedTask, ...]:
    """Every ranked task's place in the queue, in pool order (`task_ids[i]` is pool index i).

    `first_cluster` (see `cluster_offset`) is added to the strategy's cluster ids; with
    `clusters=False` no cluster is written and the queue is served by score alone.
    """
    n = len(task_ids)
    if selection.order.shape != (n,):
        raise ValueError(f"the selection covers {selection.order.shape[0]} tasks, not {n}")
    queue = queue_order(selection.order, selection.clusters) if n else np.zeros(0, np.int64)
    scores = queue_scores(queue)
    positions = np.empty(n, dtype=np.int64)
    positions[queue] = np.arange(n, dtype=np.int64)
    ranks = selection.ranks
    return tuple(
        QueuedTask(
            task_id=int(task_id),
            position=int(positions[i]),
            score=float(scores[i]),
            cluster=int(first_cluster + selection.clusters[i]) if clusters else None,
            strategy_rank=int(ranks[i]),
            strategy_score=float(selection.scores[i]),
        )
        for i, task_id in enumerate(task_ids)
    )


def near_duplicate_marks(
    queued: Sequence[QueuedTask], groups: Mapping[int, int], labeled: Sequence[int]
) -> dict[int, int]:
    """For each queued task behind a near-duplicate, the task it copies: its group's labeled
    task with the smallest id, else the group's first task in the queue. `groups` maps a
    task id to its near-duplicate group (a task not in it is its own group)."""
    first: dict[int, int] = {}
    for task_id in sorted(labeled):
        first.setdefault(groups.get(task_id, task_id), task_id)
    marks: dict[int, int] = {}
    for q in sorted(queued, key=lambda q: q.position):
        head = first.setdefault(groups.get(q.task_id, q.task_id), q.task_id)
        if head != q.task_id:
            marks[q.task_id] = head
    return marks


def queue_head(queued: Sequence[QueuedTask], n: int) -> tuple[int, ...]:
    """The task ids of the first `n` places of the queue, first served first."""
    return tuple(q.task_id for q in sorted(queued, key=lambda q: q.position)[:n])


def task_regions(
    record: ImageRecord,
    names: Sequence[str],
    controls: Sequence[BoxControl],
    default_threshold: float,
) -> list[dict[str, Any]]:
    """The pre-annotation of a ranked task: each control's regions of the boxes at or above its
    `model_score_threshold` (else `default_threshold`: the model's calibrated threshold or
    MODEL_SCORE_THRESHOLD, `ModelSource.shown_from`)."""
    regions: list[dict[str, Any]] = []
    for control in controls:
        threshold = (
            control.score_threshold if control.score_threshold is not None else default_threshold
        )
        regions.extend(
            ls_format.control_regions(
                record.boxes(threshold), names, control, record.width, record.height, threshold
            )
        )
    return regions


def queue_predictions(
    queued: Sequence[QueuedTask],
    records: Mapping[int, ImageRecord],
    names: Sequence[str],
    controls: Sequence[BoxControl],
    default_threshold: float,
) -> dict[int, DesiredPrediction]:
    """What Label Studio must hold for each queued task: its pre-annotation (`task_regions`),
    queue score and cluster; by task id, in the order of `queued`."""
    return {
        q.task_id: DesiredPrediction(
            task_regions(records[q.task_id], names, controls, default_threshold), q.score, q.cluster
        )
        for q in queued
    }


# ---------------------------------------------------------------------------- the writes
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
