"""The background trainer: turns pending webhook events into training runs (and, first on
each poll, takes new annotations into the annotation ledger: `jobs.ledger_sync`).

Coalescing rules, per project: train when START_TRAINING arrived, when at least TRAIN_EVERY
distinct annotations changed, or when changes have been pending for TRAIN_QUIET_SECONDS with
no newer event. A project whose Label Studio switch "Start model training on annotation
submission" is on trains on START_TRAINING only: Label Studio then sends it every N
annotations, as the user set it, and TRAIN_EVERY and TRAIN_QUIET_SECONDS stay out of its
way. A storm of events therefore yields one run; runs are executed one at a time, so a
project never has two. Only one process per MODEL_DIR schedules (a file lock), however
many gunicorn workers there are; if that process dies, the lock passes to another.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from backend.config import Settings
from backend.events import REQUESTED, Event, EventStore, RunState
from backend.files import exclusive_lock
from backend.jobs.launchers import (
    ChildProcessLauncher,
    InProcessLauncher,
    Launcher,
    RQLauncher,
    retry_not_before,
)
from backend.jobs.ledger_sync import sync_events
from backend.services import Services

logger = logging.getLogger(__name__)

# A launcher may hand the run to a queue (RQLauncher) and answer QUEUED: the run's outcome then
# lands in the event store later, and `HeldBack` tells the scheduler which projects must wait.
HeldBack = Callable[[int, float], bool]  # (project_id, now) -> must not start a run now


@dataclass(frozen=True)
class Due:
    """A project that should train now, why, and the newest event the run covers."""

    project_id: int
    reason: str
    max_event_id: int


def due_projects(
    pending: list[Event],
    now: float,
    train_every: int,
    quiet_seconds: float,
    label_studio_driven: Collection[int] = (),
) -> list[Due]:
    """Which projects must train, from their pending events (pure; oldest project first).

    Projects in `label_studio_driven` (Label Studio's training switch on) are due only once a
    START_TRAINING is pending; their other events wait for it, kept, not dropped."""
    by_project: dict[int, list[Event]] = {}
    for event in pending:
        by_project.setdefault(event.project_id, []).append(event)
    due = []
    for project_id, events in by_project.items():
        changed = {i for e in events for i in e.annotation_ids}
        newest = max(e.received_at for e in events)
        if any(e.action == "START_TRAINING" for e in events):
            reason = REQUESTED
        elif project_id in label_studio_driven:
            continue
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
        held_back: HeldBack | None = None,
        before_runs: Callable[[], object] | None = None,
    ) -> None:
        self._settings = settings
        self._events = events
        self._launch = launcher
        self._held_back = held_back
        self._before_runs = before_runs

    def run_once(self, now: float | None = None) -> list[tuple[int, RunState]]:
        """Start (and wait for) every run that is due now; returns (project, final state).

        `before_runs` (the annotation ledger's sync) goes first; its failure is logged and
        does not hold training up."""
        if self._before_runs is not None:
            try:
                self._before_runs()
            except Exception:
                logger.exception("annotation ledger sync failed; retried on the next poll")
        now = time.time() if now is None else now
        pending = self._events.pending()
        switched_on = {
            project
            for project in {e.project_id for e in pending}
            if self._events.label_studio_trains_every(project)
        }
        done = []
        for due in due_projects(
            pending,
            now,
            self._settings.train_every,
            self._settings.train_quiet_seconds,
            switched_on,
        ):
            retry_seconds = self._settings.train_retry_seconds
            if now < retry_not_before(self._events.runs(due.project_id, limit=50), retry_seconds):
                continue  # backing off after failed runs
            if self._held_back is not None and self._held_back(due.project_id, now):
                continue  # its run is queued or running on a worker
            run_id = self._events.start_run(due.project_id, due.reason, due.max_event_id)
            logger.info("project=%s run=%s starting: %s", due.project_id, run_id, due.reason)
            state = self._launch(due.project_id, run_id)
            done.append((due.project_id, state))
            if state == RunState.QUEUED:  # a worker finishes and records it
                continue
            if state == RunState.FAILED:
                runs = self._events.runs(due.project_id, limit=50)
                logger.warning(
                    "project=%s run=%s failed: %s; events kept, next try in %.0fs",
                    due.project_id,
                    run_id,
                    (runs[0]["details"].get("error") if runs else None) or "unknown error",
                    retry_not_before(runs, retry_seconds) - time.time(),
                )
            else:
                logger.info("project=%s run=%s finished: %s", due.project_id, run_id, state)
        return done

    def run_forever(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; an unexpected error is logged and polling goes on."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("training scheduler iteration failed")
            stop.wait(self._settings.train_poll_seconds)


class BackgroundTrainer:
    """The one scheduling thread per MODEL_DIR, elected by an exclusive file lock."""

    def __init__(self, services: Services) -> None:
        self._services = services
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
        settings, events = self._services.settings, self._services.events
        with exclusive_lock(settings.paths.trainer_lock, wait=self._wait) as acquired:
            if not acquired:
                return
            self.is_leader = True
            sync = functools.partial(sync_events, self._services)
            if settings.redis_url is not None:
                # Runs still "running" may be alive on a worker, so they are not interrupted
                # here; RQLauncher.held_back settles those whose job is gone.
                rq_launcher = RQLauncher(settings, events)
                logger.info("trainer started in process %d, queuing runs", os.getpid())
                scheduler = TrainingScheduler(
                    settings, events, rq_launcher, rq_launcher.held_back, sync
                )
            else:
                stale = events.interrupt_stale_runs()
                if stale:
                    logger.warning("marked %d training run(s) interrupted by a restart", stale)
                launcher: Launcher = (
                    ChildProcessLauncher(settings, events)
                    if settings.train_subprocess
                    else InProcessLauncher(self._services)
                )
                logger.info("trainer started in process %d", os.getpid())
                scheduler = TrainingScheduler(settings, events, launcher, before_runs=sync)
            scheduler.run_forever(self._stop)

    def _wait(self) -> bool:
        """Between tries for the lock: False once stopped."""
        return not self._stop.wait(2.0)
