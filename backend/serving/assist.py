"""Interactive assist: with auto-annotation on, Label Studio's smart tools send the annotator's
rough rectangle or click in /predict's `params.context`, and show what comes back at once.

A rectangle: the detector runs on a crop around it (the rectangle and CROP_MARGIN of its size
on each side), which its letterbox scales up to the model's input size, so small objects snap
too. The answer is the detection that overlaps the rectangle best, weighed by confidence,
labeled as the annotator chose, or by the model when the rectangle carries no label of the
control. When no detection in the crop is sure (MODEL_SCORE_THRESHOLD), the whole image's
detections compete too: a crop can mislead the model where the whole picture does not.
A click (KeyPointLabels): the detections of the whole image that contain the point; the
smallest of them (the innermost object) is the answer, labeled by the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backend.errors import BadRequest
from backend.models.detector import Box

RECTANGLE_TYPES = frozenset({"rectanglelabels", "rectangle"})
POINT_TYPES = frozenset({"keypointlabels", "keypoint"})
# Of the rectangle's width and height, on each side. Measured on the test shapes with rough
# rectangles (IoU about 0.72 with the object): margins 0.5, 1, 2 and the whole image gave the
# snapped box a mean IoU of 0.79, 0.81, 0.83, 0.80 and a worst of 0.64, 0.71, 0.67, 0.57.
CROP_MARGIN = 1.0
MIN_CROP = 64  # pixels: the smallest crop side
MIN_IOU = 0.3  # a detection overlapping the rectangle less is not the object meant


@dataclass(frozen=True)
class UserRegion:
    """What the annotator drew, in image pixels (a click has x1 == x2 and y1 == y2)."""

    to_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None  # the label the annotator chose, if any

    @property
    def is_point(self) -> bool:
        return self.x1 == self.x2 and self.y1 == self.y2


def context_regions(params: object) -> list[dict[str, Any]] | None:
    """The region the annotator just drew, from /predict's `params`, as a one-item list; None
    when the call is not interactive (no `params.context`, as for "Retrieve predictions");
    BadRequest if the context is not Label Studio's shape.

    Label Studio 1.23's editor sends every region of the annotation, suggestions it accepted
    (`origin` "prediction") and earlier drawings included, the new one last: answering them
    all would suggest every earlier box again at each stroke."""
    if not isinstance(params, Mapping):
        return None
    context = params.get("context")
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise BadRequest("params.context must be an object")
    result = context.get("result")
    if result is None:
        return None
    if not isinstance(result, list) or not all(isinstance(r, Mapping) for r in result):
        raise BadRequest("params.context.result must be a list of regions")
    drawn = [dict(r) for r in result if r.get("origin", "manual") == "manual"]
    return drawn[-1:]


def user_regions(regions: Sequence[Mapping[str, Any]], width: int, height: int) -> list[UserRegion]:
    """The rectangles and clicks among `regions` (Label Studio's JSON: percent of the image),
    in pixels of a `width` x `height` image; other region types are left out."""
    found = []
    for region in regions:
        kind = str(region.get("type", "")).lower()
        value = region.get("value")
        if kind not in RECTANGLE_TYPES | POINT_TYPES or not isinstance(value, Mapping):
            continue
        try:
            x = float(value["x"]) / 100.0 * width
            y = float(value["y"]) / 100.0 * height
            w = float(value.get("width", 0.0)) / 100.0 * width if kind in RECTANGLE_TYPES else 0.0
            h = float(value.get("height", 0.0)) / 100.0 * height if kind in RECTANGLE_TYPES else 0.0
        except (KeyError, TypeError, ValueError):
            raise BadRequest(f"a {kind} region in params.context has no numeric x/y") from None
        if not all(map(_finite, (x, y, w, h))) or w < 0 or h < 0:
            raise BadRequest(f"a {kind} region in params.context has an invalid position")
        labels = value.get(kind if kind.endswith("labels") else f"{kind}labels")
        label = str(labels[0]) if isinstance(labels, list) and labels else None
        found.append(UserRegion(str(region.get("to_name", "")), x, y, x + w, y + h, label))
    return found


def crop_window(region: UserRegion, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixels (x0, y0, x1, y1) the detector sees for a rectangle: the rectangle and
    CROP_MARGIN of its size around it, at least MIN_CROP a side, inside the image."""
    w, h = region.x2 - region.x1, region.y2 - region.y1
    half_w = max(w * (0.5 + CROP_MARGIN), MIN_CROP / 2)
    half_h = max(h * (0.5 + CROP_MARGIN), MIN_CROP / 2)
    cx, cy = (region.x1 + region.x2) / 2, (region.y1 + region.y2) / 2
    x0, x1 = max(0, int(cx - half_w)), min(width, int(cx + half_w + 1))
    y0, y1 = max(0, int(cy - half_h)), min(height, int(cy + half_h + 1))
    return x0, y0, x1, y1


def shifted(boxes: Sequence[Box], dx: float, dy: float) -> list[Box]:
    """Boxes found in a crop whose top-left corner is (dx, dy), in image pixels."""
    return [replace(b, x1=b.x1 + dx, y1=b.y1 + dy, x2=b.x2 + dx, y2=b.y2 + dy) for b in boxes]


def best_overlap(boxes: Sequence[Box], region: UserRegion) -> Box | None:
    """Of the boxes overlapping the rectangle at least MIN_IOU, the one with the highest IoU
    times confidence: a box the model barely believes in does not win over a sure one
    nearby just because it fits the rough stroke a little better."""
    overlaps = [(_iou(b, region), b) for b in boxes]
    scored = [(iou * b.conf, b) for iou, b in overlaps if iou >= MIN_IOU]
    return max(scored, key=lambda s: s[0])[1] if scored else None


def innermost(boxes: Sequence[Box], region: UserRegion) -> Box | None:
    """The smallest box containing the click."""
    inside = [b for b in boxes if b.x1 <= region.x1 <= b.x2 and b.y1 <= region.y1 <= b.y2]
    return min(inside, key=lambda b: (b.x2 - b.x1) * (b.y2 - b.y1)) if inside else None


def _iou(box: Box, region: UserRegion) -> float:
    iw = min(box.x2, region.x2) - max(box.x1, region.x1)
    ih = min(box.y2, region.y2) - max(box.y1, region.y1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (box.x2 - box.x1) * (box.y2 - box.y1) + (region.x2 - region.x1) * (
        region.y2 - region.y1
    )
    return inter / (union - inter)


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")
