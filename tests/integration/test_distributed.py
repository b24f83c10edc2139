"""Scale-out against a real redis-server and real `ls-active-yolo worker` processes.

What RQ 2.x does with a dead worker is checked here with jobs that only sleep (no Label
Studio, no training); tests/e2e/test_scale_out.py runs real training jobs the same way.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.errors import ConfigError
from backend.events import EventStore, RunState
from backend.jobs.launchers import (
    JOB_FUNCTION,
    RQLauncher,
    job_id,
    retry_not_before,
)
from backend.jobs.queues import training_queue
from backend.jobs.scheduler import TrainingScheduler
from backend.jobs.worker import ProjectBusy, ProjectLock
from devkit.local_label_studio import find_free_port
from tests.support.scale_out import RedisServer, WorkerProcess, pid_alive, redis_server_path


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.skip("redis-server is missing: run `bash scripts/system-deps.sh`")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def connection(redis_server: RedisServer) -> redis.Redis:
    client = redis_server.client()
    client.flushall()
    return client


def _settings(tmp_path: Path, url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_dir": tmp_path / "models",
        "redis_url": url,
        "train_queue": f"test-{uuid.uuid4().hex[:8]}",
        "train_every": 3,
        "train_quiet_seconds": 3600.0,
        "train_retry_seconds": 60.0,
        "train_job_retries": 2,
        "train_job_timeout": 600,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def _worker_env(settings: Settings, ls_url: str) -> dict[str, str]:
    return {
        "MODEL_DIR": str(settings.model_dir),
        "REDIS_URL": str(settings.redis_url),
        "TRAIN_QUEUE": settings.train_queue,
        "WORKER_HEARTBEAT_SECONDS": "1",
        "LABEL_STUDIO_URL": ls_url,
        "LABEL_STUDIO_API_KEY": "unused",
        "TRAINING": "0",
    }


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# -- settings --------------------------------------------------------------------------------


def test_redis_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://:s3cret@redis:6379/0",
            "TRAIN_QUEUE": "gpu-jobs",
            "TRAIN_JOB_RETRIES": "0",
            "WORKER_HEARTBEAT_SECONDS": "5",
        }
    )
    assert settings.redis_url == "redis://:s3cret@redis:6379/0"
    assert settings.train_queue == "gpu-jobs"
    assert settings.train_job_retries == 0
    assert settings.worker_heartbeat_seconds == 5
    assert "s3cret" not in repr(settings)
    defaults = Settings.from_env({})
    assert defaults.redis_url is None
    assert (defaults.train_job_timeout, defaults.train_job_retries) == (86400, 3)
    with pytest.raises(ConfigError, match="REDIS_URL must start with redis://"):
        Settings.from_env({"REDIS_URL": "http://redis:6379"})
    with pytest.raises(ConfigError, match="TRAIN_JOB_TIMEOUT must be >= 60"):
        Settings.from_env({"TRAIN_JOB_TIMEOUT": "5"})


def test_settings_travel_to_a_child_process_unchanged(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "redis://127.0.0.1:1/0")
    assert Settings.from_json(settings.to_json()) == settings


# -- back-off --------------------------------------------------------------------------------


def test_retry_delay_doubles_per_consecutive_failure_up_to_an_hour() -> None:
    def runs(*states: str) -> list[dict[str, object]]:  # newest first, finished at 1000
        return [{"state": s, "finished_at": 1000.0} for s in states]

    assert retry_not_before([], 60.0) == 0.0
    assert retry_not_before(runs("promoted", "failed"), 60.0) == 0.0
    assert retry_not_before(runs("failed", "promoted"), 60.0) == 1060.0
    assert retry_not_before(runs("failed", "failed", "rejected", "failed"), 60.0) == 1120.0
    assert retry_not_before(runs(*["failed"] * 12), 60.0) == 4600.0
    assert retry_not_before(runs("interrupted", "failed"), 60.0) == 0.0  # a crash: at once


# -- the scheduler with RQLauncher -----------------------------------------------------------


def test_a_storm_queues_one_job_per_project_and_holds_the_project_back(
    tmp_path: Path, connection: redis.Redis, redis_server: RedisServer
) -> None:
    settings = _settings(tmp_path, redis_server.url)
    events = EventStore(settings.paths.events_db)
    for i in range(40):
        events.append(7, "ANNOTATION_CREATED", (i,), {})
    for i in range(5):
        events.append(8, "ANNOTATION_UPDATED", (100 + i,), {})
    launcher = RQLauncher(settings, events, connection)
    scheduler = TrainingScheduler(settings, events, launcher, launcher.held_back)

    assert scheduler.run_once() == [(7, RunState.QUEUED), (8, RunState.QUEUED)]
    for _ in range(3):  # polls while the jobs wait: nothing new
        assert scheduler.run_once() == []
    events.append(7, "START_TRAINING", (), {})  # even a request waits for the queued run
    assert scheduler.run_once() == []

    queue = training_queue(settings, connection)
    run7, run8 = events.runs(7)[0]["id"], events.runs(8)[0]["id"]
    assert queue.job_ids == [job_id(7, run7), job_id(8, run8)]
    job = queue.fetch_job(job_id(7, run7))
    assert job is not None
    assert (job.func_name, job.args) == (JOB_FUNCTION, [7, run7])
    assert (job.timeout, job.retries_left) == (600, 2)
    assert [r["state"] for r in events.runs(7)] == ["running"]
    assert [r["state"] for r in events.runs(8)] == ["running"]
    assert len(events.pending(7)) == 41  # nothing is consumed before a worker finishes


def test_queuing_a_run_twice_makes_one_job(
    tmp_path: Path, connection: redis.Redis, redis_server: RedisServer
) -> None:
    settings = _settings(tmp_path, redis_server.url)
    events = EventStore(settings.paths.events_db)
    events.append(3, "START_TRAINING", (), {})
    run = events.start_run(3, "requested", 1)
    launcher = RQLauncher(settings, events, connection)
    assert launcher(3, run) == RunState.QUEUED
    assert launcher(3, run) == RunState.QUEUED
    assert training_queue(settings, connection).job_ids == [job_id(3, run)]


@pytest.mark.parametrize("loss", ["deleted", "failed"])
def test_a_run_whose_job_is_gone_is_interrupted_and_retrained(
    tmp_path: Path, connection: redis.Redis, redis_server: RedisServer, loss: str
) -> None:
    settings = _settings(tmp_path, redis_server.url)
    events = EventStore(settings.paths.events_db)
    events.append(5, "START_TRAINING", (), {})
    launcher = RQLauncher(settings, events, connection)
    scheduler = TrainingScheduler(settings, events, launcher, launcher.held_back)
    assert scheduler.run_once() == [(5, RunState.QUEUED)]
    first = events.runs(5)[0]["id"]
    job = Job.fetch(job_id(5, first), connection=connection, serializer=JSONSerializer)
    if loss == "deleted":  # Redis lost it (flushed, evicted, expired)
        job.delete()
    else:  # out of retries: RQ moved it to the FailedJobRegistry
        job.set_status(JobStatus.FAILED)

    assert scheduler.run_once() == [(5, RunState.QUEUED)]
    runs = events.runs(5)
    assert [(r["id"], r["state"]) for r in runs] == [(first + 1, "running"), (first, "interrupted")]
    assert len(events.pending(5)) == 1  # the request survived the lost job


def test_failed_runs_back_off_without_redis_state(
    tmp_path: Path, connection: redis.Redis, redis_server: RedisServer
) -> None:
    settings = _settings(tmp_path, redis_server.url, train_retry_seconds=30.0)
    events = EventStore(settings.paths.events_db)
    events.append(4, "START_TRAINING", (), {})
    run = events.start_run(4, "requested", 1)
    events.finish_run(run, "failed", {"error": "boom"}, consume_events=False)
    finished = float(events.runs(4)[0]["finished_at"])
    launcher = RQLauncher(settings, events, connection)
    assert launcher.held_back(4, finished + 29.0) is True
    assert launcher.held_back(4, finished + 31.0) is False


def test_unreachable_redis_fails_the_run_and_holds_projects_back(tmp_path: Path) -> None:
    settings = _settings(tmp_path, f"redis://127.0.0.1:{find_free_port()}/0")
    events = EventStore(settings.paths.events_db)
    events.append(6, "START_TRAINING", (), {})
    launcher = RQLauncher(settings, events)
    run = events.start_run(6, "requested", 1)
    assert launcher(6, run) == "failed"
    failed = events.runs(6)[0]
    assert failed["state"] == "failed"
    assert failed["details"]["error"].startswith("could not queue:")
    assert len(events.pending(6)) == 1
    events.start_run(6, "requested", 1)  # a run in flight that Redis cannot be asked about
    assert launcher.held_back(6, time.time()) is True


# -- the project lock ------------------------------------------------------------------------


def test_project_lock_admits_one_holder_at_a_time(connection: redis.Redis) -> None:
    first, second = ProjectLock(connection, "q", 1, ttl=5), ProjectLock(connection, "q", 1, ttl=5)
    other_project = ProjectLock(connection, "q", 2, ttl=5)
    released_at: list[float] = []
    entered = threading.Event()

    def hold() -> None:
        with first.held(wait_seconds=1):
            entered.set()
            time.sleep(1.0)
            released_at.append(time.monotonic())

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    with other_project.held(wait_seconds=0.1):  # another project is not blocked
        pass
    with second.held(wait_seconds=5):
        acquired_at = time.monotonic()
    holder.join()
    assert acquired_at >= released_at[0]
    with pytest.raises(ProjectBusy), first.held(wait_seconds=1):
        with second.held(wait_seconds=0.3):
            pass


def test_project_lock_outlives_its_ttl_while_held_and_frees_itself_when_abandoned(
    connection: redis.Redis,
) -> None:
    holder, rival = ProjectLock(connection, "q", 9, ttl=1), ProjectLock(connection, "q", 9, ttl=1)
    with holder.held(wait_seconds=1):
        time.sleep(2.5)  # 2.5 TTLs: the keeper renews it
        with pytest.raises(ProjectBusy):
            with rival.held(wait_seconds=0.2):
                pass
    # A holder that died: the key was set but nobody renews it.
    assert connection.set(holder.name, b"dead-holder", nx=True, ex=1)
    began = time.monotonic()
    with rival.held(wait_seconds=5):  # ProjectBusy if the dead holder's key never expired
        waited = time.monotonic() - began
    assert waited > 0.3  # it did wait for the expiry (no upper bound: cores are shared)


# -- real workers ----------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_runs_a_training_job_and_records_it_in_the_event_store(
    tmp_path: Path, connection: redis.Redis, redis_server: RedisServer
) -> None:
    settings = _settings(tmp_path, redis_server.url)
    events = EventStore(settings.paths.events_db)
    events.append(11, "START_TRAINING", (), {})
    events.append(12, "START_TRAINING", (), {})
    unreachable_ls = f"http://127.0.0.1:{find_free_port()}"
    worker = WorkerProcess(_worker_env(settings, unreachable_ls), tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_registered(connection)
        launcher = RQLauncher(settings, events, connection)
        # Project 11: Label Studio is unreachable, so the run fails and its events stay.
        failing = events.start_run(11, "requested", 1)
        assert launcher(11, failing) == RunState.QUEUED
        # Project 12: already finished by an earlier attempt, so it is not trained again.
        done = events.start_run(12, "requested", 2)
        events.finish_run(done, "promoted", {}, version="v3")
        assert launcher(12, done) == RunState.QUEUED
        jobs = [
            Job.fetch(job_id(p, r), connection=connection, serializer=JSONSerializer)
            for p, r in ((11, failing), (12, done))
        ]
        _wait_for(
            lambda: all(j.get_status() == JobStatus.FINISHED for j in jobs),
            120,
            f"both jobs to finish; worker log:\n{worker.log_tail()}",
        )
    finally:
        worker.stop()
    assert [j.return_value() for j in jobs] == ["failed", "promoted"]
    assert all(worker.is_named(j.latest_result().worker_name) for j in jobs)  # type: ignore[union-attr]
    run = events.runs(11)[0]
    assert (run["id"], run["state"]) == (failing, "failed")
    assert "ConnectError" in run["details"]["error"] or "Connection" in run["details"]["error"]
    assert len(events.pending(11)) == 1
    assert events.runs(12)[0]["state"] == "promoted"
    log = (settings.model_dir / "projects" / "11" / "logs" / f"run-{failing}.log").read_text()
    assert f"project=11 run={failing} training in worker process" in log
    skipped = (settings.model_dir / "projects" / "12" / "logs" / f"run-{done}.log").read_text()
    assert f"project=12 run={done} is already promoted" in skipped
    assert connection.keys(f"{settings.train_queue}:lock:*") == []  # locks released


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["worker", "horse"])
def test_a_job_of_a_killed_worker_is_finished_by_another(
    tmp_path: Path, connection: redis.Redis, redis_server: RedisServer, victim: str
) -> None:
    """SIGKILL mid-job. The worker: its horse dies with it (PR_SET_PDEATHSIG), the job is
    abandoned once its heartbeat expires and is re-queued by the other worker's maintenance.
    The horse alone: the live worker fails the job and RQ re-queues it at once."""
    settings = _settings(tmp_path, redis_server.url)
    env = _worker_env(settings, "http://127.0.0.1:9")
    workers = [WorkerProcess(env, tmp_path / f"worker-{i}.log").start() for i in range(2)]
    try:
        for worker in workers:
            worker.wait_registered(connection)
        queue = training_queue(settings, connection)
        job = queue.enqueue_call(
            "time.sleep", args=(4,), job_id="sleepy", timeout=60, retry=Retry(max=1)
        )
        _wait_for(lambda: job.get_status() == JobStatus.STARTED, 30, "the job to start")
        job.refresh()
        first = next(w for w in workers if w.is_named(job.worker_name))
        _wait_for(lambda: first.children(), 10, "the work horse")
        (horse,) = first.children()
        if victim == "worker":
            first.kill()
            _wait_for(lambda: not pid_alive(horse), 5, "the horse to die with its worker")
        else:
            os.kill(horse, signal.SIGKILL)
        # Within 60 s: RQ's defaults would abandon the job only after a 60 s heartbeat TTL
        # plus up to 10 minutes to the next maintenance pass.
        _wait_for(
            lambda: job.get_status() == JobStatus.FINISHED,
            60,
            "another attempt to finish the job; logs:\n" + "\n".join(w.log_tail() for w in workers),
        )
        job.refresh()
        result = job.latest_result()
        assert result is not None and result.type == result.Type.SUCCESSFUL
        if victim == "worker":
            (survivor,) = [w for w in workers if w is not first]
            assert survivor.is_named(result.worker_name)
        else:
            assert first.returncode() is None  # the worker lived on
        assert job.retries_left == 0
        assert FinishedJobRegistry(queue=queue).get_job_ids() == ["sleepy"]
        assert FailedJobRegistry(queue=queue).get_job_ids() == []
    finally:
        for worker in workers:
            worker.stop()
