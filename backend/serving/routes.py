"""HTTP routes of the ML backend protocol: parse, delegate to MLService, serialise."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from backend.errors import BadRequest, PayloadTooLarge
from backend.serving.exposition import prometheus_text
from backend.serving.service import MLService

bp = Blueprint("ml", __name__)


def _service() -> MLService:
    return current_app.extensions["ls_active_yolo"]


def _json_body(limit: int | None = None) -> dict[str, Any]:
    """The body as a JSON object. Over MAX_REQUEST_BYTES (checked while reading, chunked
    bodies too) werkzeug answers 413; `limit` is a tighter bound for this route."""
    raw = request.get_data(cache=False)
    if request.content_length is None:
        # werkzeug ends a chunked body at the limit silently; reading on raises its 413
        request.stream.read(1)
    if limit is not None and len(raw) > limit:
        raise PayloadTooLarge(f"request body is {len(raw)} bytes, over the {limit}-byte limit")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    except ValueError as exc:  # includes bad UTF-8
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


@bp.get("/")
@bp.get("/health")
def health() -> Response:
    return jsonify(_service().health())


@bp.post("/setup")
def setup() -> Response:
    return jsonify(_service().setup(_json_body(), base_url=request.host_url))


@bp.post("/predict")
def predict() -> Response:
    return jsonify(_service().predict(_json_body()))


@bp.get("/versions")
def versions() -> Response:
    """Label Studio's `GET /api/ml/{id}/versions`; `?project=<id>` when asked directly."""
    return jsonify(_service().versions(request.args.get("project")))


@bp.post("/webhook")
def webhook() -> tuple[Response, int]:
    service = _service()
    answer = service.record_event(_json_body(limit=service.settings.max_event_bytes))
    return jsonify(answer), 201 if answer["status"] == "recorded" else 200


@bp.get("/analytics/<int:project_id>")
def analytics(project_id: int) -> Response:
    """What the pre-annotations saved in one project: tables and plots (HTML)."""
    return Response(_service().analytics_page(project_id), mimetype="text/html")


@bp.get("/metrics")
def metrics() -> Response:
    data = _service().metrics()
    wants_text = request.args.get("format") == "prometheus" or (
        request.accept_mimetypes.best_match(["application/json", "text/plain"]) == "text/plain"
    )
    if wants_text:
        body, content_type = prometheus_text(data)
        return Response(body, content_type=content_type)
    return jsonify(data)
