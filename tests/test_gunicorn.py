"""The real thing: `ls-active-yolo serve` (gunicorn) answering over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import BOX_CONFIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_gunicorn_serves_health_and_predict(
    tmp_path: Path, trained_weights: Path, image_root: Path, ultralytics_dir: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "MODEL_DIR": str(tmp_path / "models"),
        "MODEL_PATH": str(trained_weights),
        "IMAGE_ROOT": str(image_root),
        "IMAGE_SIZE": "160",
        "YOLO_CONFIG_DIR": str(ultralytics_dir),
    }
    command = [
        str(Path(sys.executable).with_name("ls-active-yolo")),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "--threads",
        "2",
    ]
    log = (tmp_path / "gunicorn.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:  # not accepting yet, or still booting
                pass
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not answer /health in 60 s"
            time.sleep(0.3)
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
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
