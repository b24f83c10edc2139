"""Scale-out training, the worker's side: with REDIS_URL, training runs are RQ jobs run by
`ls-active-yolo worker`s.

What travels where:

* **MODEL_DIR** (one volume every process mounts) stays the source of truth: webhook events
  and training runs in SQLite, model versions and the LIVE pointer in the registry. A run is
  recorded there before it is queued and closed there by whoever runs it.
* **Redis** only carries work in flight: one RQ job per run, holding nothing but
  ``(project_id, run_id)``, a per-project lock, and the detect chunks a ranking offers
  (`detect_chunk_job`, `backend.ranking.chunks`). Losing Redis loses no event and no model.

The flock-elected scheduler (backend.jobs.scheduler) still decides when a project is due;
with Redis its launcher is `RQLauncher` (backend.jobs.launchers), which queues the run and
returns at once, so several projects train at the same time on several workers. A project
never has two runs at once: the scheduler holds a project back while its run is queued or
running (`held_back`), and the job takes a Redis lock on the project (`ProjectLock`) before
training, for the cases the scheduler cannot see (a retried job whose first attempt is still
alive somewhere).

What RQ 2.x does with a dead worker (read in rq 2.12; tests/integration/test_distributed.py):

* The job runs in a forked "work horse" in its own process group, so it outlives a SIGKILLed
  worker. `TrainingWorker` makes the horse die with its worker (PR_SET_PDEATHSIG), as a
  machine that dies would.
* A horse that dies while its worker lives fails the job at once; RQ re-queues it while the
  job has retries left (`TRAIN_JOB_RETRIES`).
* A worker that dies leaves its job in the StartedJobRegistry. The entry expires when the
  worker's heartbeats stop (RQ's default: 60 s after the last one), and the next maintenance
  pass of any *idle* worker (default: every 10 minutes) re-queues the job while retries are
  left, or moves it to the FailedJobRegistry (AbandonedJobError). `TrainingWorker` shortens
  all of this to a few `WORKER_HEARTBEAT_SECONDS`.
* A job that runs out of retries never reached `execute_run`'s bookkeeping, so its run would
  stay "running": `RQLauncher.held_back` sees the job gone and marks the run interrupted,
  which leaves its events pending for the next run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import LockError, RedisError
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.errors import ConfigError
from backend.events import RunState
from backend.files import die_with_parent
from backend.jobs.pipeline import run_job
from backend.jobs.queues import connect, training_queue
from backend.ranking.chunks import take_chunk
from backend.services import build_services

logger = logging.getLogger(__name__)


class RunNotFound(LookupError):
    """A job names a run the event store does not hold (a different MODEL_DIR?)."""


class ProjectBusy(RuntimeError):
    """Another job held the project's lock for longer than this job may wait."""


def lock_ttl(settings: Settings) -> int:
    """Seconds a dead holder keeps a project locked."""
    return max(3 * settings.worker_heartbeat_seconds, 10)


class ProjectLock:
    """At most one training job per project across all workers: a Redis lock with a TTL.

    The holder's keeper thread renews the TTL every third of it, so a holder that dies frees
    the project within `ttl` seconds and a retried job can take over.
    """

    def __init__(self, connection: Redis, queue_name: str, project_id: int, ttl: int) -> None:
        self.name = f"{queue_name}:lock:project:{int(project_id)}"
        self.ttl = ttl
        self._lock = connection.lock(self.name, timeout=ttl, sleep=0.2, thread_local=False)

    @contextmanager
    def held(self, wait_seconds: float) -> Iterator[None]:
        """Hold the lock for the block, waiting up to `wait_seconds` for it."""
        if not self._lock.acquire(blocking=False):
            logger.info("%s is held by another job; waiting up to %.0fs", self.name, wait_seconds)
            if not self._lock.acquire(blocking=True, blocking_timeout=wait_seconds):
                raise ProjectBusy(f"{self.name} stayed held for {wait_seconds:.0f}s")
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(stop,), name="lock-keeper", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()
            try:
                self._lock.release()
            except LockError:
                logger.warning("%s had expired before it was released", self.name)

    def _keep(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl / 3):
            try:
                self._lock.reacquire()
            except LockError:
                logger.error("%s was lost (expired): another job may start", self.name)
                return
            except RedisError as exc:
                logger.warning("could not renew %s: %s", self.name, exc)


