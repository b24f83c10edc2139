"""Label Studio's `GET /api/ml/{id}/versions` answers the backend's versions (`GET /versions`),
consistent with the version Label Studio's project serves and its model-version picker shows.

The registry is filled by the registry's own code (copies of the session's weights), and the
queue is ranked for real after Label Studio's "Start Training" (the run itself is skipped for
too little data: no training here; test_retraining.py trains).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from backend.models.registry import ModelRegistry
from devkit.datagen import SyntheticImage
from devkit.local_label_studio import LocalLabelStudio

from .browser import model_version_picker
from .conftest import BackendFactory

SCREENSHOT = "e2e-model-versions.png"


def _ml_versions(label_studio: LocalLabelStudio, ml_backend_id: int) -> requests.Response:
    return requests.get(
        f"{label_studio.url}/api/ml/{ml_backend_id}/versions",
        headers=label_studio.auth_headers(),
        timeout=30,
    )


def test_label_studio_lists_the_backend_versions(
    label_studio: LocalLabelStudio,
    backend_factory: BackendFactory,
    make_project: Callable[..., tuple[int, list[int]]],
    shapes_images: list[tuple[Path, SyntheticImage]],
    ls_document_root: Path,
    trained_weights: Path,
    chromium: Path,
    test_output_dir: Path,
) -> None:
    backend = backend_factory.start(
        "versions",
        api_key=label_studio.legacy_token,
        document_root=ls_document_root,
        env={
            "TRAINING": "1",
            "TRAIN_POLL_SECONDS": "0.3",
            "TRAIN_MIN_IMAGES": "100",
            "ENCODER_TRAIN_SECONDS": "0",
        },
    )
    project, _ = make_project("e2e versions", [path for path, _ in shapes_images[:4]])
    registry = ModelRegistry(Path(backend.settings["MODEL_DIR"]))
    for _ in range(3):
        registry.create_version(project, trained_weights, {})
    registry.promote(project, "v2", reason="e2e")  # v3: trained after, kept out by the gate
    connection = label_studio.connect_ml_backend(project, backend.url)

    answer = _ml_versions(label_studio, connection.id)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"versions": ["v2", "v3", "v1"]}  # no "Upgrade your ML backend"
    ml_backend: Any = label_studio.client().ml.get(id=connection.id)
    assert ml_backend.model_version == "v2"  # what /setup answered: the list's first

    # "Start Training" in Label Studio: the run is skipped, the queue is ranked with v2, and
    # the project serves its first queue version, which the list now names the live model by
    trained = requests.post(
        f"{label_studio.url}/api/ml/{connection.id}/train",
        headers=label_studio.auth_headers(),
        timeout=30,
    )
    assert trained.status_code == 200, trained.text
    deadline = time.monotonic() + 120
    while label_studio.client().projects.get(id=project).model_version != "v2.q1":
        assert time.monotonic() < deadline, "the queue was not ranked after Start Training"
        time.sleep(0.5)
    while _ml_versions(label_studio, connection.id).json()["versions"][0] != "v2.q1":
        assert time.monotonic() < deadline, "/versions never named the queue version"
        time.sleep(0.2)  # the ranking stores its queue right after the switch
    assert _ml_versions(label_studio, connection.id).json() == {"versions": ["v2.q1", "v3", "v1"]}
    screenshot = test_output_dir / SCREENSHOT
    selected, options = model_version_picker(
        label_studio.url,
        label_studio.username,
        label_studio.password,
        project,
        screenshot,
        chromium=chromium,
    )
    assert selected == "v2.q1"
    assert any(option.startswith("v2.q1 (") for option in options), options
    assert screenshot.stat().st_size > 10_000

    # Label Studio 1.23 names no project in this request: with a second project holding
    # versions on the same backend, it cannot be told apart, and the answer says so.
    registry.create_version(project + 1000, trained_weights, {})
    ambiguous = _ml_versions(label_studio, connection.id)
    assert ambiguous.status_code == 400, ambiguous.text
    direct = requests.get(f"{backend.url}/versions", params={"project": project}, timeout=10)
    assert direct.json()["versions"] == ["v2.q1", "v3", "v1"]
    bad = requests.get(f"{backend.url}/versions", params={"project": "x"}, timeout=10)
    assert bad.status_code == 400 and "invalid project reference" in bad.json()["message"]
