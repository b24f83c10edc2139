"""`ls-active-yolo serve`: the app under gunicorn's tornado worker.

Tornado reads each request whole (headers and body) on its event loop, and only then runs the
app on one of THREADS threads, so a client that sends slowly, or nothing, holds a socket and
never a thread. gthread handed the connection to a thread first: four slow clients took the
worker offline (benchmarks/slow_clients.py).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gtornado import TornadoWorker
from tornado.httputil import HTTPServerRequest
from tornado.wsgi import WSGIContainer

from backend.config import Settings
from backend.serving.app import create_app


class _App(WSGIContainer):  # type: ignore[misc]
    """The Flask app on THREADS threads, counting the requests it is running."""

    running = 0

    def environ(self, request: HTTPServerRequest) -> dict[str, Any]:
        environ: dict[str, Any] = super().environ(request)
        # Tornado has read (and de-chunked) the whole body: without its length werkzeug
        # would read a chunked body as empty, and MAX_REQUEST_BYTES could not apply.
        environ["CONTENT_LENGTH"] = str(len(request.body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return environ

    async def handle_request(self, request: HTTPServerRequest) -> None:
        self.running += 1
        try:
            await super().handle_request(request)
        finally:
            self.running -= 1


class _Worker(TornadoWorker):  # type: ignore[misc]
    terminating = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        # TornadoWorker.run() sets `alive` again when it starts: a SIGTERM that lands while
        # the app is still loading would be forgotten, and the worker would run on until the
        # arbiter kills it after graceful_timeout. Remember it.
        self.terminating = True
        super().handle_exit(sig, frame)

    def heartbeat(self) -> None:
        if self.terminating:
            self.alive = False
        # On SIGTERM gunicorn's tornado worker stops listening, then stops its loop a
        # second later, dropping the requests still running. Let them finish first, as
        # gthread did: the arbiter still kills the worker after graceful_timeout.
        if not self.alive and not self.server_alive and self.wsgi.running:
            return
        super().heartbeat()


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        self.cfg.set("bind", f"{settings.host}:{settings.port}")
        self.cfg.set("workers", settings.workers)
        self.cfg.set("worker_class", _Worker)
        self.cfg.set("timeout", 180)  # Label Studio allows /predict 100 s
        self.cfg.set("graceful_timeout", 30)
        # gunicorn 27's control socket sits at one path per user: several backends on
        # one machine would take it from each other. Nothing here uses it.
        self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        executor = ThreadPoolExecutor(self._settings.threads, thread_name_prefix="request")
        return _App(create_app(self._settings), executor=executor)


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM (HOST, PORT, WORKERS, THREADS from `settings`)."""
    # Tornado logs every request at INFO; gthread logged none. Keep its 4xx/5xx lines.
    logging.getLogger("tornado.access").setLevel(max(logging.WARNING, logging.root.level))
    _Gunicorn(settings).run()
