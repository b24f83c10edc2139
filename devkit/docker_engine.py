"""A real Docker engine for the tests and benchmarks: Debian's dockerd, started and stopped here.

No image registry may be reachable, so the base image is made from Debian's packages
(debootstrap) and imported once; the engine's data root lives in a cache outside the
checkout, so later runs reuse the base and the build's layer cache (the pip layer is rebuilt
only when requirements.txt changes). One engine uses the data root at a time (a file lock).
Containers run with host networking: the engine runs without bridges or iptables.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOCKERD = Path("/usr/sbin/dockerd")
DOCKER = Path("/usr/bin/docker")  # the client of the same package: no API version skew
CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ls-active-yolo" / "docker"
)
BASE_IMAGE = "ls-active-yolo-base:bookworm"
MIRROR = "http://deb.debian.org/debian"
TEST_LABEL = "ls-active-yolo-test"  # on every container a test starts: removed at the end


def why_no_engine() -> str | None:
    """Why no Docker engine can be started here, or None when one can."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    if not DOCKERD.is_file() or not DOCKER.is_file():
        return "no dockerd: install Debian's docker.io (`bash scripts/system-deps.sh`)"
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").is_file():
        return "no debootstrap to make a base image: `bash scripts/system-deps.sh`"
    return None


@dataclass
class Engine:
    """A running dockerd and the client that talks to it."""

    socket: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        answer = subprocess.run(
            [str(DOCKER), *args],
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and answer.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {answer.stderr[-3000:]}")
        return answer

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def remove_test_containers(self) -> None:
        listed = self.docker("ps", "-aq", "--filter", f"label={TEST_LABEL}", check=False)
        ids = listed.stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False, timeout=60)


@contextmanager
def docker_engine(cache: Path = CACHE, start_timeout: float = 60.0) -> Iterator[Engine]:
    """Start dockerd on `cache`'s data root; on exit remove the test's containers and
    dangling images, and stop the daemon by its pid."""
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / "engine.lock", timeout=900):
        run_dir = Path(tempfile.mkdtemp(prefix="lsay-dockerd-"))  # short: socket path limit
        socket = run_dir / "docker.sock"
        log = (cache / "dockerd.log").open("wb")
        daemon = subprocess.Popen(
            [
                str(DOCKERD),
                "--bridge=none",
                "--iptables=false",
                "--data-root",
                str(cache / "data"),
                "--exec-root",
                str(run_dir / "exec"),
                "--pidfile",
                str(run_dir / "dockerd.pid"),
                "--host",
                f"unix://{socket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        engine = Engine(socket)
        try:
            _wait_for(engine, daemon, start_timeout, cache / "dockerd.log")
            yield engine
        finally:
            if daemon.poll() is None:
                engine.remove_test_containers()
                engine.docker("image", "prune", "-f", check=False, timeout=120)
            _stop(daemon)
            log.close()
            _unmount_under(run_dir)  # dockerd leaves its network namespace mounted there
            shutil.rmtree(run_dir, ignore_errors=True)


def ensure_base(engine: Engine, cache: Path = CACHE) -> str:
    """The Debian bookworm base image, made by debootstrap only when the tag is missing: a
    base imported again would be a new image, and every layer built on it would miss."""
    if engine.has_image(BASE_IMAGE):
        return BASE_IMAGE
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache))  # not /tmp: may be noexec
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
            capture_output=True,
            timeout=900,
            check=True,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [str(DOCKER), "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            capture_output=True,
            env=engine.env,
            timeout=600,
            check=False,
        )
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise RuntimeError(f"docker import: {imported.stderr.decode()[-2000:]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BASE_IMAGE


def build(
    engine: Engine,
    context: Path,
    tag: str,
    build_args: dict[str, str],
    secrets: Sequence[str] = (),
    timeout: float = 3600,
) -> subprocess.CompletedProcess[str]:
    """`docker build --network host` (BuildKit) of `context`'s docker/Dockerfile."""
    command = ["build", "--network", "host", "--progress", "plain", "-t", tag]
    command += ["-f", str(context / "docker" / "Dockerfile")]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    for secret in secrets:
        command += ["--secret", secret]
    return engine.docker(*command, str(context), timeout=timeout)


def ca_bundle_secret() -> list[str]:
    """The host's CA bundle as the build's `ca-certificates` secret, when there is one: pip in
    the build then trusts what the host trusts (a TLS-intercepting proxy's CA included)."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    return [f"id=ca-certificates,src={bundle}"] if bundle.is_file() else []


@contextmanager
def _exclusive(path: Path, timeout: float) -> Iterator[None]:
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another test run holds {path}") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for(engine: Engine, daemon: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dockerd exited with {daemon.returncode}: {tail}")
        if engine.docker("version", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"dockerd did not answer within {timeout:.0f} s (log: {log})")


def _stop(daemon: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if daemon.poll() is not None:
        return
    os.kill(daemon.pid, signal.SIGTERM)
    try:
        daemon.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)  # dockerd and its containerd
        daemon.wait(timeout=10)


def _unmount_under(folder: Path) -> None:
    """Unmount whatever is still mounted below `folder` (deepest first)."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    # /proc/self/mounts escapes spaces and the like as octal; our folder has none.
    points = [line.split()[1] for line in mounts]
    for point in sorted((p for p in points if p.startswith(f"{folder}/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
