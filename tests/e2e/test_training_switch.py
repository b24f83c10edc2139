"""Label Studio's "Start model training on annotation submission" against a real Label Studio.

With the switch on (the project's `min_annotations_to_start_training` = N), Label Studio sends
START_TRAINING at every N-th annotation, and only that starts a run: TRAIN_EVERY and
TRAIN_QUIET_SECONDS do not. With it off, TRAIN_EVERY does. Every run here is skipped for too
little data (TRAIN_MIN_IMAGES is above the project's size): what is checked is what starts a
run, and a skipped run starts and ends in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.events import EventStore
from backend.layout import ModelDir
from devkit.datagen import ls_regions, write_images
from devkit.demo import BackendServer
from devkit.local_label_studio import LocalLabelStudio, find_free_port

from .conftest import BackendEnv, MakeProject

TRAIN_EVERY = 2
LABEL_STUDIO_EVERY = 3  # the switch's N: above TRAIN_EVERY, so TRAIN_EVERY would fire first


def _runs(events: EventStore, project: int) -> list[dict[str, Any]]:
    return list(reversed(events.runs(project)))


def _wait_for_finished_run(events: EventStore, project: int, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(events, project)
        if runs and all(r["state"] != "running" for r in runs):
            return runs
        time.sleep(0.3)
    raise AssertionError(f"no finished run within {timeout}s; runs: {_runs(events, project)}")


@pytest.fixture
def switch_setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    project_backend_env: BackendEnv,
    make_project: MakeProject,
) -> Iterator[tuple[int, list[Any], EventStore]]:
    """A project of 4 images connected to its own backend: (project, [(task, sample)], events).

    TRAIN_QUIET_SECONDS is the test's parameter (`indirect`), else an hour.
    """
    files = write_images(ls_document_root / f"switch-{tmp_path.name}", 4, seed=41)
    project, task_ids = make_project("e2e training switch", [p for p, _ in files])
    settings = project_backend_env(
        {
            "TRAIN_EVERY": str(TRAIN_EVERY),
            "TRAIN_QUIET_SECONDS": str(getattr(request, "param", 3600)),
            "TRAIN_MIN_IMAGES": "100",
            "ENCODER_TRAIN_SECONDS": "0",
        },
    )
    server = BackendServer(find_free_port(), settings, tmp_path / "backend").start()
    try:
        label_studio.connect_ml_backend(project, server.url)
        events = EventStore(ModelDir(Path(settings["MODEL_DIR"])).events_db)
        samples = [sample for _, sample in files]
        yield project, list(zip(task_ids, samples, strict=True)), events
    finally:
        server.stop()


@pytest.mark.parametrize("switch_setup", [1], indirect=True)  # quiet: would train after 1 s
def test_switch_on_label_studio_start_training_alone_starts_runs(
    label_studio: LocalLabelStudio, switch_setup: Any
) -> None:
    project, tasks, events = switch_setup
    answer = requests.patch(
        f"{label_studio.url}/api/projects/{project}",
        json={"min_annotations_to_start_training": LABEL_STUDIO_EVERY},
        headers=label_studio.auth_headers(),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    client = label_studio.client()
    for task, sample in tasks[:2]:  # TRAIN_EVERY reached, then quiet for longer than 1 s
        client.annotations.create(id=task, result=ls_regions(sample))
    time.sleep(3.0)  # ten polls of the trainer
    assert _runs(events, project) == []
    assert [e.action for e in events.pending(project)] == ["ANNOTATION_CREATED"] * 2

    task, sample = tasks[2]  # the project's third annotation: Label Studio's START_TRAINING
    client.annotations.create(id=task, result=ls_regions(sample))
    runs = _wait_for_finished_run(events, project, timeout=60)

    actions = [e.action for e in events.history(project)]
    assert "START_TRAINING" in actions
    assert actions.index("START_TRAINING") > 1  # not before the third annotation
    assert [r["reason"] for r in runs] == ["requested"] * len(runs)
    assert runs[0]["state"] == "skipped"
    start = next(e for e in events.history(project) if e.action == "START_TRAINING")
    assert start.payload is not None
    assert start.payload["project"]["min_annotations_to_start_training"] == LABEL_STUDIO_EVERY


def test_switch_off_train_every_starts_runs(
    label_studio: LocalLabelStudio, switch_setup: Any
) -> None:
    project, tasks, events = switch_setup
    assert label_studio.client().projects.get(id=project).min_annotations_to_start_training == 0
    client = label_studio.client()
    for task, sample in tasks[:TRAIN_EVERY]:
        client.annotations.create(id=task, result=ls_regions(sample))

    runs = _wait_for_finished_run(events, project, timeout=60)

    assert [r["reason"] for r in runs] == [f"{TRAIN_EVERY} annotations changed"]
    assert runs[0]["state"] == "skipped"
    assert "START_TRAINING" not in {e.action for e in events.history(project)}
