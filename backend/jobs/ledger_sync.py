"""Keeps the annotation ledger in step with Label Studio: each annotation the webhook reports
is recorded (or, when deleted, forgotten) by the background trainer's loop, and `backfill`
reads a project's whole history.

Each annotation is compared with the prediction it started from. Webhook payloads carry only
the prediction's id, so the prediction is fetched; one that Label Studio no longer has leaves
the annotation out (counting its boxes as drawn would be a wrong answer, not a missing one).
The ranking never causes that: it writes each queue as a new queue version and removes old
versions whole, but first moves their predictions on annotated tasks to the detector's version
(`backend.labelstudio.predictions.keep_annotated`), so an annotation's prediction stays in
Label Studio, with its id, for as long as the annotation (only someone deleting predictions by
hand removes it). The task's queue position comes from the stored ranking of the prediction's
queue version, while that ranking is still on disk (the next ranking replaces it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.analytics.ledger import AnnotationRecord
from backend.analytics.records import annotation_record, parent_prediction_id
from backend.errors import LabelConfigError
from backend.events import Event
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.predictions import ProjectNotFound, read_prediction, read_project
from backend.labelstudio.versions import parse_queue_version
from backend.ranking.store import load_ranking
from backend.services import Services
from backend.training.dataset import fetch_annotated_tasks

logger = logging.getLogger(__name__)

SYNC_BATCH = 500  # events taken in per call
RECORDED_ACTIONS = {"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"}
DELETED_ACTION = "ANNOTATIONS_DELETED"


@dataclass(frozen=True)
class SyncSummary:
    recorded: int
    forgotten: int
    without_prediction: int  # parent prediction gone from Label Studio: left out


def backfill(services: Services, project_id: int) -> SyncSummary:
    """Record every annotation the project has (replacing earlier rows of the same ids)."""
    ls = services.label_studio
    from_names = box_controls(ls, project_id)
    records: list[AnnotationRecord] = []
    missing = 0
    for task in fetch_annotated_tasks(ls.sdk, project_id):
        known = {p.get("id"): p for p in task.get("predictions") or [] if isinstance(p, dict)}
        for annotation in task.get("annotations") or []:
            record = _record(services, project_id, int(task["id"]), annotation, from_names, known)
            if record is None:
                missing += 1
            else:
                records.append(record)
    services.ledger.record(records)
    logger.info(
        "project=%s ledger backfill: %d annotations recorded, %d without their prediction",
        project_id,
        len(records),
        missing,
    )
    return SyncSummary(len(records), 0, missing)


def sync_events(services: Services, batch: int = SYNC_BATCH) -> SyncSummary:
    """Take in the webhook events after the ledger's cursor, up to `batch` of them: record
    their annotations, forget deleted ones, move the cursor past them.

    An event whose project or prediction Label Studio cannot give for good (no such project,
    a broken label config) is logged and passed over; when Label Studio cannot be reached
    the events stay for the next call. Without LABEL_STUDIO_URL/API_KEY nothing is read.
    """
    if not services.label_studio.configured:
        return SyncSummary(0, 0, 0)
    ledger = services.ledger
    events = services.events.since(ledger.event_cursor(), batch)
    records: list[AnnotationRecord] = []
    forgotten: list[int] = []
    missing = 0
    controls: dict[int, set[str]] = {}
    for event in events:
        if event.action == DELETED_ACTION:
            forgotten += event.annotation_ids
            continue
        if event.action not in RECORDED_ACTIONS:
            continue
        try:
            if event.project_id not in controls:
                controls[event.project_id] = box_controls(services.label_studio, event.project_id)
            found, lost = _event_records(services, event, controls[event.project_id])
        except (ProjectNotFound, LabelConfigError) as exc:
            logger.warning("project=%s event=%s not recorded: %s", event.project_id, event.id, exc)
            continue
        records += found
        missing += lost
    if events:
        ledger.record_events(records, forgotten, events[-1].id)
    return SyncSummary(len(records), len(forgotten), missing)


def _event_records(
    services: Services, event: Event, from_names: set[str]
) -> tuple[list[AnnotationRecord], int]:
    """The records of one event's annotations, and how many lost their prediction."""
    payload = event.payload or {}
    task = payload.get("task") or {}
    records, missing = [], 0
    for annotation in payload.get("annotations") or [payload.get("annotation")]:
        if not isinstance(annotation, dict):
            continue
        task_id = annotation.get("task") or task.get("id")
        if not isinstance(task_id, int):
            continue
        try:
            record = _record(services, event.project_id, task_id, annotation, from_names, {})
        except ValueError as exc:  # a payload without an annotation id: nothing to key it by
            logger.warning("project=%s event=%s: %s", event.project_id, event.id, exc)
            continue
        if record is None:
            missing += 1
        else:
            records.append(record)
    return records, missing


def box_controls(ls: LabelStudioClient, project_id: int) -> set[str]:
    """The RectangleLabels controls over the project's first image field (training's)."""
    config = parse_label_config(str(read_project(ls, project_id).label_config or ""))
    return {c.from_name for c in config.primary_controls}


def _record(
    services: Services,
    project_id: int,
    task_id: int,
    annotation: Mapping[str, Any],
    from_names: set[str],
    known: Mapping[object, Mapping[str, Any]],
) -> AnnotationRecord | None:
    parent = parent_prediction_id(annotation)
    prediction = None
    if parent is not None:
        prediction = known.get(parent) or read_prediction(services.label_studio, project_id, parent)
        if prediction is None:
            logger.warning(
                "project=%s task=%s annotation=%s: its prediction %s is gone; not recorded",
                project_id,
                task_id,
                annotation.get("id"),
                parent,
            )
            return None
    return annotation_record(
        project_id,
        task_id,
        annotation,
        prediction,
        from_names,
        _queue_position(services, project_id, task_id, prediction),
    )


def _queue_position(
    services: Services, project_id: int, task_id: int, prediction: Mapping[str, Any] | None
) -> int | None:
    queue = parse_queue_version(None if prediction is None else prediction.get("model_version"))
    if queue is None:  # not a queue's prediction (or moved to its detector's version)
        return None
    ranking = load_ranking(services.settings.model_dir, project_id, queue.model_version)
    if (ranking or {}).get("queue_version") != str(queue):  # the queue was ranked again since
        return None
    entry = ((ranking or {}).get("tasks") or {}).get(str(task_id))
    rank = None if entry is None else entry.get("rank")
    return rank if isinstance(rank, int) else None
