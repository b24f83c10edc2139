"""Scale-out end to end: Label Studio -> a 4-worker gunicorn backend -> Redis -> 2 trainers.

Everything real: the session's Label Studio sends the webhooks and serves the annotations the
training exports; a redis-server on 127.0.0.1; the backend and both training workers started
through docker/entrypoint.sh, the image's own command, sharing one MODEL_DIR as containers
share a volume. Checked: a burst of annotations yields exactly one training job, which runs
on a worker; all four web workers then serve the promoted version; and a worker SIGKILLed
mid-training leaves its job to the other, which finishes it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.events import EventStore
from backend.jobs.launchers import job_id
from backend.jobs.queues import training_queue
from backend.layout import ModelDir
from backend.models.registry import ModelRegistry
from backend.ranking.store import stored_queue_version
from devkit.datagen import SyntheticImage, ls_regions, write_images
from devkit.demo import BackendServer
from devkit.local_label_studio import LocalLabelStudio, find_free_port
from tests.conftest import BOX_CONFIG
from tests.support.scale_out import (
    ENTRYPOINT,
    RedisServer,
    WorkerProcess,
    entrypoint_env,
    pid_alive,
    redis_server_path,
)

TRAIN_EVERY = 6
TRAIN_EPOCHS = 8
WEB_WORKERS = 4
QUEUE = "e2e-scale-out"


@dataclass
class Cluster:
    """The running pieces and what they share."""

    backend: BackendServer
    workers: list[WorkerProcess]
    redis: redis.Redis
    settings: dict[str, str]

    @property
    def model_dir(self) -> Path:
        return Path(self.settings["MODEL_DIR"])

    def events(self) -> EventStore:
        return EventStore(ModelDir(self.model_dir).events_db)

    def run_log(self, project: int, run: int) -> Path:
        return self.model_dir / "projects" / str(project) / "logs" / f"run-{run}.log"

    def web_worker_pids(self) -> set[int]:
        master = self.backend.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return {int(pid) for pid in children}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    trained_weights: Path,
) -> Iterator[Cluster]:
    if redis_server_path() is None:
        pytest.skip("redis-server is missing: run `bash scripts/system-deps.sh`")
    root = tmp_path_factory.mktemp("scale-out")
    settings = {
        "MODEL_DIR": str(root / "shared-models"),  # the volume every container mounts
        "MODEL_PATH": str(trained_weights),
        "IMAGE_SIZE": "160",
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.legacy_token,
        "LOCAL_FILES_DOCUMENT_ROOT": str(ls_document_root),
        "TRAIN_QUEUE": QUEUE,
        "TRAIN_EVERY": str(TRAIN_EVERY),
        "TRAIN_QUIET_SECONDS": "3600",
        "TRAIN_POLL_SECONDS": "0.3",
        "TRAIN_EPOCHS": str(TRAIN_EPOCHS),
        "TRAIN_IMAGE_SIZE": "160",
        "TRAIN_MIN_IMAGES": "4",
        "TRAIN_JOB_RETRIES": "2",
        "WORKER_HEARTBEAT_SECONDS": "1",
    }
    with RedisServer(root / "redis") as server:
        settings["REDIS_URL"] = server.url
        connection = server.client()
        workers = [WorkerProcess(settings, root / f"worker-{i}.log").start() for i in range(2)]
        backend = BackendServer(
            find_free_port(),
            {**settings, "WORKERS": str(WEB_WORKERS), "THREADS": "4"},
            root / "backend",
            executable=ENTRYPOINT,
            startup_timeout=180.0,
        )
        # The entry point execs `ls-active-yolo` from PATH, as the image does.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PATH", entrypoint_env({})["PATH"])
            backend.start()
        try:
            for worker in workers:
                worker.wait_registered(connection, timeout=120)
            yield Cluster(backend, workers, connection, settings)
        finally:
            backend.stop()
            for worker in workers:
                worker.stop()


@pytest.fixture
def project(
    request: pytest.FixtureRequest,
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    cluster: Cluster,
) -> tuple[int, list[int], list[tuple[Path, SyntheticImage]]]:
    """A project of TRAIN_EVERY + 4 shapes images, connected to the cluster's backend."""
    name = request.node.name.split("[")[0][-40:]
    files = write_images(ls_document_root / f"scale-{name}", TRAIN_EVERY + 4, seed=53)
    project_id = label_studio.create_project(f"e2e {name}", BOX_CONFIG)
    task_ids = label_studio.import_images(project_id, [path for path, _ in files])
    label_studio.connect_ml_backend(project_id, cluster.backend.url)
    return project_id, task_ids, files


