"""Label Studio RectangleLabels regions -> boxes in percent of the image. Pure, no I/O.

Training turns an annotation's regions into YOLO labels, the annotation analytics compare an
annotation's regions with those of the prediction it started from; both read a region here.
x/y are the top-left corner and width/height the size, in percent; a rotated rectangle
becomes its axis-aligned envelope; a box is clipped to the image.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

MIN_SIDE_PERCENT = 0.01  # a clipped box thinner than this lies outside the image


class RegionSkipped(ValueError):
    """A region that gives no box; `reason` says why, in words a log or a count can use."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RegionBox:
    """One rectangle in percent of the image, with its first label and the region's id (the
    editor keeps a predicted region's id in the annotation: Label Studio 1.23, checked in
    tests/e2e/test_analytics.py)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    region_id: str | None
    clipped: bool  # part of the drawn rectangle lay outside the image
    score: float | None = None  # a predicted region's confidence, when it has one


def region_box(region: Mapping[str, Any]) -> RegionBox:
    """The box of one rectanglelabels region.

    Raises:
        RegionSkipped: "malformed box" (no label, missing or non-numeric geometry) or "box
            outside the image".
    """
    value = region.get("value") or {}
    labels = value.get("rectanglelabels") if isinstance(value, Mapping) else None
    if not labels or not isinstance(labels, list) or not isinstance(labels[0], str):
        raise RegionSkipped("malformed box")
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        if float(value.get("rotation") or 0.0) % 360:
            # The SDK's converter does the rotation geometry; it imports slowly (~3 s), so
            # only when a rotated box actually turns up.
            from label_studio_sdk.converter import Converter  # noqa: PLC0415

            x, y, w, h = Converter.rotated_rectangle(dict(value))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise RegionSkipped("malformed box") from None
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(100.0, x + w), min(100.0, y + h)
    if x2 - x1 <= MIN_SIDE_PERCENT or y2 - y1 <= MIN_SIDE_PERCENT:
        raise RegionSkipped("box outside the image")
    region_id, score = region.get("id"), region.get("score")
    return RegionBox(
        x1,
        y1,
        x2,
        y2,
        labels[0],
        None if region_id is None else str(region_id),
        clipped=(x1, y1, x2, y2) != (x, y, x + w, y + h),
        score=None if isinstance(score, bool) or not isinstance(score, int | float) else score,
    )


def result_boxes(result: object, from_names: Collection[str]) -> list[RegionBox]:
    """The boxes of a result (an annotation's or a prediction's regions) drawn with the given
    controls; regions of other controls or types and regions that give no box are left out."""
    boxes = []
    for region in result if isinstance(result, list) else []:
        if not isinstance(region, Mapping) or region.get("from_name") not in from_names:
            continue
        if region.get("type") != "rectanglelabels":
            continue
        try:
            boxes.append(region_box(region))
        except RegionSkipped:
            continue
    return boxes
