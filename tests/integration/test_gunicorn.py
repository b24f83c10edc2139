"""The real thing: `ls-active-yolo serve` (gunicorn) answering over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from devkit.demo import BackendServer
from devkit.local_label_studio import find_free_port
from tests.conftest import BOX_CONFIG


@dataclass
class HeldImage:
    """An image server that answers only once `release` is set; `asked` tells it was asked."""

    url: str
    asked: threading.Event
    release: threading.Event


@pytest.fixture
def held(image_root: Path) -> Iterator[HeldImage]:
    image = (image_root / "bus.jpg").read_bytes()
    held = HeldImage("", threading.Event(), threading.Event())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            held.asked.set()
            held.release.wait(timeout=60)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    held.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield held
    finally:
        held.release.set()
        server.shutdown()
        server.server_close()


def test_gunicorn_serves_health_and_predict(
    tmp_path: Path, trained_weights: Path, image_root: Path, held: HeldImage
) -> None:
    settings = {
        "MODEL_DIR": str(tmp_path / "models"),
        "MODEL_PATH": str(trained_weights),
        "IMAGE_ROOT": str(image_root),
        "IMAGE_SIZE": "160",
        "ALLOWED_IMAGE_HOSTS": "127.0.0.1",  # the held image below
        "WORKERS": "2",
        "THREADS": "2",
    }
    server = BackendServer(find_free_port(), settings, tmp_path).start()
    base = server.url
    try:
        refs = [str(p) for p in sorted((image_root / "shapes").glob("*.jpg"))[:3]]
        refs.append(str(image_root / "bus.jpg"))
        body = {
            "tasks": [{"id": i, "data": {"image": ref}} for i, ref in enumerate(refs)],
            "project": "3.1712345678",
            "label_config": BOX_CONFIG,
        }
        answer = requests.post(f"{base}/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert len(results) == 4
        assert all(r["model_version"].startswith("shapes-") for r in results)
        assert any(r["result"] for r in results[:3])
        bad = requests.post(f"{base}/predict", data="{oops", timeout=10)
        assert bad.status_code == 400

        # A chunked body (no Content-Length) reaches the app whole.
        chunks = iter([json.dumps(body)[:50].encode(), json.dumps(body)[50:].encode()])
        chunked = requests.post(
            f"{base}/predict",
            data=chunks,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert chunked.status_code == 200, chunked.text
        assert len(chunked.json()["results"]) == 4

        # SIGTERM while a /predict runs: the worker stops listening but answers it first.
        # The request is surely running: it waits, inside the app, for its image.
        answers: list[object] = []

        def predict_held() -> None:
            task = {"id": 0, "data": {"image": f"{held.url}/held.jpg"}}
            try:
                answer = requests.post(
                    f"{base}/predict", json={**body, "tasks": [task]}, timeout=90
                )
                answers.append(answer)
            except requests.RequestException as exc:
                answers.append(exc)

        in_flight = threading.Thread(target=predict_held)
        in_flight.start()
        assert held.asked.wait(timeout=60), "the backend never asked for the image"
        assert server.pid is not None
        os.kill(server.pid, signal.SIGTERM)  # the gunicorn master only, as an orchestrator does
        time.sleep(3.0)  # tornado's stock worker closed its loop ~1 s after SIGTERM
        held.release.set()
        in_flight.join(timeout=90)
        (answer,) = answers
        assert isinstance(answer, requests.Response), answer
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["results"]) == 1
    finally:
        held.release.set()
        exit_status = server.stop(timeout=40)
    assert exit_status == 0, server.log_tail()


def test_sigterm_while_the_app_loads_stops_the_server(tmp_path: Path) -> None:
    """A SIGTERM that lands while a worker still loads the app (seconds: torch, ultralytics)
    must stop it. gunicorn's tornado worker forgot it when its loop started, and the master
    then waited its full graceful_timeout (30 s) before killing the worker."""
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "models"), "TRAINING": "0"}
    command = [str(Path(sys.executable).with_name("ls-active-yolo")), "serve"]
    command += ["--host", "127.0.0.1", "--port", str(find_free_port()), "--workers", "1"]
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Booting worker" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no worker booted in 60 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)  # well under the 30 s graceful_timeout
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, log_path.read_text()[-2000:]
