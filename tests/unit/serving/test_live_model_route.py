"""GET /models/{project_id}/live and .../live/meta: the live model's file (.pt or its checked
.onnx) with its metadata, behind basic auth; clear 404s and 400s."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from werkzeug.test import TestResponse

from backend.config import Settings
from backend.models.registry import ModelRegistry
from backend.serving.app import create_app
from tests.conftest import EXPORTED_PROJECT, ExportedModel, unexported_version

P = EXPORTED_PROJECT
CREDENTIALS = ("device", "update-s3cret")
AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()}


@pytest.fixture
def app(settings: Settings, exported_model: ExportedModel, tmp_path: Path) -> Flask:
    model_dir = exported_model.copy(tmp_path / "exported")
    user, password = CREDENTIALS
    return create_app(
        replace(settings, model_dir=model_dir, basic_auth_user=user, basic_auth_pass=password)
    )


def _fits(app: Flask, path: str, response: TestResponse) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operation = schema[path]["GET"]
    assert str(response.status_code) in operation.definition.raw["responses"]
    operation.validate_response(response)


def test_the_weights_and_the_checked_onnx_come_with_their_metadata(
    app: Flask, exported_model: ExportedModel, trained_weights: Path
) -> None:
    client = app.test_client()
    weights = client.get(f"/models/{P}/live", headers=AUTH)
    assert weights.status_code == 200, weights.get_data()[:200]
    assert weights.data == trained_weights.read_bytes()
    digest = hashlib.sha256(weights.data).hexdigest()
    assert weights.headers["X-Model-Version"] == "v1"
    assert weights.headers["X-Model-SHA256"] == digest
    assert weights.headers["ETag"] == f'"{digest}"'
    assert weights.headers["Content-Type"] == "application/octet-stream"
    assert "filename=project-3-v1.pt" in weights.headers["Content-Disposition"]
    meta = client.get(f"/models/{P}/live/meta", headers=AUTH).get_json()
    assert meta == {
        "project": P,
        "version": "v1",
        "format": "pt",
        "filename": "project-3-v1.pt",
        "bytes": len(weights.data),
        "sha256": digest,
        "classes": ["square", "circle", "triangle"],
        "image_size": 160,
        "display_threshold": 0.3,
        "metrics": {"map50": 0.9, "map50_95": 0.6},
        "created_at": 1.0,
        "promoted_at": meta["promoted_at"],
        "onnx": None,
    }
    assert isinstance(meta["promoted_at"], float)

    onnx = client.get(f"/models/{P}/live?format=onnx", headers=AUTH)
    assert onnx.status_code == 200
    assert hashlib.sha256(onnx.data).hexdigest() == exported_model.record["sha256"]
    assert onnx.headers["X-Model-SHA256"] == exported_model.record["sha256"]
    assert "filename=project-3-v1.onnx" in onnx.headers["Content-Disposition"]
    onnx_meta = client.get(f"/models/{P}/live/meta?format=onnx", headers=AUTH).get_json()
    assert onnx_meta["onnx"] == exported_model.record
    assert onnx_meta["sha256"] == exported_model.record["sha256"]
    assert (onnx_meta["format"], onnx_meta["bytes"]) == ("onnx", len(onnx.data))
    _fits(app, "/models/{project_id}/live", onnx)
    _fits(app, "/models/{project_id}/live/meta", client.get(f"/models/{P}/live/meta", headers=AUTH))


def test_missing_models_are_404s_and_bad_requests_400s(app: Flask) -> None:
    client = app.test_client()
    registry = ModelRegistry(Path(app.extensions["ls_active_yolo"].settings.model_dir))
    registry.promote(P, unexported_version(registry).version, reason="test")

    answers = {
        f"/models/{P}/live?format=onnx": (404, "project 3's live model v2 has no ONNX export"),
        f"/models/{P}/live/meta?format=onnx": (404, "has no ONNX export (EXPORT_ONNX"),
        "/models/4/live": (404, "project 4 has no live model"),
        "/models/4/live/meta": (404, "project 4 has no live model"),
        f"/models/{P}/live?format=tflite": (400, "format: Input should be 'pt' or 'onnx'"),
        f"/models/{P}/live/meta?format=": (400, "format: Input should be 'pt' or 'onnx'"),
        "/models/0/live": (400, "project_id: Input should be greater than or equal to 1"),
    }
    for url, (status, message) in answers.items():
        response = client.get(url, headers=AUTH)
        assert response.status_code == status, (url, response.get_json())
        assert message in response.get_json()["message"], url
        _fits(app, "/models/{project_id}/live" + ("/meta" if "/meta" in url else ""), response)
    assert client.get(f"/models/{P}/live", headers=AUTH).headers["X-Model-Version"] == "v2"

    registry.promote(P, "v1", reason="test")  # its export is still there, and handed out
    v1_onnx = registry.get(P, "v1").onnx
    assert v1_onnx is not None
    assert client.get(f"/models/{P}/live?format=onnx", headers=AUTH).status_code == 200
    with v1_onnx.open("ab") as changed:  # bytes that no longer hash to the record
        changed.write(b"\0")
    refused = client.get(f"/models/{P}/live?format=onnx", headers=AUTH)
    assert refused.status_code == 503 and "no longer matches" in refused.get_json()["message"]


def test_the_model_routes_need_basic_auth(app: Flask) -> None:
    client = app.test_client()
    for url in (f"/models/{P}/live", f"/models/{P}/live/meta?format=onnx"):
        assert client.get(url).status_code == 401
        wrong = {"Authorization": "Basic " + base64.b64encode(b"device:nope").decode()}
        assert client.get(url, headers=wrong).status_code == 401
        assert client.get(url, headers=AUTH).status_code == 200
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/models/{project_id}/live", "/models/{project_id}/live/meta"):
        operation = paths[path]["get"]
        assert operation["security"] == [{"basicAuth": []}]
        assert {"200", "400", "401", "404", "503"} <= set(operation["responses"])
    headers = paths["/models/{project_id}/live"]["get"]["responses"]["200"]["headers"]
    assert set(headers) == {"X-Model-Version", "X-Model-SHA256", "ETag"}
