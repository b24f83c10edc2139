"""Compare what Label Studio stores with the synthetic generator's ground truth.

Regions are Label Studio JSON (x/y/width/height in percent of the image); ground truth is
`devkit.datagen.SyntheticImage` boxes in pixels. A prediction is right when a box of the same
label overlaps it with IoU >= 0.5, the usual detection criterion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from devkit.datagen import SyntheticBox, SyntheticImage

IOU_MATCH = 0.5
T = TypeVar("T")


@dataclass(frozen=True)
class Agreement:
    """How well some regions agree with an image's ground truth."""

    truth_boxes: int
    found: int  # ground-truth boxes matched by a region of the same label
    regions: int
    correct: int  # regions that match a ground-truth box of the same label


def pixel_box(region: dict[str, Any]) -> SyntheticBox:
    """A RectangleLabels region back in pixels of its original image."""
    value = region["value"]
    width, height = region["original_width"], region["original_height"]
    x1, y1 = value["x"] * width / 100, value["y"] * height / 100
    return SyntheticBox(
        label=value["rectanglelabels"][0],
        x1=x1,
        y1=y1,
        x2=x1 + value["width"] * width / 100,
        y2=y1 + value["height"] * height / 100,
    )


def iou(a: SyntheticBox, b: SyntheticBox) -> float:
    inter_w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    inter_h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = inter_w * inter_h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def truth_boxes(sample: SyntheticImage) -> list[SyntheticBox]:
    """Ground truth with the project's label names (the generator's classes, capitalised)."""
    return [SyntheticBox(b.label.capitalize(), b.x1, b.y1, b.x2, b.y2) for b in sample.boxes]


def agreement(regions: Sequence[dict[str, Any]], sample: SyntheticImage) -> Agreement:
    predicted = [pixel_box(region) for region in regions]
    truth = truth_boxes(sample)

    def matches(a: SyntheticBox, b: SyntheticBox) -> bool:
        return a.label == b.label and iou(a, b) >= IOU_MATCH

    return Agreement(
        truth_boxes=len(truth),
        found=sum(any(matches(t, p) for p in predicted) for t in truth),
        regions=len(predicted),
        correct=sum(any(matches(p, t) for t in truth) for p in predicted),
    )


def total(agreements: Sequence[Agreement]) -> Agreement:
    return Agreement(
        truth_boxes=sum(a.truth_boxes for a in agreements),
        found=sum(a.found for a in agreements),
        regions=sum(a.regions for a in agreements),
        correct=sum(a.correct for a in agreements),
    )


def same_regions(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], tolerance: float = 0.05
) -> bool:
    """True when both lists hold the same labelled boxes and scores, in any order.

    `tolerance` (percent of the image, and score units) absorbs float noise between a batched
    and a single-image forward pass.
    """
    if len(a) != len(b):
        return False
    unmatched = list(b)
    for region in a:
        for other in unmatched:
            if _close(region, other, tolerance):
                unmatched.remove(other)
                break
        else:
            return False
    return True


def _close(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> bool:
    va, vb = a["value"], b["value"]
    return (
        va["rectanglelabels"] == vb["rectanglelabels"]
        and all(abs(va[k] - vb[k]) <= tolerance for k in ("x", "y", "width", "height"))
        and abs(a["score"] - b["score"]) <= tolerance
    )


def wait_for(
    probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 10.0
) -> T:
    """Call `probe` until `done(result)`; raise AssertionError with the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {result!r}")
        time.sleep(0.1)
