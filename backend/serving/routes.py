"""HTTP routes of the ML backend protocol: parse, validate, delegate to MLService, serialise.

Each view's `Operation` names the pydantic models (`schemas.py`) its body, query and path are
validated against before the service is called; /openapi.json is generated from the same.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file
from pydantic import BaseModel, ValidationError

from backend.errors import (
    BadRequest,
    LabelConfigError,
    ModelError,
    NotFound,
    PayloadTooLarge,
    StorageError,
    StorageFull,
)
from backend.models.handout import LiveFile
from backend.serving import schemas
from backend.serving.exposition import prometheus_text
from backend.serving.openapi import EXTENSION, Answer, Operation, operation, operation_of
from backend.serving.service import MLService

bp = Blueprint("ml", __name__)
_STORING = (StorageError, StorageFull)


def _service() -> MLService:
    return current_app.extensions["ls_active_yolo"]


def _operation() -> Operation:
    """The Operation recorded on the view serving this request."""
    op = operation_of(current_app.view_functions.get(request.endpoint or ""))
    if op is None:  # every view here has one (tests/unit/serving/test_openapi.py)
        raise LookupError(f"no Operation recorded for {request.endpoint}")
    return op


def _validated(model: type[BaseModel] | None, value: dict[str, Any], what: str) -> None:
    """Refuse (400) `value` if it does not fit `model`; the service gets `value` itself."""
    if model is None:
        return
    try:
        model.model_validate(value)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or what}: {error['msg']}"
            for error in exc.errors(include_url=False)[:4]
        )
        raise BadRequest(f"{what} does not fit its schema (see /openapi.json): {reasons}") from None


def _json_body(limit: int | None = None) -> dict[str, Any]:
    """The body as a JSON object that fits the route's body model. Over MAX_REQUEST_BYTES
    (checked while reading, chunked bodies too) werkzeug answers 413; `limit` is a tighter
    bound for this route."""
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
    _validated(_operation().body, body, "request body")
    return body


def _query() -> dict[str, str]:
    """The query (first value of each name), checked against the route's query model."""
    query = request.args.to_dict()
    _validated(_operation().query, query, "query")
    return query


@bp.get("/")
@bp.get("/health")
@operation(Operation(answers={200: Answer("The backend is up.", json=schemas.HealthAnswer)}))
def health() -> Response:
    """Liveness and what serves: Label Studio calls it before every request (no auth)."""
    return jsonify(_service().health())


@bp.post("/setup")
@operation(
    Operation(
        body=schemas.SetupRequest,
        answers={200: Answer("The label config can be served.", json=schemas.SetupAnswer)},
        errors=(BadRequest, PayloadTooLarge, LabelConfigError, ModelError, *_STORING),
    )
)
def setup() -> Response:
    """Connect a project: check its label config, store its extra params, name its model
    version."""
    return jsonify(_service().setup(_json_body(), base_url=request.host_url))


@bp.post("/predict")
@operation(
    Operation(
        body=schemas.PredictRequest,
        answers={200: Answer("One entry per task, in order.", json=schemas.PredictAnswer)},
        errors=(BadRequest, PayloadTooLarge, LabelConfigError, ModelError),
    )
)
def predict() -> Response:
    """Pre-annotations for Label Studio's tasks: a task whose image fails gets an empty
    result, never an error for the batch."""
    return jsonify(_service().predict(_json_body()))


@bp.get("/versions")
@operation(
    Operation(
        query=schemas.VersionsQuery,
        answers={200: Answer("The project's model versions.", json=schemas.VersionsAnswer)},
        errors=(BadRequest,),
    )
)
def versions() -> Response:
    """Label Studio's `GET /api/ml/{id}/versions`; `?project=<id>` when asked directly."""
    return jsonify(_service().versions(_query().get("project")))