def _annotate(label_studio: LocalLabelStudio, task_ids: list[int], files: list[Any]) -> None:
    client = label_studio.client()
    for task_id, (_, sample) in zip(task_ids[:TRAIN_EVERY], files, strict=False):
        client.annotations.create(id=task_id, result=ls_regions(sample))


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _finished(events: EventStore, project: int) -> bool:
    """Whether the project's latest run ended (the registry's LIVE moves a moment earlier)."""
    runs = events.runs(project, limit=1)
    return bool(runs) and runs[0]["state"] != "running"


def _logs(cluster: Cluster) -> str:
    return "\n\n".join(
        [f"backend:\n{cluster.backend.log_tail(30)}"]
        + [f"worker {w.pid}:\n{w.log_tail(30)}" for w in cluster.workers]
    )


def _project_jobs(cluster: Cluster, project: int) -> dict[str, list[str]]:
    queue = training_queue_for(cluster)
    prefix = f"ls-active-yolo-train-p{project}-"
    registries = {
        "queued": queue.job_ids,
        "started": queue.started_job_registry.get_job_ids(),
        "finished": FinishedJobRegistry(queue=queue).get_job_ids(),
        "failed": FailedJobRegistry(queue=queue).get_job_ids(),
    }
    return {name: [i for i in ids if i.startswith(prefix)] for name, ids in registries.items()}


def training_queue_for(cluster: Cluster) -> Queue:
    settings = Settings(model_dir=cluster.model_dir, train_queue=QUEUE)
    return training_queue(settings, cluster.redis)


