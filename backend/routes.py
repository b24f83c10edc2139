"""HTTP routes of the ML backend protocol: parse, delegate to MLService, serialise."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from backend.errors import BadRequest
from backend.service import MLService

bp = Blueprint("ml", __name__)


def _service() -> MLService:
    return current_app.extensions["ls_active_yolo"]


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


@bp.get("/")
@bp.get("/health")
def health() -> Response:
    return jsonify(_service().health())


@bp.post("/setup")
def setup() -> Response:
    return jsonify(_service().setup(_json_body()))


@bp.post("/predict")
def predict() -> Response:
    return jsonify(_service().predict(_json_body()))


@bp.post("/webhook")
def webhook() -> tuple[Response, int]:
    answer = _service().record_event(_json_body())
    return jsonify(answer), 201 if answer["status"] == "recorded" else 200


@bp.get("/metrics")
def metrics() -> Response:
    data = _service().metrics()
    wants_text = request.args.get("format") == "prometheus" or (
        request.accept_mimetypes.best_match(["application/json", "text/plain"]) == "text/plain"
    )
    if wants_text:
        return Response(_prometheus(data), mimetype="text/plain; version=0.0.4")
    return jsonify(data)


def _prometheus(data: dict[str, Any]) -> str:
    lines = [
        "# HELP ls_active_yolo_queued_events Webhook events not yet consumed by training.",
        "# TYPE ls_active_yolo_queued_events gauge",
    ]
    for project, info in data["projects"].items():
        lines.append(f'ls_active_yolo_queued_events{{project="{project}"}} {info["queued_events"]}')
    lines += [
        "# HELP ls_active_yolo_live_model Live model version per project (value is always 1).",
        "# TYPE ls_active_yolo_live_model gauge",
    ]
    for project, info in data["projects"].items():
        version = info["live_version"]
        if version:
            lines.append(f'ls_active_yolo_live_model{{project="{project}",version="{version}"}} 1')
    return "\n".join(lines) + "\n"
