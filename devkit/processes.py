"""`ManagedProcess`: a local server run as a child process, started, awaited and stopped.

Why it exists: Label Studio (`devkit.local_label_studio.LocalLabelStudio`), the backend under
gunicorn (`devkit.demo.BackendServer`) and `redis-server` (`tests.scale_out_support.RedisServer`)
are all throw-away servers on 127.0.0.1 that tests and `make demo` start, wait for and must never
leave behind. The mechanics are the same for each and live here once:

* spawning with output appended to a log file, in a process group of its own
  (``start_new_session``) whose leader Linux SIGTERMs when the thread that started it ends
  (``PR_SET_PDEATHSIG``), so a killed test run leaves no server behind;
* waiting until the server answers (``/health`` over HTTP, or any probe), failing early, with
  the log's tail, when it exits during start-up or does not answer in time, and stopping it then;
* `stop`: SIGTERM (the whole group), wait, SIGKILL if it lingers, then SIGKILL the group's
  stragglers; `log_tail`; use as a context manager.

What a subclass provides: `name` (how messages call it: "Label Studio", "the backend"), `error`
(the exception type start-up failures raise), a `log_path` attribute and a `url` property, and a
`start` that builds its command and environment and calls `_launch`, handing it a `ready`
callable (typically `_wait_for_health` plus any set-up). Class attributes tune the rest:
`own_group` (False: a plain child, stopped with SIGTERM/SIGKILL to itself), `poll_interval`,
`tail_lines`, `no_log_text`. Subclasses keep their own `stop(timeout=...)` default by
overriding `stop` and calling ``super().stop(timeout)``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import requests

from backend import files


def die_with_parent() -> None:
    """In a child before exec: have Linux SIGTERM it when the thread that started it ends.

    ``stop()`` never runs when the parent is killed outright (SIGKILL, or SIGTERM without a
    handler, as CI timeouts do); this keeps the child from outliving it.
    """
    files.die_with_parent(signal.SIGTERM)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # already gone


class ManagedProcess:
    """A server child process with a log file; see the module docstring for the contract."""

    name: ClassVar[str] = "the server"
    error: ClassVar[type[Exception]] = RuntimeError
    own_group: ClassVar[bool] = True
    poll_interval: ClassVar[float] = 0.25
    tail_lines: ClassVar[int] = 40
    no_log_text: ClassVar[str] = "(no log written)"

    log_path: Path
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def _logger(self) -> logging.Logger:
        # The subclass's module logger, so each server logs under its own name.
        return logging.getLogger(type(self).__module__)

    def start(self) -> Self:
        raise NotImplementedError

    def _refuse_if_running(self) -> None:
        if self._process is not None:
            raise self.error(f"{self.name} is already running")

    def _launch(
        self,
        command: Sequence[str],
        ready: Callable[[], None],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_output: bool = True,
    ) -> None:
        """Spawn ``command`` and run ``ready`` (wait for it, set it up); stop it if that fails.

        With ``log_output`` its stdout and stderr are appended to `log_path`; without, the
        server writes `log_path` itself and inherits ours.
        """
        options: dict[str, object] = {}
        if self.own_group:
            options.update(start_new_session=True, preexec_fn=die_with_parent)
        began = time.monotonic()
        if log_output:
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    list(command),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    **options,  # type: ignore[call-overload]
                )
        else:
            self._process = subprocess.Popen(
                list(command),
                env=env,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                **options,  # type: ignore[call-overload]
            )
        self._logger.info("%s starting on %s (pid %d)", self.name, self.url, self._process.pid)
        try:
            ready()
        except BaseException:
            self.stop()
            raise
        self._logger.info("%s up on %s in %.1f s", self.name, self.url, time.monotonic() - began)

    def _wait_until_ready(self, answers: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``answers()`` until it is true; fail early if the process dies.

        ``what`` names the probe in the error ("<url>/health").
        """
        deadline = time.monotonic() + timeout
        while True:
            process = self._process
            if process is None:
                raise self.error(f"{self.name} is not running")
            code = process.poll()
            if code is not None:
                raise self.error(
                    f"{self.name} exited with code {code} during start-up; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if answers():
                return
            if time.monotonic() > deadline:
                raise self.error(
                    f"{self.name} did not answer {what} within {timeout:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(self.poll_interval)

    def _wait_for_health(self, timeout: float) -> None:
        """Poll ``GET <url>/health`` until it answers 200."""
        self._wait_until_ready(self._answers_health, timeout, f"{self.url}/health")

    def _answers_health(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False  # not listening yet

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the server (its whole process group); SIGKILL it if it outlives ``timeout``.

        Returns its exit status (None when it was not running)."""
        process, self._process = self._process, None
        if process is None:
            return None
        self._signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._logger.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout)
            self._signal(process, signal.SIGKILL)
            process.wait(timeout=timeout)
        if self.own_group:
            # Children of the leader (e.g. gunicorn's workers) may outlive it; the group id
            # (the leader's pid, as start_new_session=True) still reaches them.
            signal_group(process.pid, signal.SIGKILL)
        self._logger.info("%s on %s stopped (exit %s)", self.name, self.url, process.returncode)
        return process.returncode

    def _signal(self, process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        if self.own_group:
            signal_group(process.pid, sig)
        else:
            process.send_signal(sig)  # a no-op once the process has been reaped

    def log_tail(self, lines: int | None = None) -> str:
        """Last ``lines`` (default `tail_lines`) lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return self.no_log_text
        count = self.tail_lines if lines is None else lines
        return "\n".join(text.splitlines()[-count:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
