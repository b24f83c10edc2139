"""The backend attached to a real Label Studio 1.23, driven through LS's public REST API.

Connect, "Retrieve Predictions", open a task, and annotate: each path as Label Studio itself
calls the backend (a gunicorn process started by `ls-active-yolo serve`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from backend.events import Event, EventStore
from backend.layout import ModelDir
from backend.models.detector import file_version
from devkit.datagen import ls_regions
from devkit.demo import BackendServer, retrieve_predictions
from devkit.local_label_studio import LocalLabelStudio

from .conftest import BackendFactory, Retrieval, ShapesProject, stored_predictions
from .shapes import agreement, same_regions, total, wait_for

MIN_RECALL = 0.8  # share of ground-truth boxes the backend must find (label and IoU >= 0.5)
MIN_PRECISION = 0.8  # share of predicted boxes that must be right


def test_backend_is_connected_with_its_model_version(
    label_studio: LocalLabelStudio,
    ml_backend: BackendServer,
    shapes_project: ShapesProject,
    trained_weights: Path,
) -> None:
    expected_version = file_version(trained_weights)
    assert shapes_project.connection.state == "CO"

    backend = label_studio.client().ml.get(shapes_project.connection.id)
    hooks = label_studio.client().webhooks.list(project=str(shapes_project.project_id))

    assert backend.readable_state == "Connected"
    assert backend.url == ml_backend.url
    assert backend.model_version == expected_version  # LS keeps what /setup answered
    assert ml_backend.health()["base_model"]["version"] == expected_version
    # Adding an ML backend subscribes it to every project event.
    assert [(h.url, h.send_payload, h.send_for_all_actions) for h in hooks] == [
        (f"{ml_backend.url}/webhook", True, True)
    ]


def test_retrieve_predictions_stores_one_prediction_per_task(
    retrieved: Retrieval, shapes_project: ShapesProject, trained_weights: Path
) -> None:
    tasks = len(shapes_project.truth)
    assert retrieved.answer == {
        "processed_items": tasks,
        "detail": f"Retrieved {tasks} predictions",
    }
    assert sorted(retrieved.predictions) == sorted(shapes_project.truth)
    assert all(len(predictions) == 1 for predictions in retrieved.predictions.values())
    versions = {p.model_version for [p] in retrieved.predictions.values()}
    assert versions == {file_version(trained_weights)}


def test_predicted_boxes_match_the_ground_truth(
    retrieved: Retrieval, shapes_project: ShapesProject
) -> None:
    per_task = {
        task: agreement(prediction.result, shapes_project.truth[task])
        for task, [prediction] in retrieved.predictions.items()
    }
    overall = total(list(per_task.values()))

    assert overall.truth_boxes >= 2 * len(per_task)  # enough boxes for the ratios to mean much
    assert overall.found >= MIN_RECALL * overall.truth_boxes, per_task
    assert overall.correct >= MIN_PRECISION * overall.regions, per_task
    assert all(a.found >= 1 for a in per_task.values()), per_task


def test_predictions_are_well_formed_label_studio_regions(
    retrieved: Retrieval, shapes_project: ShapesProject
) -> None:
    for task, [prediction] in retrieved.predictions.items():
        width, height = shapes_project.truth[task].image.size
        scores = [region["score"] for region in prediction.result]
        for region in prediction.result:
            value = region["value"]
            assert (region["from_name"], region["to_name"], region["type"]) == (
                "label",
                "image",
                "rectanglelabels",
            )
            assert (region["original_width"], region["original_height"]) == (width, height)
            assert value["rectanglelabels"][0] in {"Square", "Circle", "Triangle"}
            assert 0 <= value["x"] and value["x"] + value["width"] <= 100.0001
            assert 0 <= value["y"] and value["y"] + value["height"] <= 100.0001
            assert 0.25 <= region["score"] <= 1  # MODEL_SCORE_THRESHOLD's default
        # The task score is the mean region score (LS's uncertainty sampling sorts on it).
        assert abs(prediction.score - sum(scores) / len(scores)) < 1e-3


def test_retrieving_again_keeps_the_current_predictions(
    label_studio: LocalLabelStudio, retrieved: Retrieval, shapes_project: ShapesProject
) -> None:
    """LS skips tasks that hold a prediction of the backend's current model version."""
    before = {task: p.id for task, [p] in retrieved.predictions.items()}

    retrieve_predictions(label_studio, shapes_project.project_id)

    after = stored_predictions(label_studio, shapes_project.project_id)
    assert {task: [p.id for p in ps] for task, ps in after.items()} == {
        task: [pid] for task, pid in before.items()
    }


def test_retrieve_predictions_over_the_time_budget_never_fails_and_resumes(
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    backend_factory: BackendFactory,
    shapes_project: ShapesProject,
    make_project: Callable[..., tuple[int, list[int]]],
) -> None:
    """A backend whose budget covers one detector batch per /predict: each "Retrieve
    Predictions" succeeds, stores one batch of predictions and none for the tasks left, so
    the next one predicts those; no task ever holds two."""
    batch = 3
    backend = backend_factory.start(
        "budget",
        api_key=label_studio.legacy_token,
        document_root=ls_document_root,
        env={"PREDICT_BATCH": str(batch), "PREDICT_BUDGET_SECONDS": "0.001"},
    )
    files = [shapes_project.files[t] for t in sorted(shapes_project.files)][: 3 * batch - 1]
    project_id, task_ids = make_project("e2e retrieve over budget", files)
    label_studio.connect_ml_backend(project_id, backend.url)

    counts = []
    for _ in range(3):
        answer = retrieve_predictions(label_studio, project_id)
        assert answer["detail"].startswith("Retrieved"), answer
        stored = stored_predictions(label_studio, project_id)
        assert all(len(predictions) == 1 for predictions in stored.values()), stored
        counts.append(len(stored))
    assert counts == [batch, 2 * batch, len(task_ids)]
    assert sorted(stored) == sorted(task_ids)
    assert "left without a prediction (over PREDICT_BUDGET_SECONDS=0.001)" in backend.log_tail()


