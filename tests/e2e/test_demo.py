"""`python -m devkit.demo` end to end: ready, reused on a rerun, stopped cleanly by a signal.

The demo's model is put in place beforehand (the session's `trained_weights`), so no training
runs here; everything else is what `make demo` does, on free ports and in a temporary folder.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from devkit.demo import PROJECT_TITLE
from devkit.local_label_studio import REPO_ROOT, LocalLabelStudio, find_free_port

READY = "Press Ctrl-C to stop"
IMAGES = 3


class DemoRun:
    """One `python -m devkit.demo` child whose output is collected line by line."""

    def __init__(self, demo_dir: Path, ls_port: int, backend_port: int) -> None:
        command = [
            sys.executable,
            "-m",
            "devkit.demo",
            "--dir",
            str(demo_dir),
            "--images",
            str(IMAGES),
            "--ls-port",
            str(ls_port),
            "--backend-port",
            str(backend_port),
        ]
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def output_until(self, marker: str, timeout: float) -> str:
        """Everything printed until a line containing `marker`; fails on exit or timeout."""
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} in {timeout:.0f} s:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the demo exited before {marker!r}:\n{self.text}")
            self.lines.append(line)
        return self.text

    def stop_with(self, sig: signal.Signals, timeout: float = 60.0) -> int:
        """Send `sig` as Ctrl-C or `kill` would; wait for the exit and the rest of the output."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment contains `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if text.encode() in blob:
            found.append(int(entry.name))
    return found


def _refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, int(port))) != 0


def _urls(output: str) -> tuple[str, int, str]:
    """Label Studio's URL, the project id and the backend's URL, as the demo printed them."""
    ls = re.search(r"Label Studio +(http://127\.0\.0\.1:\d+)/projects/(\d+)/data", output)
    backend = re.search(r"ML backend +(http://127\.0\.0\.1:\d+) ", output)
    assert ls and backend, output
    return ls.group(1), int(ls.group(2)), backend.group(1)


def _label_studio(demo_dir: Path, url: str) -> LocalLabelStudio:
    """A handle on the demo's running Label Studio (its stored admin credentials)."""
    port = int(url.rsplit(":", 1)[1])
    return LocalLabelStudio(demo_dir / "label-studio", demo_dir / "files", port=port)


def _check_stopped(run: DemoRun, code: int, demo_dir: Path, *urls: str) -> None:
    assert code == 0, run.text
    assert run.lines[-2:] == ["Stopping ...", "Stopped."], run.text
    assert _processes_mentioning(str(demo_dir)) == []
    assert all(_refuses_connections(url) for url in urls)


def test_demo_runs_reruns_and_stops_cleanly(tmp_path: Path, trained_weights: Path) -> None:
    demo_dir = tmp_path / "demo"
    (demo_dir / "models" / "base").mkdir(parents=True)
    shutil.copyfile(trained_weights, demo_dir / "models" / "base" / "shapes.pt")
    ls_port = find_free_port()

    first = DemoRun(demo_dir, ls_port, find_free_port())
    try:
        output = first.output_until(READY, timeout=180)
        ls_url, project_id, backend_url = _urls(output)
        ls = _label_studio(demo_dir, ls_url)
        # Several versions may hold a task's prediction (the pre-annotation, the queue, the
        # queue served before the last switch, kept one ranking: see ranking/publish.py).
        predictions = list(ls.client().predictions.list(project=project_id))
        code = first.stop_with(signal.SIGINT)  # what Ctrl-C sends
    finally:
        first.kill()
    assert f"Created project {project_id} ({PROJECT_TITLE!r})." in output
    assert f"Imported {IMAGES} generated images as tasks." in output
    assert f"Log in as     {ls.username}" in output and f"Password      {ls.password}" in output
    per_version = Counter((p.model_version, p.task) for p in predictions)
    assert per_version and max(per_version.values()) == 1  # no version holds a task twice
    assert len({p.task for p in predictions}) == IMAGES
    _check_stopped(first, code, demo_dir, ls_url, backend_url)

    # A rerun reuses the project, and swaps the backend on a new port in for the old one.
    second = DemoRun(demo_dir, ls_port, find_free_port())
    try:
        output = second.output_until(READY, timeout=180)
        ls_url_again, project_again, new_backend_url = _urls(output)
        client = _label_studio(demo_dir, ls_url_again).client()
        backends = [ml.url for ml in client.ml.list(project=project_id)]
        hooks = [h.url for h in client.webhooks.list(project=str(project_id))]
        code = second.stop_with(signal.SIGTERM)
    finally:
        second.kill()
    assert ls_url_again == ls_url == f"http://127.0.0.1:{ls_port}"  # its port again
    assert project_again == project_id
    assert f"Reusing project {project_id} ({PROJECT_TITLE!r})." in output
    assert "Imported" not in output
    assert new_backend_url != backend_url
    assert backends == [new_backend_url]
    assert hooks == [f"{new_backend_url}/webhook"]
    _check_stopped(second, code, demo_dir, ls_url, new_backend_url)
