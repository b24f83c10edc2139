"""Prove the e2e harness against a real Label Studio 1.23: server, tokens, local files, UI.

Each test builds its own project, so tests stay independent while sharing one server.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from devkit.local_label_studio import LabelStudioError, LocalLabelStudio

from .browser import count_task_regions

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car"/>
    <Label value="Truck"/>
  </RectangleLabels>
</View>"""

IMAGE_SIZE = (320, 240)
# Two filled shapes and the boxes around them, in pixels (left, top, right, bottom).
SHAPES = {"Car": (40, 40, 140, 120), "Truck": (180, 100, 280, 200)}
MARGIN = 12


def write_image(path: Path, colour: str = "white") -> Path:
    """A small PNG with two filled rectangles, big enough to see boxes on a screenshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", IMAGE_SIZE, colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle(SHAPES["Car"], fill="red")
    draw.rectangle(SHAPES["Truck"], fill="blue")
    image.save(path)
    return path


def box_region(label: str, left: int, top: int, right: int, bottom: int) -> dict[str, Any]:
    """One RectangleLabels region in LS's JSON: x/y/width/height in percent of the image."""
    width, height = IMAGE_SIZE
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100 * left / width,
            "y": 100 * top / height,
            "width": 100 * (right - left) / width,
            "height": 100 * (bottom - top) / height,
            "rotation": 0,
            "rectanglelabels": [label],
        },
        "score": 0.87,
    }


def test_server_is_healthy(label_studio: LocalLabelStudio) -> None:
    answer = requests.get(f"{label_studio.url}/health", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "UP"}


def test_server_binds_loopback_only(label_studio: LocalLabelStudio) -> None:
    assert label_studio.url.startswith("http://127.0.0.1:")
    text = label_studio.log_path.read_text(encoding="utf-8", errors="replace")
    assert f"Starting development server at http://127.0.0.1:{label_studio.port}/" in text


def test_legacy_token_and_pat_both_list_projects(label_studio: LocalLabelStudio) -> None:
    project_id = label_studio.create_project("Token check", LABEL_CONFIG)
    pat = label_studio.personal_access_token()
    assert pat.count(".") == 2  # a JWT refresh token, unlike the legacy hex token
    assert label_studio.personal_access_token() == pat  # created once, then reused

    for token in (label_studio.legacy_token, pat):
        ids = [project.id for project in label_studio.client(token).projects.list()]
        assert project_id in ids


def test_wrong_token_is_refused(label_studio: LocalLabelStudio) -> None:
    answer = requests.get(
        f"{label_studio.url}/api/projects",
        headers={"Authorization": "Token not-the-right-token"},
        timeout=10,
    )
    assert answer.status_code == 401


def test_local_file_tasks_are_imported_and_served(
    label_studio: LocalLabelStudio, ls_document_root: Path
) -> None:
    images = [
        write_image(ls_document_root / "served" / "white.png"),
        write_image(ls_document_root / "served" / "grey image.png", colour="grey"),
    ]
    project_id = label_studio.create_project("Local files", LABEL_CONFIG)

    task_ids = label_studio.import_images(project_id, images)

    assert len(task_ids) == 2
    # A PAT is a refresh token: plain HTTP clients trade it for a short-lived access token.
    refreshed = requests.post(
        f"{label_studio.url}/api/token/refresh/",
        json={"refresh": label_studio.personal_access_token()},
        timeout=10,
    )
    refreshed.raise_for_status()
    headers_by_token = {
        "legacy": label_studio.auth_headers(),
        "pat": {"Authorization": f"Bearer {refreshed.json()['access']}"},
    }
    client = label_studio.client()
    for task_id, image in zip(task_ids, images, strict=True):
        url = client.tasks.get(task_id).data["image"]
        assert url == label_studio.local_file_url(image)
        assert url.startswith("/data/local-files/?d=served/")
        for name, headers in headers_by_token.items():
            answer = requests.get(f"{label_studio.url}{url}", headers=headers, timeout=10)
            assert answer.status_code == 200, name
            assert answer.content == image.read_bytes(), name
        anonymous = requests.get(f"{label_studio.url}{url}", timeout=10, allow_redirects=False)
        assert anonymous.status_code in (401, 403)


