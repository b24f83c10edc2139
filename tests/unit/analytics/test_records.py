"""A Label Studio annotation against its parent prediction -> its ledger record."""

from __future__ import annotations

from typing import Any

from backend.analytics.records import annotation_record, parent_prediction_id


def region(x: float, y: float, label: str, rid: str, w: float = 10.0, h: float = 10.0) -> dict:
    return {
        "id": rid,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]},
    }


PREDICTION = {
    "id": 55,
    "model_version": "v3",
    "result": [
        region(10, 10, "Car", "a"),  # kept as it is
        region(40, 10, "Car", "b"),  # moved a little: adjusted
        region(70, 10, "Car", "c"),  # relabeled
        region(10, 60, "Car", "d"),  # deleted
    ],
}


def annotation(**fields: Any) -> dict:
    base = {
        "id": 9,
        "completed_by": 4,
        "lead_time": 31.5,
        "was_cancelled": False,
        "parent_prediction": 55,
        "updated_at": "2026-12-01T10:00:00Z",
        "result": [
            region(10, 10, "Car", "a"),
            region(41.5, 10, "Car", "b"),
            region(70, 10, "Truck", "c"),
            region(60, 60, "Person", "e"),  # drawn by hand
            {"from_name": "other", "type": "rectanglelabels", "value": {}},  # another control
            {"from_name": "label", "type": "choices", "value": {"choices": ["x"]}},
        ],
    }
    return base | fields


def test_each_box_becomes_one_edit() -> None:
    row = annotation_record(2, 17, annotation(), PREDICTION, {"label"}, queue_position=3)
    assert row.edits == {"accepted": 1, "adjusted": 1, "relabeled": 1, "deleted": 1, "drawn": 1}
    assert (row.annotation_id, row.project_id, row.task_id) == (9, 2, 17)
    assert (row.annotator, row.prediction_id, row.model_version) == ("4", 55, "v3")
    assert (row.lead_time, row.queue_position, row.cancelled) == (31.5, 3, False)
    assert row.annotated_at == 1796119200.0
    # what a precision-recall curve needs: each shown box kept or not, each submitted label
    shown = [(b.label, b.hit) for b in row.boxes if b.side == "shown"]
    assert shown == [("Car", True), ("Car", True), ("Car", False), ("Car", False)]
    assert sorted(b.label for b in row.boxes if b.side == "submitted") == [
        "Car",
        "Car",
        "Person",
        "Truck",
    ]


def test_a_shared_region_id_decides_before_iou() -> None:
    # the editor keeps a predicted region's id: a far move is still that box, adjusted, and a
    # nudge that keeps IoU above 0.9 is a move too; without ids IoU decides
    moved = annotation(result=[region(60, 60, "Car", "a"), region(40.2, 10, "Car", "b")])
    row = annotation_record(2, 17, moved, PREDICTION, {"label"})
    assert row.edits == {"accepted": 0, "adjusted": 2, "relabeled": 0, "deleted": 2, "drawn": 0}
    unnamed = {**PREDICTION, "result": [r | {"id": None} for r in PREDICTION["result"]]}
    same = annotation(result=[region(10, 10, "Car", "x"), region(40.2, 10, "Car", "y")])
    row = annotation_record(2, 17, same, unnamed, {"label"})
    assert row.edits == {"accepted": 2, "adjusted": 0, "relabeled": 0, "deleted": 2, "drawn": 0}


def test_without_a_prediction_every_box_is_drawn() -> None:
    row = annotation_record(2, 17, annotation(parent_prediction=None), None, {"label"})
    assert row.edits == {"accepted": 0, "adjusted": 0, "relabeled": 0, "deleted": 0, "drawn": 4}
    assert (row.prediction_id, row.model_version) == (None, None)


def test_a_skipped_task_counts_no_edits_but_its_time() -> None:
    row = annotation_record(2, 17, annotation(was_cancelled=True), PREDICTION, {"label"})
    assert row.cancelled and set(row.edits.values()) == {0}
    assert row.lead_time == 31.5


def test_odd_fields_are_read_or_left_empty() -> None:
    odd = annotation(completed_by={"id": 4, "email": "a@b.c"}, lead_time=None, updated_at="x")
    row = annotation_record(2, 17, odd, PREDICTION, {"label"})
    assert (row.annotator, row.lead_time, row.annotated_at) == ("a@b.c", None, None)
    assert parent_prediction_id({"parent_prediction": {"id": 8}}) == 8
    assert parent_prediction_id({"parent_prediction": True}) is None
    assert parent_prediction_id({}) is None