def _served_versions(
    cluster: Cluster,
    project: int,
    task_ids: list[int],
    files: list[Any],
    label_studio: LocalLabelStudio,
    requests_each: int,
) -> tuple[set[str], set[str]]:
    """Many concurrent /setup and /predict requests: the versions they reported."""
    image_url = label_studio.local_file_url(files[-1][0])
    predict_body = {
        "tasks": [{"id": task_ids[-1], "data": {"image": image_url}}],
        "project": f"{project}.1",
        "label_config": BOX_CONFIG,
    }
    setup_body = {"project": f"{project}.1", "schema": BOX_CONFIG}

    def setup(_: int) -> str:
        answer = requests.post(f"{cluster.backend.url}/setup", json=setup_body, timeout=30)
        answer.raise_for_status()
        return str(answer.json()["model_version"])

    def predict(_: int) -> str:
        answer = requests.post(f"{cluster.backend.url}/predict", json=predict_body, timeout=60)
        answer.raise_for_status()
        (result,) = answer.json()["results"]
        return str(result["model_version"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        setups = set(pool.map(setup, range(requests_each)))
        predictions = set(pool.map(predict, range(requests_each)))
    return setups, predictions


_PREDICTED = re.compile(
    r"\[(?P<pid>\d+)\] backend\.serving\.service: project=(?P<project>\d+) "
    r"model_version=(?P<version>\S+) answered 1 tasks\b"
)


def _predicting_pids(cluster: Cluster, project: int, version: str) -> set[int]:
    text = cluster.backend.log_path.read_text(encoding="utf-8", errors="replace")
    return {
        int(m["pid"])
        for m in _PREDICTED.finditer(text)
        if int(m["project"]) == project and m["version"] == version
    }


def test_a_burst_trains_once_on_a_worker_and_every_web_worker_serves_the_new_version(
    label_studio: LocalLabelStudio, cluster: Cluster, project: Any
) -> None:
    project_id, task_ids, files = project
    before_setup, before_predict = _served_versions(
        cluster, project_id, task_ids, files, label_studio, 16
    )
    assert len(before_setup) == 1 and before_setup == before_predict
    (base_version,) = before_setup
    assert base_version.startswith("shapes-")  # MODEL_PATH serves until a promotion

    _annotate(label_studio, task_ids, files)  # the burst: one webhook per annotation
    events = cluster.events()
    _wait(lambda: _finished(events, project_id), 240, f"a finished run; {_logs(cluster)}")
    live = ModelRegistry(cluster.model_dir).live(project_id)
    assert live is not None and live.version == "v1"
    runs = events.runs(project_id)
    assert [(r["state"], r["version"]) for r in runs] == [("promoted", "v1")]
    assert events.pending(project_id) == []
    assert len(events.history(project_id)) == TRAIN_EVERY
    run_id = int(runs[0]["id"])
    job = Job.fetch(job_id(project_id, run_id), connection=cluster.redis, serializer=JSONSerializer)
    # The job records the run, then returns; RQ marks it finished just after.
    _wait(lambda: job.get_status() == JobStatus.FINISHED, 30, "RQ to mark the job finished")
    jobs = _project_jobs(cluster, project_id)
    assert jobs == {
        "queued": [],
        "started": [],
        "finished": [job_id(project_id, run_id)],
        "failed": [],
    }
    assert job.return_value() == "promoted"
    result = job.latest_result()
    assert result is not None
    assert any(w.is_named(result.worker_name) for w in cluster.workers)  # not the web server
    log = cluster.run_log(project_id, run_id).read_text(encoding="utf-8")
    assert log.count(f"project={project_id} run={run_id} training in worker process") == 1
    assert f"project={project_id} run={run_id} epoch {TRAIN_EPOCHS}/{TRAIN_EPOCHS}" in log

    backend_log = cluster.backend.log_path.read_text(encoding="utf-8", errors="replace")
    assert backend_log.count("trainer started in process") == 1  # one elected scheduler
    assert backend_log.count(f"project={project_id} run={run_id} queued on {QUEUE}") == 1

    # The promotion re-ranks the queue (after the run ends): once stored, every web worker
    # answers with the queue version Label Studio's project serves.
    _wait(
        lambda: stored_queue_version(cluster.model_dir, project_id, "v1"),
        120,
        f"the ranked queue; {_logs(cluster)}",
    )
    web_pids = cluster.web_worker_pids()
    assert len(web_pids) == WEB_WORKERS
    setups, predictions = _served_versions(cluster, project_id, task_ids, files, label_studio, 48)
    assert setups == {"v1.q1"} and predictions == {"v1.q1"}
    for _ in range(5):  # the kernel spreads connections unevenly: ask until all answered
        if _predicting_pids(cluster, project_id, "v1.q1") >= web_pids:
            break
        _served_versions(cluster, project_id, task_ids, files, label_studio, 48)
    assert _predicting_pids(cluster, project_id, "v1.q1") == web_pids
    assert _predicting_pids(cluster, project_id, base_version) <= web_pids


def test_a_worker_killed_mid_training_leaves_its_job_to_the_other(
    label_studio: LocalLabelStudio, cluster: Cluster, project: Any
) -> None:
    project_id, task_ids, files = project
    _annotate(label_studio, task_ids, files)
    events = cluster.events()
    run = _wait(lambda: (events.runs(project_id) or [None])[0], 60, "a recorded run")
    run_id = int(run["id"])
    job = Job.fetch(job_id(project_id, run_id), connection=cluster.redis, serializer=JSONSerializer)
    log_path = cluster.run_log(project_id, run_id)
    _wait(
        lambda: log_path.is_file() and f"run={run_id} epoch 1/" in log_path.read_text(),
        180,
        f"the first epoch; {_logs(cluster)}",
    )
    job.refresh()
    assert job.get_status() == JobStatus.STARTED
    (victim,) = [w for w in cluster.workers if w.is_named(job.worker_name)]
    (survivor,) = [w for w in cluster.workers if w is not victim]
    (horse,) = victim.children()
    victim.kill()  # SIGKILL mid-training
    _wait(lambda: not pid_alive(horse), 5, "the training horse to die with its worker")
    assert f"epoch {TRAIN_EPOCHS}/{TRAIN_EPOCHS}" not in log_path.read_text()

    _wait(lambda: _finished(events, project_id), 240, f"the retried run; {_logs(cluster)}")
    live = ModelRegistry(cluster.model_dir).live(project_id)
    assert live is not None and live.version == "v1"
    runs = events.runs(project_id)
    assert [(r["id"], r["state"], r["version"]) for r in runs] == [(run_id, "promoted", "v1")]
    assert events.pending(project_id) == []
    _wait(lambda: job.get_status() == JobStatus.FINISHED, 30, "RQ to mark the job finished")
    job.refresh()
    assert job.retries_left == 1  # one retry used
    result = job.latest_result()
    assert result is not None and survivor.is_named(result.worker_name)
    attempts = re.findall(
        rf"\[(\d+)\] backend\.jobs\.worker: project={project_id} run={run_id} training in worker",
        log_path.read_text(),
    )
    assert len(attempts) == 2 and int(attempts[0]) == horse and int(attempts[1]) != horse
    assert _project_jobs(cluster, project_id)["failed"] == []
    assert cluster.redis.keys(f"{QUEUE}:lock:*") == []
