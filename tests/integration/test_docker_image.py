"""docker/: the image built by a real Docker engine, and run.

The test starts Debian's dockerd (devkit/docker_engine.py), builds docker/Dockerfile
on a Debian base made by debootstrap (BASE build argument; no registry is needed), with the
session's tiny trained model baked in by name (WEIGHTS=yolo11n.pt, from a local server standing
in for ultralytics' release host), then:

- runs the image with host networking and checks /health, /setup and a /predict on a mounted
  image, served by the baked weights (MODEL_PATH=yolo11n.pt, no download at run time);
- runs the Compose file's backend and worker services from that image (a small override:
  host networking, Label Studio from .venv-ls and redis-server on the host, as their images
  cannot be pulled here) and checks the backend answers and the worker registers with Redis.

The engine's data root is cached outside the checkout, so after the first run (the pip layer:
several GB of PyTorch wheels) a build reuses every layer but the baked weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from rq import Worker

from devkit.datagen import CLASSES
from devkit.docker_engine import (
    TEST_LABEL,
    Engine,
    build,
    ca_bundle_secret,
    docker_engine,
    ensure_base,
    why_no_engine,
)
from devkit.local_label_studio import (
    DEFAULT_LS_EXECUTABLE,
    REPO_ROOT,
    LocalLabelStudio,
    find_free_port,
)
from tests.conftest import BOX_CONFIG
from tests.support.http_fixture import canned_http_server
from tests.support.scale_out import RedisServer, redis_server_path

# The first build on a machine downloads several GB of wheels (minutes); later ones are cached.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]

TAG = "ls-active-yolo:test"
WEIGHTS = "yolo11n.pt"
COMPOSE = Path(sys.executable).parent / "docker-compose"
STARTUP_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    reason = why_no_engine()
    if reason is not None:
        pytest.skip(f"no Docker engine: {reason}")
    with docker_engine() as started:
        yield started


@pytest.fixture(scope="module")
def image(engine: Engine, trained_weights: Path) -> str:
    """The image, built on the debootstrap base, with the tiny model baked in as yolo11n.pt."""
    base = ensure_base(engine)
    with canned_http_server() as release:
        release.routes[f"/{WEIGHTS}"] = (200, trained_weights.read_bytes())
        started = time.monotonic()
        build(
            engine,
            REPO_ROOT,
            TAG,
            {"BASE": base, "WEIGHTS": WEIGHTS, "WEIGHTS_URL": release.url},
            secrets=ca_bundle_secret(),
        )
        seconds = time.monotonic() - started
        assert release.paths == [f"/{WEIGHTS}"]  # baked at build time, once
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", TAG).stdout)
    print(f"docker build: {seconds:.1f} s, image {size / 1e9:.2f} GB")  # the figures in README
    return TAG


def _wait_healthy(url: str, alive: Callable[[], str | None]) -> dict:
    """/health's body once it says UP; fails with the container's log if it exits first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        log = alive()
        if log is not None:
            pytest.fail(f"the container exited:\n{log}")
        try:
            answer = requests.get(f"{url}/health", timeout=5)
            if answer.status_code == 200 and answer.json().get("status") == "UP":
                return dict(answer.json())
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"{url}/health did not answer UP within {STARTUP_TIMEOUT:.0f} s")


def _exited_log(engine: Engine, name: str) -> str | None:
    state = engine.docker("inspect", "--format", "{{.State.Running}}", name, check=False)
    if state.stdout.strip() == "true":
        return None
    return engine.docker("logs", "--tail", "60", name, check=False).stderr


