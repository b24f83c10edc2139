"""Real parts for the scale-out tests: a throw-away `redis-server` and training workers.

`RedisServer` runs the Debian package's `redis-server` on 127.0.0.1 (scripts/system-deps.sh
installs it) in its own temporary directory, persisting nothing. `WorkerProcess` runs
`docker/entrypoint.sh worker`, the image's own command, so the tests prove what the container
runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import redis
from rq import Worker

from backend.config import ENV_NAMES
from devkit.local_label_studio import REPO_ROOT, find_free_port
from devkit.processes import ManagedProcess

REDIS_SERVER = "redis-server"
ENTRYPOINT = REPO_ROOT / "docker" / "entrypoint.sh"


def redis_server_path() -> str | None:
    """The `redis-server` executable, or None when the Debian package is missing."""
    return shutil.which(REDIS_SERVER)


class RedisServer(ManagedProcess):
    """`redis-server` bound to 127.0.0.1 on a free port, working in `directory`.

    A plain child, not a process group: it writes its own log file and exits cleanly on SIGTERM.
    """

    name = "redis-server"
    error = RuntimeError
    own_group = False
    poll_interval = 0.05
    tail_lines = 30
    no_log_text = "(no log)"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or find_free_port()
        self.log_path = self.directory / "redis.log"
        self._process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self, timeout: float = 10.0) -> RedisServer:
        executable = redis_server_path()
        if executable is None:
            raise FileNotFoundError("redis-server is missing: run `bash scripts/system-deps.sh`")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.log_path),
        ]
        self._launch(
            command,
            lambda: self._wait_until_ready(self._answers_ping, timeout, "PING"),
            log_output=False,
        )
        return self

    def _answers_ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False


def entrypoint_env(settings: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The environment the entry point gets: exactly `settings` among the backend's variables,
    and this virtualenv's `bin` first on PATH (where the image has /opt/venv/bin)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    env.update(extra)
    return env


class WorkerProcess:
    """`docker/entrypoint.sh worker` as a subprocess in its own session, logging to a file."""

    def __init__(self, settings: Mapping[str, str], log_path: Path) -> None:
        self.settings = dict(settings)
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        """The worker's process id (kept after it stopped, for its RQ records)."""
        if self._pid is None:
            raise RuntimeError("the worker was not started")
        return self._pid

    def is_named(self, name: str | None) -> bool:
        """Whether `name` is this worker's RQ name: `run_worker` registers
        ``<host>.<pid>.<random>``, and the entry point execs, so the pid is the script's."""
        return name is not None and name.startswith(f"{socket.gethostname()}.{self.pid}.")

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(ENTRYPOINT), "worker"],
                env=entrypoint_env(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid = self._process.pid
        return self

    def wait_registered(self, connection: redis.Redis, timeout: float = 60.0) -> None:
        """Wait until RQ lists this worker (it has connected and listens on its queue)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self.is_named(w.name) for w in Worker.all(connection=connection)):
                return
            if self.returncode() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"worker {self.pid} did not register; log:\n{self.log_tail()}")

    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def children(self) -> list[int]:
        """Processes this worker forked (its work horse while a job runs)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except FileNotFoundError:
            return []

    def kill(self) -> None:
        """SIGKILL the worker process alone, as a crash would; its horse must follow it."""
        os.kill(self.pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (RQ's warm shutdown), then SIGKILL the whole session if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if process.poll() is None:
            process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
