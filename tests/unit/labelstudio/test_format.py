"""Detections -> Label Studio JSON, checked against golden files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.labelstudio import format as ls_format
from backend.labelstudio.label_config import parse_label_config
from backend.models.detector import Box

GOLDEN = Path(__file__).parent / "golden"
CONFIG = parse_label_config(
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="Car" predicted_values="car,truck"/>'
    '<Label value="Person"/></RectangleLabels></View>'
)
NAMES = ("person", "car", "truck", "dog")


def _box(x1: float, y1: float, x2: float, y2: float, cls: int, conf: float) -> Box:
    return Box(x1, y1, x2, y2, cls, conf, np.zeros(len(NAMES), dtype=np.float32))


def test_regions_match_golden_file() -> None:
    boxes = [
        _box(100, 50, 300, 250, 1, 0.91),  # car
        _box(-20, 10, 80, 500, 0, 0.55),  # person, clipped at both edges
        _box(10, 10, 20, 20, 2, 0.40),  # truck -> Car
        _box(0, 0, 50, 50, 3, 0.99),  # dog: not in the config, dropped
        _box(0, 0, 50, 50, 1, 0.10),  # below threshold, dropped
    ]
    regions = ls_format.control_regions(boxes, NAMES, CONFIG.controls[0], 800, 400, 0.25)
    prediction = ls_format.task_prediction(regions, "v3")
    expected = json.loads((GOLDEN / "prediction_car_person.json").read_text())
    assert prediction == expected


def test_empty_prediction_scores_zero() -> None:
    assert ls_format.task_prediction([], "v1") == {
        "result": [],
        "score": 0.0,
        "model_version": "v1",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        ("3", 3),
        ("12.1712345678", 12),
        ({"id": 5, "title": "x"}, 5),
        (None, None),
        (2**63 - 1, 2**63 - 1),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_project_id_forms(value: object, expected: int | None) -> None:
    assert ls_format.project_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        True,
        {"id": "x"},
        1.5,
        0,
        -3,
        "0",
        2**63,  # over SQLite's integers: OverflowError in the event store before
        str(2**63),
        "9" * 300,  # a folder name over NAME_MAX: ENAMETOOLONG before
        "\u0663",  # a non-ASCII digit
        {"id": {"id": 3}},
    ],
)
def test_project_id_rejects_garbage(value: object) -> None:
    with pytest.raises(ValueError, match="invalid project"):
        ls_format.project_id(value)


def test_webhook_annotation_ids() -> None:
    assert ls_format.webhook_annotation_ids("ANNOTATION_CREATED", {"annotation": {"id": 7}}) == (7,)
    assert ls_format.webhook_annotation_ids(
        "ANNOTATIONS_DELETED", {"annotations": [{"id": 1}, {"id": 2}]}
    ) == (1, 2)
    assert ls_format.webhook_annotation_ids("ANNOTATIONS_CREATED", {"annotation": [{"id": 4}]}) == (
        4,
    )
    assert ls_format.webhook_annotation_ids("START_TRAINING", {}) == ()
    for bad in ({}, {"annotation": {"id": "7"}}, {"annotation": []}, {"annotation": {"id": True}}):
        with pytest.raises(ValueError):
            ls_format.webhook_annotation_ids("ANNOTATION_CREATED", bad)