def train_job(project_id: int, run_id: int) -> str:
    """The RQ job, in a worker's work horse: run one recorded run; returns its final state.

    Settings come from the worker's own environment, so a GPU machine sets DEVICE=cuda:0 for
    itself. A run that is no longer "running" (finished by an earlier attempt of this job)
    is not trained again.
    """
    settings = Settings.from_env()
    if settings.redis_url is None:
        raise ConfigError("REDIS_URL is not set in the worker's environment")
    services = build_services(settings)
    events = services.events
    lock = ProjectLock(connect(settings), settings.train_queue, project_id, lock_ttl(settings))
    log_path = settings.paths.project(project_id).run_log(run_id)
    try:
        with _logging_to(log_path), lock.held(wait_seconds=settings.train_job_timeout):
            run = events.run(project_id, run_id)
            if run is None:
                raise RunNotFound(f"no run {run_id} of project {project_id} in {events.path}")
            if run["state"] != RunState.RUNNING:
                logger.info("project=%s run=%s is already %s", project_id, run_id, run["state"])
                return str(run["state"])
            logger.info(
                "project=%s run=%s training in worker process %d", project_id, run_id, os.getpid()
            )
            return str(run_job(services, project_id, run_id))
    finally:
        events.close()


def detect_chunk_job(project_id: int, token: str, chunk: int) -> str:
    """The RQ job of one detect chunk a ranking offered (`backend.ranking.chunks`), in a
    worker's work horse; returns what became of it: done, taken (by the ranking or another
    worker), gone (the ranking finished first) or refused (another detection setup)."""
    settings = Settings.from_env()
    services = build_services(settings)
    try:
        outcome = take_chunk(
            settings, services.detectors, services.images, project_id, token, chunk
        )
    finally:
        services.events.close()
    logger.info("project=%s detect chunk %s/%s: %s", project_id, token, chunk, outcome)
    return outcome


@contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """Also log to the run's file under MODEL_DIR (as the local trainer does): with workers on
    other machines it is the one place every run's log can be read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


class TrainingWorker(Worker):
    """An RQ worker whose death is noticed within seconds, and whose horse dies with it.

    `job_monitoring_interval` is how often a busy worker renews its job's heartbeat; a job
    whose heartbeat is three intervals old is abandoned (RQ's own TTL is the interval + 60 s).
    """

    def get_heartbeat_ttl(self, job: Job) -> int:
        interval = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            remaining = job.timeout - self.current_job_working_time
            return max(1, int(min(remaining, interval))) + 2 * interval
        return 3 * interval

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        # Be killed when the worker dies (Linux), or exit if it already has: a killed
        # worker's horse would otherwise train on, holding the project's lock.
        die_with_parent()
        if self.pid is not None and os.getppid() != self.pid:
            os._exit(1)
        super().main_work_horse(job, queue)


def run_worker(settings: Settings) -> int:
    """`ls-active-yolo worker` with REDIS_URL: execute training jobs until SIGINT/SIGTERM.

    SIGTERM is RQ's warm shutdown (the running job finishes first); a second one, or a
    SIGKILL, kills the job, which then goes back to the queue.
    """
    connection = connect(settings)
    interval = settings.worker_heartbeat_seconds
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    worker = TrainingWorker(
        [training_queue(settings, connection)],
        # Unique per start: RQ refuses a name whose previous holder's key has not expired
        # yet, which a container restarted with the same hostname and pid would hit.
        name=f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}",
        connection=connection,
        serializer=JSONSerializer,
        job_monitoring_interval=interval,
        maintenance_interval=3 * interval,  # how soon an idle worker re-queues abandoned jobs
        worker_ttl=15 + 3 * interval,  # RQ blocks on the queue for worker_ttl - 15 seconds
    )
    logger.info(
        "training worker %s on queue %s (MODEL_DIR %s, device %s)",
        worker.name,
        settings.train_queue,
        settings.model_dir,
        settings.device,
    )
    worker.work(logging_level=settings.log_level)
    return 0
