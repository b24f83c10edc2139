"""What an annotator did to a pre-annotation: match the boxes shown to the boxes submitted.

One-to-one matching by IoU (the Hungarian method, `scipy.optimize.linear_sum_assignment`),
then each pair or leftover becomes one edit: a shown box kept as is (accepted), moved or
resized (adjusted), given another label (relabeled), removed (deleted), or a box the model
missed (drawn). Written once for the label-efficiency benchmark, which prices the edits
with `analytics.cost` (`benchmarks/label_efficiency/simulation.py`), and the annotation
analytics on real annotations to come.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from strategies.boxes import box_iou

ACCEPT_IOU = 0.9  # at or above: the box was kept as shown (with the same label)
MATCH_IOU = 0.5  # below: the shown box and the submitted one are different objects


class Edit(StrEnum):
    """One annotator action on one box."""

    ACCEPTED = "accepted"  # shown box kept: IoU >= ACCEPT_IOU, same label
    ADJUSTED = "adjusted"  # same object and label, the box moved: MATCH_IOU <= IoU < ACCEPT_IOU
    RELABELED = "relabeled"  # same object (IoU >= MATCH_IOU), another label
    DELETED = "deleted"  # a shown box with no submitted counterpart (a false positive)
    DRAWN = "drawn"  # a submitted box with no shown counterpart (a missed object)


@dataclass(frozen=True)
class LabeledBox:
    """An axis-aligned box in any consistent unit (pixels or percent) and its label."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str


@dataclass(frozen=True)
class BoxEdit:
    """One edit: the shown box and the submitted box it concerns (an index each, or None)."""

    edit: Edit
    shown: int | None
    submitted: int | None
    iou: float


def iou_matrix(a: Sequence[LabeledBox], b: Sequence[LabeledBox]) -> npt.NDArray[np.float64]:
    """(len(a), len(b)) intersection over union of every pair."""
    return box_iou([(x.x1, x.y1, x.x2, x.y2) for x in a], [(x.x1, x.y1, x.x2, x.y2) for x in b])


def match_boxes(shown: Sequence[LabeledBox], submitted: Sequence[LabeledBox]) -> list[BoxEdit]:
    """The edits that turn `shown` into `submitted`: every box of each appears in exactly one.

    Pairs maximise the total IoU (a same-label pair wins a tie); a pair under MATCH_IOU is no
    match, so it counts as one deletion and one drawing.
    """
    iou = iou_matrix(shown, submitted)
    same = np.array([[s.label == t.label for t in submitted] for s in shown], dtype=np.float64)
    rows, cols = linear_sum_assignment(-(iou + 1e-6 * same.reshape(iou.shape)))
    edits: list[BoxEdit] = []
    paired_shown: set[int] = set()
    paired_submitted: set[int] = set()
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        overlap = float(iou[i, j])
        if overlap < MATCH_IOU:
            continue
        if shown[i].label != submitted[j].label:
            edit = Edit.RELABELED
        elif overlap >= ACCEPT_IOU:
            edit = Edit.ACCEPTED
        else:
            edit = Edit.ADJUSTED
        edits.append(BoxEdit(edit, i, j, overlap))
        paired_shown.add(i)
        paired_submitted.add(j)
    edits += [
        BoxEdit(Edit.DELETED, i, None, 0.0) for i in range(len(shown)) if i not in paired_shown
    ]
    edits += [
        BoxEdit(Edit.DRAWN, None, j, 0.0)
        for j in range(len(submitted))
        if j not in paired_submitted
    ]
    return edits


def edit_counts(edits: Sequence[BoxEdit]) -> Counter[Edit]:
    """How many edits of each kind (every kind present, zeros included)."""
    counts: Counter[Edit] = Counter({edit: 0 for edit in Edit})
    counts.update(e.edit for e in edits)
    return counts
