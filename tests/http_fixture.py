"""A real HTTP server on 127.0.0.1 that serves canned answers and records request headers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class CannedServer:
    url: str
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    seen_headers: dict[str, dict[str, str]] = field(default_factory=dict)


@contextmanager
def canned_http_server() -> Iterator[CannedServer]:
    """Serve `server.routes[path] = (status, body)`; unknown paths get 404."""
    state = CannedServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.seen_headers[self.path] = dict(self.headers)
            status, body = state.routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
