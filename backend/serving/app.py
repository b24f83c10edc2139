"""The Flask application factory: settings read once, services built once and injected."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.config import Settings
from backend.errors import BackendError, Unauthorized
from backend.events import EventStore
from backend.jobs.scheduler import BackgroundTrainer
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.models.detector import DetectorPool
from backend.models.offline import prepare_ultralytics, set_torch_threads
from backend.models.registry import ModelRegistry
from backend.serving.routes import bp
from backend.serving.service import MLService

logger = logging.getLogger(__name__)

_OPEN_PATHS = frozenset({"/", "/health"})


def build_service(settings: Settings) -> MLService:
    """Wire the backend's services together for one process."""
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    prepare_ultralytics(settings.model_dir / ".ultralytics")
    set_torch_threads(settings.torch_threads)
    registry = ModelRegistry(settings.model_dir)
    ls = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key)
    return MLService(
        settings=settings,
        detectors=DetectorPool(settings, registry),
        images=ImageLoader(settings, ls),
        events=EventStore(settings.model_dir / "events.sqlite3"),
        registry=registry,
        ls=ls,
    )


def create_app(settings: Settings | None = None, service: MLService | None = None) -> Flask:
    """Build the app. `settings` default to the environment; `service` to `build_service`."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    service = service or build_service(settings)
    app.extensions["ls_active_yolo"] = service
    if settings.training_enabled:
        app.extensions["ls_active_yolo_trainer"] = BackgroundTrainer(
            settings, service.events
        ).start()
    app.register_blueprint(bp)

    if settings.basic_auth_user is not None:
        if not (settings.label_studio_url and settings.label_studio_api_key):
            logger.warning(
                "basic auth is on but LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY are not set: "
                "the backend cannot add its credentials to Label Studio's webhook, so "
                "annotation events will be refused (401) until the webhook sends them"
            )
        expected = (settings.basic_auth_user, settings.basic_auth_pass or "")

        @app.before_request
        def _basic_auth() -> None:
            if request.path in _OPEN_PATHS:
                return
            auth = request.authorization
            given = (auth.username or "", auth.password or "") if auth else ("", "")
            user_ok = hmac.compare_digest(given[0].encode(), expected[0].encode())
            pass_ok = hmac.compare_digest(given[1].encode(), expected[1].encode())
            if not (auth and user_ok and pass_ok):
                raise Unauthorized("wrong or missing basic-auth credentials")

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError) -> tuple[Response, int]:
        if exc.status >= 500:
            logger.error("%s: %s", exc.code, exc)
        response = jsonify({"error": exc.code, "message": str(exc)})
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Basic realm="ls-active-yolo"'
        return response, exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify(
            {"error": exc.name.lower().replace(" ", "_"), "message": exc.description}
        ), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify({"error": "internal_error", "message": "internal server error"}), 500

    return app
