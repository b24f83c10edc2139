"""/openapi.json: every route described, requests checked against the same models, and the
real answers of each route (success and error) fitting what is described.

The generated-request run against a live server is tests/integration/test_schemathesis.py.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from schemathesis import BaseSchema
from werkzeug.test import TestResponse

from backend.config import Settings
from backend.serving.app import create_app
from tests.conftest import BOX_CONFIG

UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def schema(app: Flask) -> BaseSchema:
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def _fits(schema: BaseSchema, method: str, path: str, response: TestResponse) -> None:
    """The response's status is documented for the operation and its body fits that status's
    schema."""
    operation = schema[path][method]
    documented = operation.definition.raw["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code)
    operation.validate_response(response)


def test_every_route_and_method_is_described(app: Flask) -> None:
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    served = {
        (rule.rule.replace("<int:project_id>", "{project_id}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - UNDOCUMENTED_METHODS
    }
    described = {(path, method) for path, item in paths.items() for method in item}
    assert described == served
    assert ("/openapi.json", "get") in described and ("/webhook", "post") in described


def test_the_description_loads_and_names_its_schemas(schema: BaseSchema) -> None:
    operations = [result.ok().label for result in schema.get_all_operations()]  # raises if bad
    assert len(operations) == 10  # all but GET /openapi.json: schemathesis leaves its source out
    predict = schema["/predict"]["POST"].definition.raw
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert set(predict["responses"]) == {"200", "400", "413", "422", "500", "503"}
    webhook = schema["/webhook"]["POST"].definition.raw["responses"]
    assert {"200", "201", "413", "503", "507"} <= set(webhook)
    assert "401" not in webhook and "security" not in predict  # basic auth is off


def test_answers_fit_their_description(
    app: Flask, schema: BaseSchema, settings: Settings, image_root: Path
) -> None:
    client = app.test_client()
    shapes = [str(p) for p in sorted((image_root / "shapes").glob("*.jpg"))[:2]]
    tasks = [{"id": i, "data": {"image": ref}} for i, ref in enumerate([*shapes, "/etc/x"])]
    predict = {"tasks": tasks, "project": "3.17", "label_config": BOX_CONFIG, "params": {}}
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"id": 9}}
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/", {}, 200),
        ("GET", "/health", {}, 200),
        ("POST", "/setup", {"json": {"project": "3.17", "schema": BOX_CONFIG}}, 200),
        ("POST", "/setup", {"json": {"project": 0, "schema": BOX_CONFIG}}, 400),
        ("POST", "/setup", {"json": {"schema": "<View/>"}}, 422),
        ("POST", "/predict", {"json": predict}, 200),
        ("POST", "/predict", {"json": {**predict, "tasks": "none"}}, 400),
        ("POST", "/predict", {"data": b"x" * (settings.max_request_bytes + 1)}, 413),
        ("POST", "/webhook", {"json": event}, 201),
        ("POST", "/webhook", {"json": {"action": "PROJECT_UPDATED"}}, 200),
        ("POST", "/webhook", {"json": {"action": ""}}, 400),
        ("GET", "/versions", {"query_string": "project=3.17"}, 200),
        ("GET", "/versions", {"query_string": "project=x"}, 400),
        ("GET", "/metrics", {}, 200),
        ("GET", "/metrics", {"query_string": "format=prometheus"}, 200),
        ("GET", "/metrics", {"headers": {"Accept": "text/plain"}}, 200),
        ("GET", "/analytics/3", {}, 200),
        ("GET", "/analytics/0", {}, 400),
        ("GET", "/models/3/live", {}, 404),
        ("GET", "/models/3/live", {"query_string": "format=x"}, 400),
        ("GET", "/models/3/live/meta", {"query_string": "format=onnx"}, 404),
        ("GET", "/models/0/live/meta", {}, 400),
    ]
    for method, path, kwargs, status in calls:
        response = client.open(path, method=method, **kwargs)
        assert response.status_code == status, (method, path, response.get_data()[:200])
        documented = re.sub(r"^/(analytics|models)/\d+", r"/\1/{project_id}", path)
        _fits(schema, method, documented, response)
    # a task the time budget did not reach is answered [], which fits too
    tight = create_app(replace(settings, predict_batch=1, predict_budget_seconds=1e-6))
    answer = tight.test_client().post("/predict", json=predict)
    assert answer.get_json()["results"][1:] == [[], []]
    _fits(schema, "POST", "/predict", answer)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/predict", {"tasks": [], "label_config": BOX_CONFIG, "params": 5}, "params"),
        ("/predict", {"tasks": [3], "label_config": BOX_CONFIG}, "tasks.0"),
        ("/predict", {"tasks": [], "label_config": BOX_CONFIG, "project": 3.5}, "project"),
        ("/predict", {"tasks": [], "label_config": BOX_CONFIG, "project": True}, "project"),
        ("/setup", {"schema": 5}, "schema"),
        ("/setup", {"schema": BOX_CONFIG, "project": {"id": [1]}}, "project"),
        ("/webhook", {"action": ["ANNOTATION_CREATED"]}, "action"),
    ],
)
def test_requests_are_checked_against_the_described_models(
    client: FlaskClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "bad_request"
    assert "does not fit its schema" in answer["message"] and field in answer["message"]


def test_label_studio_fields_the_models_do_not_name_pass(
    client: FlaskClient, image_root: Path
) -> None:
    task = {"id": 1, "data": {"image": str(image_root / "blank.png")}, "annotations": []}
    body = {
        "tasks": [task],
        "project": {"id": 3, "title": "x"},
        "label_config": BOX_CONFIG,
        "params": {"login": None, "context": {"result": []}},
        "model_version": "v1",
        "\ud800": "a key no Unicode text holds",
    }
    assert client.post("/predict", json=body).status_code == 200


def test_with_basic_auth_the_description_is_open_and_says_where_auth_applies(
    settings: Settings,
) -> None:
    client = create_app(replace(settings, basic_auth_user="ls", basic_auth_pass="pw")).test_client()
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"
    predict = document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"basicAuth": []}] and "401" in predict["responses"]
    for path in ("/", "/health", "/openapi.json"):
        assert document["paths"][path]["get"]["security"] == []
        assert "401" not in document["paths"][path]["get"]["responses"]
    assert client.get("/metrics").status_code == 401