def test_the_image_serves_setup_and_predict_with_weights_baked_by_name(
    engine: Engine, image: str, image_root: Path, trained_weights: Path, tmp_path: Path
) -> None:
    # The container's user (uid 10001) must be able to read the mounted pictures.
    pictures = sorted((image_root / "shapes").glob("*.jpg"))[:2]
    mounted = tmp_path / "pictures"
    mounted.mkdir(mode=0o755)
    for picture in pictures:
        shutil.copyfile(picture, mounted / picture.name)
        (mounted / picture.name).chmod(0o644)
    port = find_free_port()
    name = f"lsay-serve-{port}"
    engine.docker(
        "run", "-d", "--name", name, "--label", TEST_LABEL, "--network", "host",
        "-e", f"PORT={port}", "-e", f"MODEL_PATH={WEIGHTS}", "-e", "IMAGE_ROOT=/images",
        "-e", "TRAINING=0", "-v", f"{mounted}:/images:ro", image,
    )  # fmt: skip
    health = _wait_healthy(f"http://127.0.0.1:{port}", lambda: _exited_log(engine, name))
    digest = hashlib.sha256(trained_weights.read_bytes()).hexdigest()[:8]
    version = f"yolo11n-{digest}"  # the baked file, named as MODEL_PATH names it
    assert health["base_model"] == {**health["base_model"], "source": "MODEL_PATH"}
    assert health["base_model"]["version"] == version

    url = f"http://127.0.0.1:{port}"
    setup = requests.post(f"{url}/setup", json={"project": "3.1", "schema": BOX_CONFIG}, timeout=60)
    assert setup.status_code == 200, setup.text
    assert setup.json()["model_version"] == version
    body = {
        "tasks": [
            {"id": i + 1, "data": {"image": f"/images/{p.name}"}} for i, p in enumerate(pictures)
        ],
        "project": "3.1",
        "label_config": BOX_CONFIG,
    }
    answer = requests.post(f"{url}/predict", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["model_version"] for r in results] == [version] * len(pictures)
    labels = {region["value"]["rectanglelabels"][0] for r in results for region in r["result"]}
    assert labels and labels <= {c.capitalize() for c in CLASSES}
    # The image runs as its app user; the healthcheck command the image declares works.
    assert engine.docker("exec", name, "id", "-u").stdout.strip() == "10001"
    engine.docker("exec", name, "ls-active-yolo-entrypoint", "healthcheck")


@pytest.fixture
def label_studio(tmp_path: Path) -> Iterator[LocalLabelStudio]:
    if not DEFAULT_LS_EXECUTABLE.is_file():
        pytest.skip(f"{DEFAULT_LS_EXECUTABLE} is missing: `make install-ls`")
    with LocalLabelStudio(tmp_path / "ls-data", tmp_path / "ls-documents") as server:
        yield server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.skip("redis-server is missing: `bash scripts/system-deps.sh`")
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_compose_runs_the_backend_and_a_worker_from_the_image(
    engine: Engine,
    image: str,
    tmp_path: Path,
    label_studio: LocalLabelStudio,
    redis_server: RedisServer,
) -> None:
    if not COMPOSE.is_file():
        pytest.skip("docker-compose is missing: `pip install -r requirements-dev.txt`")
    port = find_free_port()
    # Host networking (the engine has no bridges), the image built above, and the host's Label
    # Studio and Redis in place of the label-studio and redis services, whose images cannot be
    # pulled here. `!reset` drops what host networking has no use for.
    service = f"""
    network_mode: host
    pull_policy: never
    labels: [{TEST_LABEL}]
    ports: !reset []
    depends_on: !reset {{}}
    environment:
      LABEL_STUDIO_URL: {label_studio.url}"""
    (tmp_path / "host-network.yml").write_text(
        f"services:\n  backend:{service}\n      PORT: '{port}'\n  worker:{service}\n"
    )
    (tmp_path / "weights").mkdir()
    project = f"lsay-test-{port}"
    compose = [
        str(COMPOSE),
        "--project-name",
        project,
        "-f",
        str(REPO_ROOT / "docker" / "docker-compose.yml"),
        "-f",
        str(tmp_path / "host-network.yml"),
        "--profile",
        "scale",
    ]
    env = {
        **engine.env,
        "BACKEND_TAG": image.split(":", 1)[1],
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.legacy_token,
        "REDIS_URL": redis_server.url,
        "TRAIN_WORKERS": "1",
        "WORKERS": "1",
        "WEIGHTS_DIR": str(tmp_path / "weights"),
    }

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        answer = subprocess.run(
            [*compose, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        assert answer.returncode == 0, answer.stderr[-3000:]
        return answer

    resolved = json.loads(run("config", "--format", "json").stdout)["services"]
    for name in ("backend", "worker"):
        assert resolved[name]["environment"]["REDIS_URL"] == redis_server.url
        assert resolved[name]["image"] == image
    try:
        run("up", "-d", "--no-build", "--no-deps", "backend", "worker")
        containers = run("ps", "-q").stdout.split()
        assert len(containers) == 2, run("ps").stdout

        def exited() -> str | None:
            states = [_exited_log(engine, c) for c in containers]
            return next((s for s in states if s is not None), None)

        _wait_healthy(f"http://127.0.0.1:{port}", exited)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        queue = "ls-active-yolo-training"
        while not any(queue in w.queue_names() for w in Worker.all(redis_server.client())):
            assert exited() is None, exited()
            assert time.monotonic() < deadline, "the worker never registered with Redis"
            time.sleep(1)
    finally:
        subprocess.run(
            [*compose, "down", "-v", "--timeout", "10"],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
