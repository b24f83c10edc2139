"""A Label Studio annotation -> its ledger record: its boxes against those of the prediction
it started from (`parent_prediction`), matched one to one (`analytics.matching`). Pure: the
caller fetches the task, annotation and prediction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from backend.analytics.ledger import AnnotationRecord
from backend.analytics.matching import LabeledBox, edit_counts, match_boxes
from backend.labelstudio.regions import result_boxes


def parent_prediction_id(annotation: Mapping[str, Any]) -> int | None:
    """The id of the prediction the annotation started from, or None."""
    value = annotation.get("parent_prediction")
    if isinstance(value, Mapping):  # some payloads nest the prediction
        value = value.get("id")
    return _int(value)


def annotation_record(
    project_id: int,
    task_id: int,
    annotation: Mapping[str, Any],
    prediction: Mapping[str, Any] | None,
    from_names: Collection[str],
    queue_position: int | None = None,
) -> AnnotationRecord:
    """The ledger record of one annotation.

    Args:
        annotation: Label Studio's annotation JSON (id, result, completed_by, lead_time,
            was_cancelled, updated_at, parent_prediction).
        prediction: its parent prediction's JSON (result, model_version, id), or None when
            it did not start from one (every box is then drawn by hand).
        from_names: the box controls whose regions count.
        queue_position: the task's place in the queue when it was served, if known.

    Raises:
        ValueError: the annotation has no integer id.
    """
    annotation_id = _int(annotation.get("id"))
    if annotation_id is None:
        raise ValueError(f"annotation without an integer id: {annotation.get('id')!r}")
    cancelled = bool(annotation.get("was_cancelled"))
    submitted, shown = [], []
    if not cancelled:
        submitted = labeled_boxes(annotation.get("result"), from_names)
        if prediction is not None:
            shown = labeled_boxes(prediction.get("result"), from_names)
    counts = edit_counts(match_boxes(shown, submitted))
    return AnnotationRecord(
        annotation_id=annotation_id,
        project_id=int(project_id),
        task_id=int(task_id),
        annotator=_annotator(annotation.get("completed_by")),
        prediction_id=None if prediction is None else _int(prediction.get("id")),
        model_version=None if prediction is None else _text(prediction.get("model_version")),
        edits={edit.value: n for edit, n in counts.items()},
        lead_time=_seconds(annotation.get("lead_time")),
        queue_position=queue_position,
        cancelled=cancelled,
        annotated_at=_timestamp(annotation.get("updated_at") or annotation.get("created_at")),
    )


def labeled_boxes(result: object, from_names: Collection[str]) -> list[LabeledBox]:
    """A result's boxes (percent) with their labels, as the matching takes them."""
    return [LabeledBox(b.x1, b.y1, b.x2, b.y2, b.label) for b in result_boxes(result, from_names)]


def _annotator(value: object) -> str | None:
    """Label Studio gives completed_by as a user id, or as a user object in some payloads."""
    if isinstance(value, Mapping):
        value = value.get("email") or value.get("id")
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return None if value in (None, "") else str(value)


def _seconds(value: object) -> float | None:
    """A positive finite lead time, or None (Label Studio leaves it null for API imports)."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if 0 < seconds < float("inf") else None


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
