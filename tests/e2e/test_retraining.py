"""Retraining against a real Label Studio: webhooks -> one run -> promoted model -> served.

Also the crash test: SIGKILL the backend (gunicorn and its training child) mid-run, restart it
on the same MODEL_DIR, and check that no event was lost and training resumes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.events import EventStore
from backend.layout import ModelDir
from devkit.datagen import ls_regions, write_images
from devkit.demo import BackendServer, retrieve_predictions
from devkit.local_label_studio import LocalLabelStudio, find_free_port
from tests.conftest import BOX_CONFIG

from .conftest import BackendEnv, MakeProject

TRAIN_EVERY = 6


def _metrics(url: str, project: int) -> dict[str, Any]:
    answer = requests.get(f"{url}/metrics", timeout=10)
    answer.raise_for_status()
    return dict(answer.json()["projects"].get(str(project)) or {})


def _wait(url: str, project: int, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _metrics(url, project)
        if predicate(info):
            return info
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last /metrics: {info}")


def _state(info: dict[str, Any]) -> str | None:
    return (info.get("last_training") or {}).get("state")


@pytest.fixture
def project_and_backend(
    tmp_path: Path,
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    project_backend_env: BackendEnv,
    make_project: MakeProject,
) -> Any:
    files = write_images(
        ls_document_root / f"retrain-{tmp_path.name}", 2 * TRAIN_EVERY + 3, seed=31
    )
    project, task_ids = make_project("e2e retraining", [p for p, _ in files])
    settings = project_backend_env(
        {
            "TRAIN_EVERY": str(TRAIN_EVERY),
            "TRAIN_QUIET_SECONDS": "3600",
            "TRAIN_EPOCHS": "15",
            "TRAIN_IMAGE_SIZE": "160",
            "TRAIN_MIN_IMAGES": "4",
            "EXPORT_ONNX": "1",
        },
    )
    server = BackendServer(find_free_port(), settings, tmp_path / "backend").start()
    try:
        label_studio.connect_ml_backend(project, server.url)
        yield project, task_ids, files, server, settings
    finally:
        server.stop()


def test_annotations_train_promote_and_serve_new_version(
    label_studio: LocalLabelStudio, project_and_backend: Any
) -> None:
    project, task_ids, files, server, settings = project_and_backend
    client = label_studio.client()
    for task_id, (_, sample) in zip(task_ids[:TRAIN_EVERY], files, strict=False):
        client.annotations.create(id=task_id, result=ls_regions(sample))

    info = _wait(
        server.url,
        project,
        lambda i: i.get("live_version") and _state(i) != "running",  # LIVE comes first
        240,
        "a promoted model",
    )
    assert info["live_version"] == "v1"
    assert info["last_training"]["state"] == "promoted"
    assert info["last_training"]["metrics"]["map50"] > 0.5
    assert info["queued_events"] == 0
    events = EventStore(ModelDir(Path(settings["MODEL_DIR"])).events_db)
    assert [r["state"] for r in events.runs(project)] == ["promoted"]  # one run for the storm

    # EXPORT_ONNX: the run exported v1 after promoting it, checked on its validation split
    meta = requests.get(f"{server.url}/models/{project}/live/meta?format=onnx", timeout=10)
    assert meta.status_code == 200, meta.text
    record = meta.json()["onnx"]
    assert record["passed"] is True and record["check"]["images"] >= 1
    assert record["check"]["images_from"].endswith("/data/images/val")
    # Every anchor's class scores agree; whether a box clears DETECT_CONF_FLOOR on these few
    # validation images depends on the run (15 epochs at 160 px), so none is required.
    assert record["check"]["unmatched"] == 0
    assert record["check"]["max_score_diff"] <= record["check"]["score_tolerance"]
    onnx = requests.get(f"{server.url}/models/{project}/live?format=onnx", timeout=30)
    assert onnx.status_code == 200 and onnx.headers["X-Model-Version"] == "v1"
    assert hashlib.sha256(onnx.content).hexdigest() == record["sha256"] == meta.json()["sha256"]

    # The promotion re-ranks the queue: Label Studio now serves the ranked tasks of v1, as
    # their first queue version.
    deadline = time.monotonic() + 120
    while client.projects.get(id=project).model_version != "v1.q1":
        assert time.monotonic() < deadline, "the queue was not ranked after the promotion"
        time.sleep(0.5)
    ranked = client.projects.get(id=project)
    assert ranked.sampling == "Uncertainty sampling"
    queue = requests.get(
        f"{label_studio.url}/api/projects/{project}/next",
        headers=label_studio.auth_headers(),
        timeout=30,
    )
    assert queue.status_code == 200, queue.text
    assert queue.json()["id"] in task_ids[TRAIN_EVERY:]

    def setup() -> str:
        body = {"project": f"{project}.1", "schema": BOX_CONFIG}
        return str(
            requests.post(f"{server.url}/setup", json=body, timeout=10).json()["model_version"]
        )

    while setup() != "v1.q1":  # the ranking stores its queue right after the switch
        assert time.monotonic() < deadline, "/setup never answered the queue version"
        time.sleep(0.1)
    # Retrieving predictions adds none: every unlabeled task holds its queue prediction
    unlabeled = task_ids[TRAIN_EVERY:]
    retrieve_predictions(label_studio, project, unlabeled)
    predictions = list(client.predictions.list(project=project))
    fresh = [p for p in predictions if p.task in unlabeled]
    assert len(fresh) == len(unlabeled)
    assert {p.model_version for p in fresh} == {"v1.q1"}
    assert sum(len(p.result or []) for p in fresh) >= len(unlabeled)


def test_sigkill_mid_training_loses_nothing_and_resumes(
    label_studio: LocalLabelStudio, project_and_backend: Any
) -> None:
    project, task_ids, files, server, settings = project_and_backend
    client = label_studio.client()
    annotated = list(zip(task_ids[:TRAIN_EVERY], files, strict=False))
    for task_id, (_, sample) in annotated:
        client.annotations.create(id=task_id, result=ls_regions(sample))
    _wait(server.url, project, lambda i: _state(i) == "running", 120, "a running training job")

    os.killpg(server.pid, signal.SIGKILL)  # gunicorn master, worker and the training child
    time.sleep(1.0)
    assert server.returncode() is not None
    log_dir = Path(settings["MODEL_DIR"]) / "projects" / str(project) / "logs"
    assert list(log_dir.glob("run-*.log")), "the training child should have been running"

    # While the backend is down, one more annotation is made: LS's webhook fails, but the
    # annotation is in LS and the next training run exports it anyway.
    extra_task, (_, extra_sample) = task_ids[TRAIN_EVERY], files[TRAIN_EVERY]
    client.annotations.create(id=extra_task, result=ls_regions(extra_sample))

    restarted = BackendServer(find_free_port(), settings, server.state_dir).start()
    try:
        events = EventStore(ModelDir(Path(settings["MODEL_DIR"])).events_db)
        info = _wait(
            restarted.url,
            project,
            lambda i: i.get("live_version") and _state(i) != "running",  # LIVE comes first
            240,
            "promotion",
        )
        states = [r["state"] for r in reversed(events.runs(project))]
        assert states == ["interrupted", "promoted"]
        assert info["live_version"] == "v1"
        assert info["queued_events"] == 0
        history = events.history(project)  # every webhook event from before the kill
        assert len(history) == TRAIN_EVERY
        assert {e.action for e in history} == {"ANNOTATION_CREATED"}
        assert all(e.processed_at is not None for e in history)
        promoted = events.runs(project)[0]
        assert (
            promoted["details"]["data"]["train_images"] + promoted["details"]["data"]["val_images"]
            == TRAIN_EVERY + 1
        )
    finally:
        restarted.stop()
