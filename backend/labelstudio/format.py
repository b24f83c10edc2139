"""Detections -> Label Studio JSON. Pure functions, no I/O (golden-file tested).

Label Studio's RectangleLabels region: x/y are the top-left corner, width/height the size,
all four in percent of the original image; `original_width`/`original_height` are pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backend.labelstudio.label_config import BoxControl
from backend.models.detector import Box
from backend.models.registry import MAX_PROJECT_ID


def box_region(
    box: Box, label: str, control: BoxControl, width: int, height: int
) -> dict[str, Any]:
    """One RectangleLabels region for `box` (pixels) in an image of `width` x `height`."""
    x1 = min(max(box.x1, 0.0), float(width))
    y1 = min(max(box.y1, 0.0), float(height))
    x2 = min(max(box.x2, 0.0), float(width))
    y2 = min(max(box.y2, 0.0), float(height))
    return {
        "from_name": control.from_name,
        "to_name": control.to_name,
        "type": "rectanglelabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {
            "x": round(x1 / width * 100.0, 4),
            "y": round(y1 / height * 100.0, 4),
            "width": round((x2 - x1) / width * 100.0, 4),
            "height": round((y2 - y1) / height * 100.0, 4),
            "rotation": 0,
            "rectanglelabels": [label],
        },
        "score": round(float(box.conf), 4),
    }


def control_regions(
    boxes: Sequence[Box],
    class_names: Sequence[str],
    control: BoxControl,
    width: int,
    height: int,
    threshold: float,
) -> list[dict[str, Any]]:
    """Regions for the boxes at or above `threshold` whose class maps to a control label."""
    regions = []
    for box in boxes:
        if box.conf < threshold or not 0 <= box.class_id < len(class_names):
            continue
        label = control.label_for(class_names[box.class_id])
        if label is not None:
            regions.append(box_region(box, label, control, width, height))
    return regions


def task_prediction(regions: list[dict[str, Any]], model_version: str) -> dict[str, Any]:
    """One entry of `/predict`'s `results`: the task score is the mean region score.

    Label Studio's uncertainty sampling serves the LOWEST score first, so a task where nothing
    was found (score 0) comes before confident ones: missed objects are the costliest error.
    """
    score = sum(r["score"] for r in regions) / len(regions) if regions else 0.0
    return {"result": regions, "score": round(score, 4), "model_version": model_version}


HANDLED_ACTIONS = frozenset(
    {
        "ANNOTATION_CREATED",
        "ANNOTATIONS_CREATED",
        "ANNOTATION_UPDATED",
        "ANNOTATIONS_DELETED",
        "START_TRAINING",
    }
)


def project_id(value: object) -> int | None:
    """Label Studio's project reference as an int: `3`, `"3"`, `"3.1712345678"` or `{"id": 3}`.

    Returns None when absent; raises ValueError when present but malformed or outside
    1..2**63-1 (SQLite's integers, and short enough to name a folder).
    """
    if isinstance(value, dict):
        value = value.get("id")
    if value is None or value == "":
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isascii() and head.isdigit() and len(head) <= 19:
            number = int(head)
    if number is None or not 1 <= number <= MAX_PROJECT_ID:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ValueError(
            f"invalid project reference {shown}: expected a project id from 1 to {MAX_PROJECT_ID}"
        )
    return number


def webhook_annotation_ids(action: str, payload: dict[str, Any]) -> tuple[int, ...]:
    """The annotation ids a handled webhook event touches; raises ValueError if malformed."""
    if action == "START_TRAINING":
        return ()
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        items: object = [payload.get("annotation")]
    elif action == "ANNOTATIONS_DELETED":
        items = payload.get("annotations")
    else:  # ANNOTATIONS_CREATED: LS sends a list under "annotation" (or "annotations")
        items = payload.get("annotation", payload.get("annotations"))
        if isinstance(items, dict):
            items = [items]
    if not isinstance(items, list) or not items:
        raise ValueError(f"{action} needs the annotation(s) it is about")
    ids = []
    for item in items:
        if not isinstance(item, dict) or isinstance(item.get("id"), bool):
            raise ValueError(f"{action}: each annotation must be an object with an integer id")
        if not isinstance(item.get("id"), int):
            raise ValueError(f"{action}: each annotation must be an object with an integer id")
        ids.append(int(item["id"]))
    return tuple(ids)
