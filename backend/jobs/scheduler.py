"""The background trainer: turns pending webhook events into training runs.

Coalescing rules, per project: train when START_TRAINING arrived, when at least TRAIN_EVERY
distinct annotations changed, or when changes have been pending for TRAIN_QUIET_SECONDS with
no newer event. A storm of events therefore yields one run; runs are executed one at a time,
so a project never has two. Only one process per MODEL_DIR schedules (a file lock), however
many gunicorn workers there are; if that process dies, the lock passes to another.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend.config import Settings
from backend.events import Event, EventStore
from backend.training.trainer import SETTINGS_ENV, run_job

logger = logging.getLogger(__name__)

Launcher = Callable[[int, int], str]  # (project_id, run_id) -> final state
# -- scale-out (issue 7): a launcher may hand the run to a queue (backend.jobs.distributed) and
# answer QUEUED; the run's outcome then lands in the event store later. `HeldBack` tells the
# scheduler which projects must wait (a queued run, a back-off), since it cannot see them.
QUEUED = "queued"
HeldBack = Callable[[int, float], bool]  # (project_id, now) -> must not start a run now
# -- end scale-out


@dataclass(frozen=True)
class Due:
    """A project that should train now, why, and the newest event the run covers."""

    project_id: int
    reason: str
    max_event_id: int


def due_projects(
    pending: list[Event], now: float, train_every: int, quiet_seconds: float
) -> list[Due]:
    """Which projects must train, from their pending events (pure; oldest project first)."""
    by_project: dict[int, list[Event]] = {}
    for event in pending:
        by_project.setdefault(event.project_id, []).append(event)
    due = []
    for project_id, events in by_project.items():
        changed = {i for e in events for i in e.annotation_ids}
        newest = max(e.received_at for e in events)
        if any(e.action == "START_TRAINING" for e in events):
            reason = "requested"
        elif len(changed) >= train_every:
            reason = f"{len(changed)} annotations changed"
        elif now - newest >= quiet_seconds:
            reason = f"quiet for {now - newest:.0f}s with {len(changed)} changes"
        else:
            continue
        due.append(Due(project_id, reason, max(e.id for e in events)))
    return sorted(due, key=lambda d: d.max_event_id)


class TrainingScheduler:
    """Decides when to train and runs one job at a time through a launcher."""

    def __init__(
        self,
        settings: Settings,
        events: EventStore,
        launcher: Launcher,
        held_back: HeldBack | None = None,  # scale-out (issue 7)
    ) -> None:
        self._settings = settings
        self._events = events
        self._launch = launcher
        self._held_back = held_back  # scale-out (issue 7)
        self._backoff: dict[int, tuple[float, float]] = {}  # project -> (not before, delay)

    def run_once(self, now: float | None = None) -> list[tuple[int, str]]:
        """Start (and wait for) every run that is due now; returns (project, final state)."""
        now = time.time() if now is None else now
        pending = self._events.pending()
        done = []
        for due in due_projects(
            pending, now, self._settings.train_every, self._settings.train_quiet_seconds
        ):
            not_before, delay = self._backoff.get(due.project_id, (0.0, 0.0))
            if now < not_before:
                continue
            if self._held_back is not None and self._held_back(due.project_id, now):
                continue  # scale-out (issue 7): its run is queued elsewhere, or backing off
            run_id = self._events.start_run(due.project_id, due.reason, due.max_event_id)
            logger.info("project=%s run=%s starting: %s", due.project_id, run_id, due.reason)
            state = self._launch(due.project_id, run_id)
            if state == QUEUED:  # scale-out (issue 7): a worker finishes and records it
                done.append((due.project_id, state))
                continue
            if state == "failed":
                delay = min(max(delay * 2, self._settings.train_retry_seconds), 3600.0)
                self._backoff[due.project_id] = (time.time() + delay, delay)
                logger.warning(
                    "project=%s run=%s failed: %s; events kept, next try in %.0fs",
                    due.project_id,
                    run_id,
                    self._run_error(due.project_id, run_id),
                    delay,
                )
            else:
                logger.info("project=%s run=%s finished: %s", due.project_id, run_id, state)
                self._backoff.pop(due.project_id, None)
            done.append((due.project_id, state))
        return done

    def _run_error(self, project_id: int, run_id: int) -> str:
        run = next((r for r in self._events.runs(project_id) if r["id"] == run_id), None)
        return str((run or {}).get("details", {}).get("error") or "unknown error")

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; an unexpected error is logged and polling goes on."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("training scheduler iteration failed")
            stop.wait(self._settings.train_poll_seconds)


def in_process_launcher(settings: Settings, events: EventStore) -> Launcher:
    """Run jobs in this process (tests; `ls-active-yolo train --now`)."""
    return lambda project_id, run_id: run_job(settings, events, project_id, run_id)


def subprocess_launcher(settings: Settings, events: EventStore) -> Launcher:
    """Run each job in a niced child process that dies with its parent thread (Linux)."""

    def launch(project_id: int, run_id: int) -> str:
        env = {**os.environ, SETTINGS_ENV: settings.to_json()}
        log_path = settings.model_dir / "projects" / str(project_id) / "logs" / f"run-{run_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "backend.training.trainer", "--project", str(project_id)]
        logger.info(
            "project=%s run=%s training in a child process, log: %s", project_id, run_id, log_path
        )
        with log_path.open("w", encoding="utf-8") as log:
            child = subprocess.run(
                [*command, "--run", str(run_id)],
                env=env,
                preexec_fn=_prepare_child,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        runs = [r for r in events.runs(project_id) if r["id"] == run_id]
        if runs and runs[0]["state"] == "running":  # the child died before recording
            tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-20:])
            events.finish_run(
                run_id,
                "failed",
                {"error": f"training process exited with {child.returncode}", "log_tail": tail},
                consume_events=False,
            )
            return "failed"
        return str(runs[0]["state"]) if runs else "failed"

    return launch


def _prepare_child() -> None:
    """In the training child before exec: lower its CPU priority (serving and webhooks come
    first on a shared machine) and make it die with the thread that started it (Linux
    PR_SET_PDEATHSIG), so a killed server leaves no orphan trainer."""
    os.nice(10)
    try:
        import ctypes  # noqa: PLC0415
        import signal  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:  # not Linux: the child may outlive a killed server
        pass


class BackgroundTrainer:
    """The one scheduling thread per MODEL_DIR, elected by an exclusive file lock."""

    def __init__(self, settings: Settings, events: EventStore) -> None:
        self._settings = settings
        self._events = events
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainer", daemon=True)
        self.is_leader = False

    def start(self) -> BackgroundTrainer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        lock_path = self._settings.model_dir / "trainer.lock"
        with _exclusive_lock(lock_path, self._stop) as acquired:
            if not acquired:
                return
            self.is_leader = True
            # -- scale-out (issue 7): with REDIS_URL, runs are RQ jobs for `ls-active-yolo
            # worker`s. Runs still "running" may be alive on a worker, so they are not
            # interrupted here; RQLauncher.held_back settles those whose job is gone.
            if self._settings.redis_url is not None:
                from backend.jobs.distributed import RQLauncher  # noqa: PLC0415

                rq_launcher = RQLauncher(self._settings, self._events)
                logger.info("trainer started in process %d, queuing runs", os.getpid())
                TrainingScheduler(
                    self._settings, self._events, rq_launcher, rq_launcher.held_back
                ).run_forever(self._stop)
                return
            # -- end scale-out
            stale = self._events.interrupt_stale_runs()
            if stale:
                logger.warning("marked %d training run(s) interrupted by a restart", stale)
            launcher = (
                subprocess_launcher(self._settings, self._events)
                if self._settings.train_subprocess
                else in_process_launcher(self._settings, self._events)
            )
            logger.info("trainer started in process %d", os.getpid())
            TrainingScheduler(self._settings, self._events, launcher).run_forever(self._stop)


class _exclusive_lock:  # noqa: N801  (used like a function)
    """Wait (until `stop`) for an exclusive flock on `path`; yields whether it was acquired."""

    def __init__(self, path: Path, stop: threading.Event) -> None:
        self._path = path
        self._stop = stop
        self._fd: int | None = None

    def __enter__(self) -> bool:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        while not self._stop.is_set():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                self._stop.wait(2.0)
        return False

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
