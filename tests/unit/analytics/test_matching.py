"""Shown boxes vs submitted boxes: each pair or leftover is exactly one known edit."""

from __future__ import annotations

import pytest

from backend.analytics.cost import ActionSeconds
from backend.analytics.matching import (
    BoxEdit,
    Edit,
    LabeledBox,
    edit_counts,
    iou_matrix,
    match_boxes,
)


def box(x: float, y: float, w: float = 10.0, h: float = 10.0, label: str = "car") -> LabeledBox:
    return LabeledBox(x, y, x + w, y + h, label)


def test_iou_of_known_pairs() -> None:
    shown = [box(0, 0), box(100, 100)]
    submitted = [box(0, 0), box(5, 0), box(0, 0, 0, 0)]
    iou = iou_matrix(shown, submitted)
    assert iou.shape == (2, 3)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])  # a 5-px shift: 50/150
    assert iou[1].tolist() == [0.0, 0.0, 0.0]
    assert iou_matrix([], submitted).shape == (0, 3)


def test_every_kind_of_edit() -> None:
    shown = [
        box(0, 0),  # kept
        box(100, 0),  # moved by 1 px: IoU 90/110 = 0.818 -> adjusted
        box(200, 0, label="car"),  # same place, other label -> relabeled
        box(300, 0),  # nothing there -> deleted
    ]
    submitted = [
        box(0, 0),
        box(101, 0),
        box(200, 0, label="bus"),
        box(400, 0),  # the model missed it -> drawn
    ]
    edits = match_boxes(shown, submitted)
    by_kind = {e.edit: e for e in edits}
    assert sorted((e.edit.value, e.shown, e.submitted) for e in edits) == [
        ("accepted", 0, 0),
        ("adjusted", 1, 1),
        ("deleted", 3, None),
        ("drawn", None, 3),
        ("relabeled", 2, 2),
    ]
    assert by_kind[Edit.ADJUSTED].iou == pytest.approx(90 / 110)


def test_a_pair_under_half_overlap_is_a_deletion_and_a_drawing() -> None:
    edits = match_boxes([box(0, 0)], [box(6, 0)])  # IoU 40/160 = 0.25
    assert [e.edit for e in edits] == [Edit.DELETED, Edit.DRAWN]


def test_matching_is_one_to_one_and_maximises_overlap() -> None:
    """Listed in the other order, each shown box still finds its own submitted box."""
    shown = [box(0, 0, 10, 10), box(2, 0, 10, 10)]
    submitted = [box(2, 0, 10, 10), box(0, 0, 10, 10)]
    edits = match_boxes(shown, submitted)
    assert sorted((e.shown, e.submitted) for e in edits) == [(0, 1), (1, 0)]
    assert all(e.edit == Edit.ACCEPTED for e in edits)


def test_same_label_wins_a_tie() -> None:
    shown = [box(0, 0, label="bus"), box(0, 0, label="car")]
    (first, second) = sorted(match_boxes(shown, [box(0, 0, label="car")]), key=lambda e: e.edit)
    assert (first.edit, first.shown) == (Edit.ACCEPTED, 1)
    assert (second.edit, second.shown) == (Edit.DELETED, 0)


def test_nothing_shown_means_everything_is_drawn() -> None:
    counts = edit_counts(match_boxes([], [box(0, 0), box(50, 50)]))
    assert counts == {
        Edit.ACCEPTED: 0,
        Edit.ADJUSTED: 0,
        Edit.RELABELED: 0,
        Edit.DELETED: 0,
        Edit.DRAWN: 2,
    }


def test_image_seconds_price_each_edit() -> None:
    costs = ActionSeconds()
    counts = edit_counts(
        [
            BoxEdit(Edit.ACCEPTED, 0, 0, 1.0),
            BoxEdit(Edit.ACCEPTED, 1, 1, 1.0),
            BoxEdit(Edit.ADJUSTED, 2, 2, 0.7),
            BoxEdit(Edit.DRAWN, None, 3, 0.0),
        ]
    )
    assert costs.image_seconds(counts) == pytest.approx(3.0 + 2 * 1.6 + 5.0 + 25.0)
    assert costs.scaled(0.5).image_seconds(counts) == pytest.approx(3.0 + 2 * 1.6 + 5.0 + 12.5)
    assert costs.image_seconds(edit_counts([])) == costs.per_image
    with pytest.raises(ValueError, match="drawn_factor"):
        costs.scaled(0)
