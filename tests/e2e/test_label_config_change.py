"""A project's label config changes mid-project (issue 19): a label added, the labels
reordered, one renamed (its old name kept in `predicted_values`). The served boxes carry the
new labels before the next run (the model's classes mapped by name) and after it (the model
trained on the new classes, its head grown from the old one by name)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests

from backend.events import EventStore
from backend.layout import ModelDir
from devkit.datagen import SyntheticImage, ls_regions, write_images
from devkit.demo import BackendServer, retrieve_predictions
from devkit.local_label_studio import LocalLabelStudio, find_free_port

from .conftest import BackendEnv, MakeProject
from .shapes import iou, pixel_box, truth_boxes

TRAIN_EVERY = 4
# Triangle first, Circle renamed Ring (annotations and models saying "Circle" still count as
# Ring), Hexagon added: no label keeps its position.
NEW_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Triangle"/><Label value="Ring" predicted_values="Circle"/>'
    '<Label value="Square"/><Label value="Hexagon"/>'
    "</RectangleLabels></View>"
)
RENAMED = {"Circle": "Ring"}


def _labels_right(regions: list[dict[str, Any]], sample: SyntheticImage) -> tuple[int, int]:
    """(regions over a shape, those labeled as the shape under the new config's names)."""
    over, right = 0, 0
    truth = truth_boxes(sample)
    for region in regions:
        box = pixel_box(region)
        match = max(truth, key=lambda t: iou(box, t))
        if iou(box, match) >= 0.5:
            over += 1
            right += box.label == RENAMED.get(match.label, match.label)
    return over, right


def _served(
    client: Any,
    project: int,
    task_ids: list[int],
    files: list[tuple[Path, SyntheticImage]],
    version: str | None = None,
) -> tuple[int, int, set[str]]:
    """Over the predictions of `task_ids` (of `version`, if named): regions over a shape,
    those labeled right, and every label served."""
    predictions = client.predictions.list(project=project)
    by_task = {p.task: p for p in predictions if version in (None, p.model_version)}
    over = right = 0
    labels: set[str] = set()
    for task_id, (_, sample) in zip(task_ids, files, strict=True):
        regions = list(by_task[task_id].result or [])
        labels.update(r["value"]["rectanglelabels"][0] for r in regions)
        o, r = _labels_right(regions, sample)
        over, right = over + o, right + r
    return over, right, labels


def _new_labels(sample: SyntheticImage) -> list[dict[str, object]]:
    regions = ls_regions(sample)
    for region in regions:
        value: Any = region["value"]
        value["rectanglelabels"] = [RENAMED.get(x, x) for x in value["rectanglelabels"]]
    return regions


def test_labels_follow_a_config_change_before_and_after_the_next_run(
    tmp_path: Path,
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    project_backend_env: BackendEnv,
    make_project: MakeProject,
) -> None:
    files = write_images(ls_document_root / f"config-change-{tmp_path.name}", 8, seed=43)
    project, task_ids = make_project("e2e label config change", [p for p, _ in files])
    settings = project_backend_env(
        {
            "TRAIN_EVERY": str(TRAIN_EVERY),
            "TRAIN_QUIET_SECONDS": "3600",
            "TRAIN_EPOCHS": "10",
            "TRAIN_IMAGE_SIZE": "160",
            "TRAIN_MIN_IMAGES": "4",
        },
    )
    server = BackendServer(find_free_port(), settings, tmp_path / "backend").start()
    client = label_studio.client()
    try:
        label_studio.connect_ml_backend(project, server.url)
        # Two annotations under the old config, Circle among their labels
        for task_id, (_, sample) in zip(task_ids[:2], files[:2], strict=True):
            client.annotations.create(id=task_id, result=ls_regions(sample))

        # Before any run, with the old config: the model's classes, capitalised
        retrieve_predictions(label_studio, project, task_ids[6:7])
        over, right, labels = _served(client, project, task_ids[6:7], files[6:7])
        assert over >= 1 and right == over
        assert labels <= {"Square", "Circle", "Triangle"}

        # The config changes; the same model now serves the new names
        client.projects.update(id=project, label_config=NEW_CONFIG)
        retrieve_predictions(label_studio, project, task_ids[7:8])
        over, right, labels = _served(client, project, task_ids[7:8], files[7:8])
        assert over >= 1 and right == over
        assert labels <= {"Square", "Ring", "Triangle"}

        # Two more annotations under the new config start the next run
        for task_id, (_, sample) in zip(task_ids[2:4], files[2:4], strict=True):
            client.annotations.create(id=task_id, result=_new_labels(sample))
        events = EventStore(ModelDir(Path(settings["MODEL_DIR"])).events_db)
        deadline = time.monotonic() + 240
        while not [r for r in events.runs(project) if r["state"] != "running"]:
            assert time.monotonic() < deadline, "no training run finished"
            time.sleep(0.5)
        run = events.runs(project)[0]
        assert run["state"] == "promoted", run["details"]
        details = run["details"]
        assert details["classes"] == ["Triangle", "Ring", "Square", "Hexagon"]
        assert details["head_growth"]["added"] == ["Hexagon"]
        assert details["head_growth"]["removed"] == []
        assert details["head_growth"]["renamed"] == {
            "square": "Square",
            "circle": "Ring",
            "triangle": "Triangle",
        }
        # the boxes annotated "Circle" before the rename were trained on as Ring
        circles = sum(b.label == "circle" for _, s in files[:4] for b in s.boxes)
        assert details["data"]["class_counts"].get("Ring", 0) == circles > 0

        # After the run: the queue's predictions of the new version carry the new labels
        deadline = time.monotonic() + 120
        while client.projects.get(id=project).model_version != "v1.q1":
            assert time.monotonic() < deadline, "the queue was not ranked after the promotion"
            time.sleep(0.5)
        setup = {"project": f"{project}.1", "schema": NEW_CONFIG}
        while (
            requests.post(f"{server.url}/setup", json=setup, timeout=10).json()["model_version"]
            != "v1.q1"
        ):
            assert time.monotonic() < deadline, "/setup never answered the queue version"
            time.sleep(0.1)
        unlabeled = task_ids[4:]
        retrieve_predictions(label_studio, project, unlabeled)
        queued = {
            p.task for p in client.predictions.list(project=project) if p.model_version == "v1.q1"
        }
        assert queued == set(unlabeled)
        over, right, labels = _served(client, project, unlabeled, files[4:], "v1.q1")
        assert labels <= {"Square", "Ring", "Triangle", "Hexagon"}
        assert over >= len(unlabeled) and right >= 0.8 * over
    finally:
        server.stop()
