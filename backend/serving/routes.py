"""HTTP routes of the ML backend protocol: parse, delegate to MLService, serialise."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from backend.errors import BadRequest, PayloadTooLarge
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


@bp.post("/webhook")
def webhook() -> tuple[Response, int]:
    service = _service()
    answer = service.record_event(_json_body(limit=service.settings.max_event_bytes))
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
    """The JSON status as Prometheus text (exposition format 0.0.4)."""
    series: dict[str, tuple[str, list[str]]] = {
        "queued_events": ("Webhook events not yet consumed by training.", []),
        "live_model": ("Live model version per project (value is always 1).", []),
        "last_training_duration_seconds": ("Duration of the latest training run.", []),
        "last_training_map50": ("Validation mAP50 of the latest trained candidate.", []),
        "last_training_state": ("State of the latest training run (value is always 1).", []),
    }
    for project, info in data["projects"].items():
        p = f'project="{project}"'
        series["queued_events"][1].append(f"{{{p}}} {info['queued_events']}")
        if info["live_version"]:
            series["live_model"][1].append(f'{{{p},version="{info["live_version"]}"}} 1')
        last = info.get("last_training")
        if last:
            series["last_training_duration_seconds"][1].append(f"{{{p}}} {last['duration_s']:.3f}")
            series["last_training_state"][1].append(f'{{{p},state="{last["state"]}"}} 1')
            if last.get("metrics"):
                series["last_training_map50"][1].append(f"{{{p}}} {last['metrics']['map50']:.6f}")
    lines = []
    for name, (help_text, samples) in series.items():
        metric = f"ls_active_yolo_{name}"
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [metric + sample for sample in samples]
    return "\n".join(lines) + "\n"