def test_opening_a_task_predicts_it_alone_with_the_same_regions(
    label_studio: LocalLabelStudio,
    ml_backend: BackendServer,
    retrieved: Retrieval,
    shapes_project: ShapesProject,
    make_project: Callable[..., tuple[int, list[int]]],
) -> None:
    """An annotator opening a task without predictions makes LS ask /predict for that task.

    The two ways in: the labeling stream (`GET /api/projects/{id}/next`, "Label All Tasks") and
    the Data Manager (`GET /api/tasks/{id}`, clicking a task). Both must show what "Retrieve
    Predictions" stored for the same image.
    """
    source = sorted(shapes_project.files)[:2]
    project_id, [first, second] = make_project(
        "e2e open a task", [shapes_project.files[t] for t in source]
    )
    label_studio.connect_ml_backend(project_id, ml_backend.url)
    headers = label_studio.auth_headers()

    streamed = requests.get(
        f"{label_studio.url}/api/projects/{project_id}/next", headers=headers, timeout=60
    )
    clicked = requests.get(
        f"{label_studio.url}/api/tasks/{second}",
        params={"project": project_id},
        headers=headers,
        timeout=60,
    )

    assert streamed.status_code == 200, streamed.text
    assert clicked.status_code == 200, clicked.text
    assert streamed.json()["id"] == first  # sequential sampling: the first unlabeled task
    for opened, original in ((streamed.json(), source[0]), (clicked.json(), source[1])):
        [shown] = opened["predictions"]
        [batch] = retrieved.predictions[original]
        assert shown["model_version"] == batch.model_version
        assert shown["result"], "the backend found nothing on an image with shapes"
        assert same_regions(shown["result"], batch.result), (shown["result"], batch.result)
    log = ml_backend.log_path.read_text(encoding="utf-8")
    # The service logs each /predict call: "project=N model_version=V answered K tasks ...".
    single_calls = re.findall(
        rf"project={project_id} model_version=\S+ answered (\d+) tasks\b", log
    )
    assert single_calls == ["1", "1"]


def _events(store_path: Path, project_id: int) -> list[Event]:
    store = EventStore(store_path)
    try:
        return store.history(project_id)  # pending() leaves payloads out
    finally:
        store.close()


def test_annotation_events_reach_the_webhook(
    label_studio: LocalLabelStudio,
    ml_backend: BackendServer,
    shapes_project: ShapesProject,
    make_project: Callable[..., tuple[int, list[int]]],
) -> None:
    source = sorted(shapes_project.files)[:2]
    truth = [shapes_project.truth[t] for t in source]
    project_id, [task_a, task_b] = make_project(
        "e2e webhooks", [shapes_project.files[t] for t in source]
    )
    label_studio.connect_ml_backend(project_id, ml_backend.url)
    client = label_studio.client()
    submitted = ls_regions(truth[0])
    assert len(submitted) >= 2, "the edit below removes a box, so the image needs two"

    created = client.annotations.create(id=task_a, result=submitted, was_cancelled=False)
    client.annotations.update(id=created.id, result=submitted[:1])
    client.annotations.delete(id=created.id)
    again = client.annotations.create(id=task_a, result=submitted)
    other = client.annotations.create(id=task_b, result=ls_regions(truth[1]))
    client.actions.create(
        id="delete_tasks_annotations",
        project=project_id,
        selected_items={"all": False, "included": [task_a, task_b]},
    )

    store_path = ModelDir(Path(ml_backend.settings["MODEL_DIR"])).events_db
    events = wait_for(
        lambda: _events(store_path, project_id),
        lambda found: len(found) >= 6,
        f"6 webhook events of project {project_id}",
    )
    assert [(e.action, sorted(e.annotation_ids)) for e in events] == [
        ("ANNOTATION_CREATED", [created.id]),
        ("ANNOTATION_UPDATED", [created.id]),
        ("ANNOTATIONS_DELETED", [created.id]),
        ("ANNOTATION_CREATED", [again.id]),
        ("ANNOTATION_CREATED", [other.id]),
        ("ANNOTATIONS_DELETED", sorted([again.id, other.id])),
    ]
    payload: dict[str, Any] = events[0].payload
    assert payload["annotation"]["task"] == task_a
    assert _labels(payload["annotation"]["result"]) == _labels(submitted)
    assert payload["project"]["id"] == project_id
    assert _labels(events[1].payload["annotation"]["result"]) == _labels(submitted[:1])
    metrics = requests.get(f"{ml_backend.url}/metrics", timeout=10).json()
    project_metrics = metrics["projects"][str(project_id)]
    assert (project_metrics["queued_events"], project_metrics["live_version"]) == (6, None)


def _labels(result: list[dict[str, Any]]) -> list[str]:
    return sorted(region["value"]["rectanglelabels"][0] for region in result)
