"""Slow clients must not take `ls-active-yolo serve` offline (benchmarks/slow_clients.py).

A client that opens a connection and sends nothing, or sends its headers or its body a byte at
a time, once held one of the worker's THREADS threads for as long as it liked: four of them
and /health stopped answering. Here the real server runs with its defaults (1 worker x 4
threads) on 127.0.0.1 while 20 such connections stay open, and /health must still answer.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devkit.demo import BackendServer
from devkit.local_label_studio import find_free_port

SLOW_CLIENTS = 20  # five times the default THREADS
HEALTH_TIMEOUT = 10.0  # generous: an answer, not a speed, is asserted


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    """`ls-active-yolo serve` with the default WORKERS and THREADS; yields its port."""
    settings = {"MODEL_DIR": str(tmp_path / "models"), "TRAINING": "0"}
    with BackendServer(find_free_port(), settings, tmp_path, startup_timeout=120) as server:
        yield server.port


def _slow_connection(port: int, kind: int) -> socket.socket:
    """A connection that never completes its request: idle, half a header, half a body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    if kind == 1:  # the headers never end
        sock.sendall(b"GET /health HTTP/1.1\r\n" + host + b"X-Slow: 1")
    elif kind == 2:  # 1000 bytes announced, 1 sent
        sock.sendall(
            b"POST /webhook HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
    return sock  # kind 0: sends nothing


@pytest.mark.slow
def test_health_answers_while_more_slow_clients_than_threads_are_connected(served: int) -> None:
    slow = [_slow_connection(served, i % 3) for i in range(SLOW_CLIENTS)]
    try:
        time.sleep(1.0)  # the server has accepted them and started reading
        for _ in range(3):
            answer = requests.get(f"http://127.0.0.1:{served}/health", timeout=HEALTH_TIMEOUT)
            assert answer.status_code == 200
            assert answer.json()["status"] == "UP"
            for sock in slow[1::3]:  # the slow ones send another byte, as slowloris does
                sock.sendall(b"1")
            time.sleep(0.5)
    finally:
        for sock in slow:
            sock.close()
