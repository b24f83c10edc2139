"""WSGI entry point: `gunicorn backend.wsgi:app`. Configures logging, then builds the app.

Under gunicorn's default workers a few slow clients can hold every thread: face untrusted
networks with `ls-active-yolo serve` (tornado workers) or behind a buffering proxy.
"""

from __future__ import annotations

from backend.config import Settings
from backend.logs import configure_logging
from backend.serving.app import create_app

_settings = Settings.from_env()
configure_logging(_settings.log_level)
app = create_app(_settings)
