"""Interactive assist through /predict's `params.context` (Label Studio's smart tools), with
the session's tiny trained model on the synthetic shapes, whose true boxes are known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from devkit.datagen import (
    SyntheticBox,
    SyntheticImage,
    drawn_click,
    drawn_rectangle,
    region_iou,
    write_images,
)
from tests.conftest import BOX_CONFIG


@pytest.fixture(scope="module")
def scenes(image_root: Path) -> list[tuple[Path, SyntheticImage]]:
    return write_images(image_root / "assist", 6, seed=123)


def _ask(client: FlaskClient, path: Path, regions: list[dict[str, Any]], tasks: int = 1) -> Any:
    body = {
        "tasks": [{"id": i + 1, "data": {"image": str(path)}} for i in range(tasks)],
        "project": "3.1",
        "label_config": BOX_CONFIG,
        "params": {"login": None, "password": None, "context": {"result": regions}},
    }
    return client.post("/predict", json=body)


def test_a_rough_rectangle_snaps_to_the_object(
    client: FlaskClient, scenes: list[tuple[Path, SyntheticImage]]
) -> None:
    drawn, snapped = [], []
    for path, sample in scenes:
        size = sample.image.size
        for box in sample.boxes:
            rough = drawn_rectangle(box, size)
            answer = _ask(client, path, [rough])
            assert answer.status_code == 200, answer.get_json()
            [result] = answer.get_json()["results"]
            [region] = result["result"]
            assert region["value"]["rectanglelabels"] == [box.label.capitalize()]  # the model's
            assert (region["from_name"], region["to_name"]) == ("label", "image")
            drawn.append(region_iou(rough, box, size))
            snapped.append(region_iou(region, box, size))
    assert len(snapped) >= 8
    assert min(snapped) >= 0.6, snapped
    assert sum(snapped) / len(snapped) >= sum(drawn) / len(drawn) + 0.05, (drawn, snapped)


def test_the_annotators_label_wins_and_a_click_finds_the_object_around_it(
    client: FlaskClient, scenes: list[tuple[Path, SyntheticImage]]
) -> None:
    path, sample = scenes[0]
    size = sample.image.size
    box = sample.boxes[0]
    other = next(c for c in ("Square", "Circle", "Triangle") if c != box.label.capitalize())
    [result] = _ask(client, path, [drawn_rectangle(box, size, label=other)]).get_json()["results"]
    assert [r["value"]["rectanglelabels"] for r in result["result"]] == [[other]]

    [result] = _ask(client, path, [drawn_click(box, size)]).get_json()["results"]
    [region] = result["result"]
    assert region["value"]["rectanglelabels"] == [box.label.capitalize()]
    assert region_iou(region, box, size) >= 0.6
    # nothing there: nothing answered
    corner = SyntheticBox("none", 0, 0, 2, 2)  # a click on the background
    [result] = _ask(client, path, [drawn_click(corner, size)]).get_json()["results"]
    assert result["result"] == [] and result["score"] == 0.0
    # as the editor sends them: every region of the annotation, the new one last; only that
    # one is answered (an accepted suggestion, origin "prediction", is never asked about)
    path, sample = next((p, s) for p, s in scenes if len(s.boxes) >= 2)
    size = sample.image.size
    first, second = (drawn_rectangle(b, size) for b in sample.boxes[:2])
    accepted = {**drawn_rectangle(sample.boxes[0], size), "origin": "prediction"}
    [result] = _ask(client, path, [accepted, first, second]).get_json()["results"]
    [region] = result["result"]
    assert region_iou(region, sample.boxes[1], size) >= 0.6
    [result] = _ask(client, path, [accepted]).get_json()["results"]  # nothing new drawn
    assert result["result"] == []


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ("a box", "params.context must be an object"),
        ({"result": {"x": 1}}, "params.context.result must be a list of regions"),
        (
            {"result": [{"type": "rectanglelabels", "to_name": "image", "value": {}}]},
            "no numeric x/y",
        ),
        (
            {
                "result": [
                    {"type": "rectanglelabels", "to_name": "other", "value": {"x": 1, "y": 1}}
                ]
            },
            "no RectangleLabels control over 'other'",
        ),
    ],
)
def test_bad_context_is_a_400(
    client: FlaskClient, scenes: list[tuple[Path, SyntheticImage]], context: object, message: str
) -> None:
    body = {
        "tasks": [{"id": 1, "data": {"image": str(scenes[0][0])}}],
        "project": "3.1",
        "label_config": BOX_CONFIG,
        "params": {"context": context},
    }
    answer = client.post("/predict", json=body)
    assert answer.status_code == 400 and message in answer.get_json()["message"], answer.get_json()


def test_an_interactive_call_takes_one_task(
    client: FlaskClient, scenes: list[tuple[Path, SyntheticImage]]
) -> None:
    path, sample = scenes[0]
    answer = _ask(client, path, [drawn_rectangle(sample.boxes[0], sample.image.size)], tasks=2)
    assert answer.status_code == 400
    # Label Studio's "Retrieve predictions" sends a context of None: the plain path
    plain = client.post(
        "/predict",
        json={
            "tasks": [{"id": 1, "data": {"image": str(path)}}],
            "project": "3.1",
            "label_config": BOX_CONFIG,
            "params": {"login": None, "password": None, "context": None},
        },
    )
    assert plain.status_code == 200 and plain.get_json()["results"][0]["result"]
