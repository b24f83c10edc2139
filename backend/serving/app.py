"""The Flask application factory: settings read once, services built once and injected."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.config import Settings
from backend.errors import BackendError, Unauthorized
from backend.jobs.scheduler import BackgroundTrainer
from backend.services import Services, build_services
from backend.serving.openapi import EXTENSION, openapi_document
from backend.serving.routes import bp
from backend.serving.service import MLService

logger = logging.getLogger(__name__)

_OPEN_PATHS = frozenset({"/", "/health", "/openapi.json"})  # the rest needs basic auth, if on


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the app. `settings` default to the environment, `services` to `build_services`;
    with TRAINING on, the process also starts its (file-lock elected) background trainer."""
    services = services or build_services(settings or Settings.from_env())
    settings = services.settings
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    service = MLService(services)
    app.extensions["ls_active_yolo"] = service
    if settings.training_enabled:
        app.extensions["ls_active_yolo_trainer"] = BackgroundTrainer(services).start()
    app.register_blueprint(bp)
    guarded = settings.basic_auth_user is not None
    app.extensions[EXTENSION] = openapi_document(app, _OPEN_PATHS if guarded else None)

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
