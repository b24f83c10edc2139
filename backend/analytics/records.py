"""A Label Studio annotation -> its ledger record: its boxes against those of the prediction
it started from (`parent_prediction`). Pure: the caller fetches the task, annotation and
prediction.

The editor keeps a predicted region's id when the annotator leaves the region in (Label
Studio 1.23, checked in tests/e2e/test_analytics.py), so a submitted region carrying a
predicted region's id is that region: accepted when its box and label are unchanged,
relabeled when its label changed, adjusted when only its box did (however far it moved).
Regions without a shared id (drawn, deleted, or annotations made outside the editor) are
matched one to one by IoU (`analytics.matching`).

The record's model version is the detector's (`v3` for a prediction of queue version `v3.q2`,
`labelstudio.versions`): the figures describe the model that drew the boxes, however many
times its queue was re-ranked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from backend.analytics.ledger import SHOWN, SUBMITTED, AnnotationRecord, LedgerBox
from backend.analytics.matching import Edit, LabeledBox, match_boxes
from backend.labelstudio.regions import RegionBox, result_boxes
from backend.labelstudio.versions import detector_version


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
    submitted: list[RegionBox] = []
    shown: list[RegionBox] = []
    if not cancelled:
        submitted = result_boxes(annotation.get("result"), from_names)
        if prediction is not None:
            shown = result_boxes(prediction.get("result"), from_names)
    counts, fates = region_edits(shown, submitted)
    boxes = tuple(
        LedgerBox(SHOWN, box.label, box.score, fate in (Edit.ACCEPTED, Edit.ADJUSTED))
        for box, fate in zip(shown, fates, strict=True)
    ) + tuple(LedgerBox(SUBMITTED, box.label) for box in submitted)
    return AnnotationRecord(
        annotation_id=annotation_id,
        project_id=int(project_id),
        task_id=int(task_id),
        annotator=_annotator(annotation.get("completed_by")),
        prediction_id=None if prediction is None else _int(prediction.get("id")),
        model_version=None if prediction is None else _model_version(prediction),
        edits={edit.value: n for edit, n in counts.items()},
        lead_time=_seconds(annotation.get("lead_time")),
        queue_position=queue_position,
        cancelled=cancelled,
        annotated_at=_timestamp(annotation.get("updated_at") or annotation.get("created_at")),
        boxes=boxes,
    )


def _model_version(prediction: Mapping[str, Any]) -> str | None:
    text = _text(prediction.get("model_version"))
    return None if text is None else detector_version(text)


def region_edits(
    shown: Sequence[RegionBox], submitted: Sequence[RegionBox]
) -> tuple[Counter[Edit], list[Edit]]:
    """The edits from the shown regions to the submitted ones, by region id where the two
    share one and by IoU for the rest (see the module docstring), and what became of each
    shown region (accepted, adjusted, relabeled or deleted), in `shown`'s order."""
    fates: list[Edit | None] = [None] * len(shown)
    by_id = {box.region_id: i for i, box in enumerate(shown) if box.region_id is not None}
    counts: Counter[Edit] = Counter({edit: 0 for edit in Edit})
    unpaired = []
    for box in submitted:
        i = by_id.get(box.region_id) if box.region_id is not None else None
        if i is None or fates[i] is not None:
            unpaired.append(box)
            continue
        before = shown[i]
        if before.label != box.label:
            fate = Edit.RELABELED
        elif _same_place(before, box):
            fate = Edit.ACCEPTED
        else:
            fate = Edit.ADJUSTED
        fates[i] = fate
        counts[fate] += 1
    rest = [i for i, fate in enumerate(fates) if fate is None]
    for edit in match_boxes(_labeled([shown[i] for i in rest]), _labeled(unpaired)):
        counts[edit.edit] += 1
        if edit.shown is not None:
            fates[rest[edit.shown]] = edit.edit
    return counts, [fate or Edit.DELETED for fate in fates]


def _labeled(boxes: Sequence[RegionBox]) -> list[LabeledBox]:
    return [LabeledBox(b.x1, b.y1, b.x2, b.y2, b.label) for b in boxes]


SAME_PLACE_PERCENT = 0.01  # closer than this (0.1 px on a 1000 px image) is not a move


def _same_place(a: RegionBox, b: RegionBox) -> bool:
    """The same rectangle, up to the editor's rounding."""
    corners = zip((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), strict=True)
    return all(abs(p - q) < SAME_PLACE_PERCENT for p, q in corners)


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
