"""A real HTTP server on a loopback address that serves canned answers and records requests."""

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
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)  # path: status, Location
    seen_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  # every path requested, in order
    cut: dict[str, int] = field(default_factory=dict)  # path: bytes sent before hanging up

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer `path` with `status` and a Location header."""
        self.redirects[path] = (status, location)


@contextmanager
def canned_http_server(host: str = "127.0.0.1") -> Iterator[CannedServer]:
    """Serve `server.routes[path] = (status, body)` and `server.redirects` on `host` (any
    loopback address: 127.0.0.2 is a second host); unknown paths get 404."""
    state = CannedServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.paths.append(self.path)
            state.seen_headers[self.path] = dict(self.headers)
            if self.path in state.redirects:
                status, location = state.redirects[self.path]
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, body = state.routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: state.cut.get(self.path, len(body))])
            self.close_connection = self.path in state.cut

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    state.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