def test_images_in_document_root_itself_are_rejected(
    label_studio: LocalLabelStudio, ls_document_root: Path
) -> None:
    image = write_image(ls_document_root / "top-level.png")
    project_id = label_studio.create_project("Root files", LABEL_CONFIG)
    with pytest.raises(ValueError, match="subdirectories"):
        label_studio.import_images(project_id, [image])


class _FakeMLBackend(BaseHTTPRequestHandler):
    """Just enough of the ML backend protocol for LS to accept it: /health and /setup."""

    credentials = ("", "")
    seen_auth: list[str | None] = []

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization")
        self.seen_auth.append(header)
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return header == f"Basic {expected}"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._authorised():
            self._reply(401, {"detail": "unauthorised"})
        else:
            self._reply(200, {"status": "UP", "model_class": "Fake"})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self._authorised():
            self._reply(401, {"detail": "unauthorised"})
        else:
            self._reply(200, {"model_version": "fake-1"})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep the test output quiet."""


@pytest.fixture()
def fake_ml_backend() -> Iterator[str]:
    """A basic-auth-protected stand-in ML backend on 127.0.0.1; yields its URL."""
    _FakeMLBackend.credentials = ("ml-user", "ml-pass-123")
    _FakeMLBackend.seen_auth = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeMLBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_ml_backend_connects_with_basic_auth(
    label_studio: LocalLabelStudio, fake_ml_backend: str
) -> None:
    project_id = label_studio.create_project("ML backend", LABEL_CONFIG)

    with pytest.raises(LabelStudioError, match="authentication"):
        label_studio.connect_ml_backend(project_id, fake_ml_backend)
    connection = label_studio.connect_ml_backend(
        project_id, fake_ml_backend, basic_auth=("ml-user", "ml-pass-123")
    )

    assert connection.state == "CO"
    backend = label_studio.client().ml.get(connection.id)
    assert backend.url == fake_ml_backend
    assert backend.auth_method == "BASIC_AUTH"
    assert backend.basic_auth_user == "ml-user"
    assert any(header and header.startswith("Basic ") for header in _FakeMLBackend.seen_auth)
    # LS subscribes the backend to every project event at <url>/webhook.
    hooks = requests.get(
        f"{label_studio.url}/api/webhooks",
        params={"project": project_id},
        headers=label_studio.auth_headers(),
        timeout=10,
    ).json()
    assert [hook["url"] for hook in hooks] == [f"{fake_ml_backend}/webhook"]


def test_prediction_boxes_render_in_the_editor(
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    chromium: Path,
    test_output_dir: Path,
) -> None:
    image = write_image(ls_document_root / "browser" / "boxes.png")
    project_id = label_studio.create_project("Browser check", LABEL_CONFIG)
    [task_id] = label_studio.import_images(project_id, [image])
    # Boxes a little larger than the shapes, so the screenshot shows both.
    regions = [
        box_region(label, left - MARGIN, top - MARGIN, right + MARGIN, bottom + MARGIN)
        for label, (left, top, right, bottom) in SHAPES.items()
    ]
    answer = requests.post(
        f"{label_studio.url}/api/predictions/",
        json={"task": task_id, "result": regions, "score": 0.5, "model_version": "e2e-1"},
        headers=label_studio.auth_headers(),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text

    screenshot = test_output_dir / "label-studio-prediction-boxes.png"
    shown = count_task_regions(
        label_studio.url,
        label_studio.username,
        label_studio.password,
        project_id,
        task_id,
        screenshot,
        expected_regions=len(regions),
        chromium=chromium,
    )

    assert shown == len(regions)
    assert screenshot.stat().st_size > 10_000