@bp.post("/webhook")
@operation(
    Operation(
        body=schemas.WebhookEvent,
        answers={
            201: Answer("Stored for training.", json=schemas.EventRecorded),
            200: Answer("An action this backend does not handle.", json=schemas.EventIgnored),
        },
        errors=(BadRequest, PayloadTooLarge, *_STORING),
    )
)
def webhook() -> tuple[Response, int]:
    """Label Studio's project events: annotation changes are stored durably for retraining
    (at most MAX_EVENT_BYTES each)."""
    service = _service()
    answer = service.record_event(_json_body(limit=service.settings.max_event_bytes))
    return jsonify(answer), 201 if answer["status"] == "recorded" else 200


@bp.get("/analytics/<int:project_id>")
@operation(
    Operation(
        path=schemas.ProjectPath,
        answers={
            200: Answer("An HTML page.", text="text/html"),
            404: Answer("The id is not a whole number: no such route.", json=schemas.ErrorBody),
        },
        errors=(BadRequest,),
    )
)
def analytics(project_id: int) -> Response:
    """What the pre-annotations saved in one project: tables and plots (HTML)."""
    _validated(_operation().path, {"project_id": project_id}, "path")
    return Response(_service().analytics_page(project_id), mimetype="text/html")


_LIVE_MODEL = Operation(
    path=schemas.ProjectPath,
    query=schemas.LiveModelQuery,
    answers={
        200: Answer(
            "The file (an attachment named as in `.../live/meta`).",
            text="application/octet-stream",
            headers={
                "X-Model-Version": "The registry version the file is.",
                "X-Model-SHA256": "The file's SHA-256 (hex), as `.../live/meta` gives it.",
                "ETag": "The same SHA-256, quoted.",
            },
        )
    },
    errors=(BadRequest, NotFound, ModelError),
)


@bp.get("/models/<int:project_id>/live")
@operation(_LIVE_MODEL)
def live_model(project_id: int) -> Response:
    """The project's live model, to run elsewhere: `?format=pt` (default) the PyTorch
    weights, `?format=onnx` its ONNX export (only once the export passed its check against
    PyTorch)."""
    found = _live_file(project_id)
    response = send_file(
        found.path,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=found.filename,
        conditional=False,
        etag=False,
    )
    response.set_etag(found.sha256)
    response.headers["X-Model-Version"] = found.version
    response.headers["X-Model-SHA256"] = found.sha256
    return response


@bp.get("/models/<int:project_id>/live/meta")
@operation(
    Operation(
        path=schemas.ProjectPath,
        query=schemas.LiveModelQuery,
        answers={200: Answer("What `.../live` sends now.", json=schemas.LiveModelAnswer)},
        errors=(BadRequest, NotFound, ModelError),
    )
)
def live_model_meta(project_id: int) -> Response:
    """What `GET /models/{project_id}/live` sends now, without the file: version, SHA-256,
    classes, image size, metrics and, for ONNX, its input, output and check figures."""
    return jsonify(_live_file(project_id).metadata)


def _live_file(project_id: int) -> LiveFile:
    _validated(_operation().path, {"project_id": project_id}, "path")
    return _service().live_file(project_id, _query().get("format") or "pt")


@bp.get("/metrics")
@operation(
    Operation(
        query=schemas.MetricsQuery,
        answers={
            200: Answer(
                "JSON, or Prometheus text with `?format=prometheus` or `Accept: text/plain`.",
                json=schemas.MetricsAnswer,
                text="text/plain",
            )
        },
    )
)
def metrics() -> Response:
    """Per project: live version, queued events, the latest training run, annotation
    figures."""
    query = _query()
    data = _service().metrics()
    wants_text = query.get("format") == "prometheus" or (
        request.accept_mimetypes.best_match(["application/json", "text/plain"]) == "text/plain"
    )
    if wants_text:
        body, content_type = prometheus_text(data)
        return Response(body, content_type=content_type)
    return jsonify(data)


@bp.get("/openapi.json")
@operation(Operation(answers={200: Answer("OpenAPI 3.1.", json=schemas.OpenAPIDocument)}))
def openapi() -> Response:
    """This description of every route, generated from the models the routes validate with."""
    return jsonify(current_app.extensions[EXTENSION])
