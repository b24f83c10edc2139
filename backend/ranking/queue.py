"""The queue's maths, pure: from detections to a strategy's batch, and from its order to the
scores Label Studio serves.

The queue (Label Studio 1.23, verified against a real server): `GET /api/projects/{id}/next`
with uncertainty sampling serves, among unlabeled tasks with a prediction of
`project.model_version`, the one with the LOWEST `score`. (It would first serve the `cluster` an
annotator has labeled least, but the bulk import that writes the queue stores no cluster, so
every task shares one and the score alone decides.)
* The strategy's order (higher = label sooner) is first made cluster-fair (`queue_order`: the
  best task of every diversity cluster, then the second best, ...; `n_clusters=1` keeps the
  strategy's order exactly), and the position p of a task in that queue of n tasks becomes its
  score: `score = p / n` (top pick 0.0, all scores in [0, 1)). Every annotator is served this
  queue in order (with several annotators Label Studio picks at random among the first
  annotators + 1 unlocked tasks, so they rarely collide). Label Studio's own balancing would
  give each annotator the same interleaving computed from their own labels; the order written
  here interleaves the clusters for the team as a whole, which is what the next model trains on.

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
from backend.labelstudio.predictions import DesiredPrediction
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
    """The queue: the strategy's order made cluster-fair.

    The best task of each diversity cluster (in strategy order), then the second best of
    each, and so on: a sort by (position inside the task's cluster, position in the
    strategy's order). It is the order Label Studio's cluster balancing would serve one
    annotator starting from clusters nobody has labeled, written as scores instead.

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


@dataclass(frozen=True)
class QueuedTask:
    """A ranked task's place in the queue and what the strategy thought of it."""

    task_id: int
    position: int  # in the queue Label Studio serves, 0 = first
    score: float  # the Label Studio score: position / n
    strategy_rank: int  # position in the strategy's own order
    strategy_score: float  # the strategy's score, higher = label sooner


def queue_tasks(selection: Selection, task_ids: Sequence[int]) -> tuple[QueuedTask, ...]:
    """Every ranked task's place in the queue, in pool order (`task_ids[i]` is pool index i)."""
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
    """What Label Studio must hold for each queued task: its pre-annotation (`task_regions`)
    and queue score; by task id, in the order of `queued`."""
    return {
        q.task_id: DesiredPrediction(
            task_regions(records[q.task_id], names, controls, default_threshold), q.score
        )
        for q in queued
    }
