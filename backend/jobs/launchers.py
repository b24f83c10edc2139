"""Where a training run executes: a launcher takes a recorded run and answers its final state
(or QUEUED when an RQ worker will record it later).

- `InProcessLauncher`: in this process (tests, `TRAIN_SUBPROCESS=0`).
- `ChildProcessLauncher`: a niced child process that dies with its parent (the default).
- `RQLauncher`: with REDIS_URL, an RQ job for `ls-active-yolo worker`s (backend.jobs.worker);
  Redis holds only work in flight, MODEL_DIR stays the source of truth.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from redis import Redis
from redis.exceptions import RedisError
from rq import Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.events import EventStore, RunState
from backend.files import die_with_parent
from backend.jobs import child
from backend.jobs.pipeline import run_job
from backend.jobs.queues import connect, training_queue
from backend.services import Services

logger = logging.getLogger(__name__)

JOB_FUNCTION = "backend.jobs.worker.train_job"  # by name: jobs hold no pickled code
MAX_BACKOFF_S = 3600.0
_LIVE_STATUSES = frozenset(
    {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
)


class Launcher(Protocol):
    def __call__(self, project_id: int, run_id: int) -> RunState: ...


def retry_not_before(runs: Sequence[dict[str, Any]], retry_seconds: float) -> float:
    """The one back-off: when a project whose latest runs (newest first) failed may train
    again (0: now). The delay doubles per consecutive failure, up to an hour."""
    failures = 0
    for run in runs:
        if run["state"] != RunState.FAILED:
            break
        failures += 1
    if failures == 0:
        return 0.0
    delay = min(retry_seconds * 2 ** (failures - 1), MAX_BACKOFF_S)
    return float(runs[0]["finished_at"] or 0.0) + delay


class InProcessLauncher:
    """Run jobs in this process (tests; TRAIN_SUBPROCESS=0)."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def __call__(self, project_id: int, run_id: int) -> RunState:
        return run_job(self._services, project_id, run_id)


class ChildProcessLauncher:
    """Run each job in a niced child process that dies with the thread that started it."""

    def __init__(self, settings: Settings, events: EventStore) -> None:
        self._settings = settings
        self._events = events

    def __call__(self, project_id: int, run_id: int) -> RunState:
        env = {**os.environ, child.SETTINGS_ENV: self._settings.to_json()}
        log_path = self._settings.paths.project(project_id).run_log(run_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", child.MODULE, "--project", str(project_id)]
        logger.info(
            "project=%s run=%s training in a child process, log: %s", project_id, run_id, log_path
        )
        with log_path.open("w", encoding="utf-8") as log:
            finished = subprocess.run(
                [*command, "--run", str(run_id)],
                env=env,
                preexec_fn=_prepare_child,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        run = self._events.run(project_id, run_id)
        if run is not None and run["state"] == RunState.RUNNING:  # died before recording
            tail = "\n".join(log_path.read_text(encoding="utf-8").splitlines()[-20:])
            self._events.finish_run(
                run_id,
                RunState.FAILED,
                {
                    "error": f"training process exited with {finished.returncode}",
                    "log_tail": tail,
                },
                consume_events=False,
            )
            return RunState.FAILED
        return run["state"] if run is not None else RunState.FAILED


def _prepare_child() -> None:
    """In the training child before exec: serving and webhooks come first on a shared
    machine (nice 10), and a killed server leaves no orphan trainer."""
    os.nice(10)
    die_with_parent()


# -- scale-out: RQ ---------------------------------------------------------------------------


def job_id(project_id: int, run_id: int) -> str:
    """One job id per recorded run: queuing a run twice is refused, not doubled."""
    return f"ls-active-yolo-train-p{int(project_id)}-r{int(run_id)}"


class RQLauncher:
    """The launcher when REDIS_URL is set: queue the run, answer QUEUED.

    The run's outcome lands in the event store when a worker finishes it; until then
    `held_back` keeps the scheduler from starting another run of the project.
    """

    def __init__(
        self, settings: Settings, events: EventStore, connection: Redis | None = None
    ) -> None:
        self._settings = settings
        self._events = events
        self._connection = connection if connection is not None else connect(settings)
        self._queue = training_queue(settings, self._connection)

    def __call__(self, project_id: int, run_id: int) -> RunState:
        retries = self._settings.train_job_retries
        try:
            self._queue.enqueue_call(
                JOB_FUNCTION,
                args=(project_id, run_id),
                job_id=job_id(project_id, run_id),
                unique=True,
                timeout=self._settings.train_job_timeout,
                retry=Retry(max=retries) if retries > 0 else None,
                result_ttl=7 * 86400,
                failure_ttl=30 * 86400,
                description=f"train project {project_id} run {run_id}",
            )
        except DuplicateJobError:
            logger.warning("project=%s run=%s was already queued", project_id, run_id)
        except RedisError as exc:
            logger.error("project=%s run=%s could not be queued: %s", project_id, run_id, exc)
            self._events.finish_run(
                run_id, RunState.FAILED, {"error": f"could not queue: {exc}"}, consume_events=False
            )
            return RunState.FAILED
        logger.info(
            "project=%s run=%s queued on %s as %s",
            project_id,
            run_id,
            self._settings.train_queue,
            job_id(project_id, run_id),
        )
        return RunState.QUEUED

    def held_back(self, project_id: int, now: float) -> bool:
        """Whether the scheduler must not start a run of `project_id` now.

        True while the project's last run is queued or running on a worker, and during the
        back-off after failed runs. A run still "running" whose job is gone from Redis (out of
        retries, expired, Redis wiped) is marked interrupted here. When Redis cannot be asked,
        the answer is True: better a late run than two at once.
        """
        runs = self._events.runs(project_id, limit=50)
        if runs and runs[0]["state"] == RunState.RUNNING:
            run_id = int(runs[0]["id"])
            try:
                alive = self._job_alive(project_id, run_id)
            except RedisError as exc:
                logger.warning("project=%s: cannot reach Redis (%s); holding back", project_id, exc)
                return True
            if alive:
                return True
            self._interrupt_lost(project_id, run_id)
            runs = self._events.runs(project_id, limit=50)
        return now < retry_not_before(runs, self._settings.train_retry_seconds)

    def _job_alive(self, project_id: int, run_id: int) -> bool:
        try:
            job = Job.fetch(
                job_id(project_id, run_id), connection=self._connection, serializer=JSONSerializer
            )
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in _LIVE_STATUSES

    def _interrupt_lost(self, project_id: int, run_id: int) -> None:
        # Read again: a job that finished between the two reads recorded its outcome first.
        run = self._events.run(project_id, run_id)
        if run is None or run["state"] != RunState.RUNNING:
            return
        logger.warning(
            "project=%s run=%s: its job is gone from the queue without a result; marking it "
            "interrupted (its events stay pending)",
            project_id,
            run_id,
        )
        self._events.finish_run(
            run_id,
            RunState.INTERRUPTED,
            {"error": "the training job left the queue without recording a result"},
            consume_events=False,
        )
