"""Hostile requests found by an adversarial probe: each answered 4xx (or 507) now, never 500."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from backend.config import Settings
from backend.events import EventStore
from backend.models.detector import Detector
from backend.serving.app import create_app
from tests.conftest import BOX_CONFIG

EVENT = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": []}}


def test_deeply_nested_json_is_a_400(client: FlaskClient) -> None:
    body = "[" * 5000 + "]" * 5000
    for route in ("/setup", "/predict", "/webhook"):
        response = client.post(route, data=body, content_type="application/json")
        assert response.status_code == 400, route
        assert "nested too deeply" in response.get_json()["message"]


def test_bad_utf8_is_a_400(client: FlaskClient) -> None:
    response = client.post("/webhook", data=b'{"action": "\xff"}', content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.get_json()["message"]


@pytest.mark.parametrize("project", [2**63, str(2**63) + ".17", "9" * 300, 0, -1])
def test_out_of_range_project_ids_are_400s_and_leave_metrics_working(
    client: FlaskClient, project: object
) -> None:
    setup = {"project": project, "schema": BOX_CONFIG, "extra_params": {"train_epochs": 3}}
    assert client.post("/setup", json=setup).status_code == 400
    webhook = client.post("/webhook", json={**EVENT, "project": project})
    assert webhook.status_code == 400
    assert "expected a project id from 1 to" in webhook.get_json()["message"]
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics?format=prometheus").status_code == 200


def test_largest_project_id_is_accepted(client: FlaskClient) -> None:
    response = client.post("/webhook", json={**EVENT, "project": 2**63 - 1})
    assert response.status_code == 201
    assert str(2**63 - 1) in client.get("/metrics").get_json()["projects"]


def test_webhook_event_over_max_event_bytes_is_a_413_and_not_stored(settings: Settings) -> None:
    app = create_app(replace(settings, max_event_bytes=10_000))
    client = app.test_client()
    big = {**EVENT, "project": 3, "annotation": {"id": 1, "result": [{"x": "y" * 20_000}]}}
    response = client.post("/webhook", json=big)
    assert response.status_code == 413
    assert "10000-byte limit" in response.get_json()["message"]
    assert app.extensions["ls_active_yolo"].events.history(3) == []
    assert client.post("/webhook", json={**EVENT, "project": 3}).status_code == 201


def test_oversize_chunked_body_is_a_413(settings: Settings) -> None:
    """A body with no Content-Length (chunked) is cut at MAX_REQUEST_BYTES while reading."""
    client = create_app(replace(settings, max_request_bytes=4096)).test_client()
    response = client.post(
        "/predict",
        input_stream=io.BytesIO(b"[" + b"0," * 100_000 + b"0]"),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets for chunked
    )
    assert response.status_code == 413


def test_pending_events_are_read_without_their_payloads(tmp_path: Path) -> None:
    """The scheduler polls pending events every few seconds: it must not re-parse payloads."""
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(2, "ANNOTATION_CREATED", (5,), {"annotation": {"id": 5}, "big": "x" * 100_000})
    (pending,) = events.pending(2)
    assert pending.annotation_ids == (5,) and pending.payload is None
    assert events.history(2)[0].payload == {"annotation": {"id": 5}, "big": "x" * 100_000}


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (root can mount one; CI runs as root) to fill up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_a_507_reported_by_health_and_recovers(
    settings: Settings, full_disk: Path
) -> None:
    client = create_app(replace(settings, model_dir=full_disk / "models")).test_client()
    assert client.post("/webhook", json={**EVENT, "project": 4}).status_code == 201
    assert client.get("/health").get_json()["storage"]["status"] == "ok"
    filler = full_disk / "filler"
    with filler.open("wb") as handle, pytest.raises(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()

    refused = client.post(
        "/webhook",
        json={**EVENT, "project": 4, "annotation": {"id": 2, "result": ["z" * 200_000]}},
    )
    assert refused.status_code == 507, refused.get_json()
    assert refused.get_json()["error"] == "storage_full"
    setup = {"project": 4, "schema": BOX_CONFIG, "extra_params": {"train_epochs": 3}}
    assert client.post("/setup", json=setup).status_code == 507
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json()["storage"]["status"] == "failing"
    assert health.get_json()["storage"]["error"] == "storage_full"

    filler.unlink()  # space comes back: no restart needed
    assert client.get("/health").get_json()["storage"]["status"] == "ok"
    again = client.post("/webhook", json={**EVENT, "project": 4, "annotation": {"id": 2}})
    assert again.status_code == 201
    assert client.post("/setup", json=setup).status_code == 200
    metrics = client.get("/metrics").get_json()
    assert metrics["projects"]["4"]["queued_events"] == 2  # the first event was not lost


def test_health_shows_no_file_paths(client: FlaskClient, trained_weights: Path) -> None:
    text = client.get("/health").get_data(as_text=True)
    assert str(trained_weights) not in text and str(trained_weights.parent) not in text


def _png(path: Path, size: int) -> str:
    Image.new("RGB", (size, size), (90, 90, 90)).save(path)
    return str(path)


def test_large_batches_are_decoded_within_the_request_pixel_budget(
    settings: Settings, image_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four 1000x1000 images with a 2.5 MP budget: every task is answered, in forward
    passes that never hold more than the budget (one image over it would go alone)."""
    folder = image_root / "budget"
    folder.mkdir(exist_ok=True)
    refs = [_png(folder / f"{i}.png", 1000) for i in range(4)]
    passes: list[int] = []
    original = Detector.predict

    def recording(self: Detector, images: list) -> list:  # type: ignore[type-arg]
        passes.append(sum(image.shape[0] * image.shape[1] for image in images))
        return original(self, images)

    monkeypatch.setattr(Detector, "predict", recording)
    client = create_app(replace(settings, max_request_pixels=2_500_000)).test_client()
    body = {
        "tasks": [{"id": i + 1, "data": {"image": ref}} for i, ref in enumerate(refs)],
        "project": 9,
        "label_config": BOX_CONFIG,
    }
    response = client.post("/predict", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == 4 and all(r["model_version"].startswith("shapes-") for r in results)
    assert passes == [2_000_000, 2_000_000]
