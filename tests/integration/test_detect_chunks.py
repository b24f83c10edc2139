"""The ranking's detect pass shared in chunks (`backend.ranking.chunks`): against the plain
`detect` on the same tasks, alone, with a stale claim, and with a real `ls-active-yolo worker`
taking chunks from a real redis-server."""

from __future__ import annotations

import ast
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
from rq.job import Job

from backend.config import Settings
from backend.jobs.queues import RQChunkQueue, training_queue
from backend.models.detector import Detector
from backend.ranking.chunks import CLAIM_STALE_S, ChunkPlan, detect_shared, take_chunk
from backend.ranking.detect import Detections, TaskImage, detect, detection_signature
from backend.ranking.detection_cache import DetectionCache
from backend.ranking.embedding_index import EmbeddingIndex
from backend.ranking.progress import RankRun
from backend.services import Services, build_services
from devkit.datagen import write_images
from tests.support.scale_out import RedisServer, WorkerProcess, redis_server_path

PROJECT = 5
CHUNK = 4  # tasks per chunk here (the product's is 256)


@pytest.fixture(scope="module")
def chunk_refs(image_root: Path) -> list[str]:
    """20 readable pictures and one that is not (its task must fail, not vanish)."""
    written = write_images(image_root / "chunked", 20, seed=7)
    return [str(path) for path, _ in written] + [str(image_root / "corrupt.jpg")]


@pytest.fixture
def services(settings: Settings) -> Services:
    return build_services(settings)


def _tasks(refs: list[str]) -> list[TaskImage]:
    return [(100 + i, ref) for i, ref in enumerate(refs)]


def _stores(settings: Settings, detector: Detector, name: str):  # type: ignore[no-untyped-def]
    folder = settings.model_dir / name
    signature = detection_signature(settings, detector.version, detector.names)
    return EmbeddingIndex(folder / "index.faiss"), DetectionCache(folder / "d.npz", signature)


def _plain(settings: Settings, services: Services, tasks: list[TaskImage]) -> Detections:
    detector = services.detectors.get(services.detectors.source_for(None, ()))
    index, cache = _stores(settings, detector, "plain")
    return detect(
        RankRun(PROJECT, detector.version),
        tasks,
        detector=detector,
        images=services.images,
        index=index,
        cache=cache,
        chunk=8,
        image_field="image",
    )


def _shared(
    settings: Settings, services: Services, tasks: list[TaskImage], offload: object
) -> tuple[Detections, EmbeddingIndex]:
    detector = services.detectors.get(services.detectors.source_for(None, ()))
    index, cache = _stores(settings, detector, "shared")
    found = detect_shared(
        RankRun(PROJECT, detector.version),
        tasks,
        settings=settings,
        detector=detector,
        images=services.images,
        index=index,
        cache=cache,
        chunk=8,
        image_field="image",
        offload=offload,  # type: ignore[arg-type]
        chunk_tasks=CHUNK,
    )
    return found, index


def _assert_same(found: Detections, expected: Detections) -> None:
    assert sorted(found.records) == sorted(expected.records)
    assert sorted(found.failed) == sorted(expected.failed)
    for task_id, record in expected.records.items():
        other = found.records[task_id]
        assert other.ref == record.ref
        np.testing.assert_allclose(other.xyxy, record.xyxy, atol=1e-3)
        np.testing.assert_allclose(other.conf, record.conf, atol=1e-4)


class Recorder:
    """A ChunkQueue no worker listens to: the ranking does every chunk itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []

    def submit(self, project_id: int, token: str, chunks: int) -> None:
        self.calls.append((project_id, token, chunks))


def test_alone_the_ranking_does_every_chunk_with_the_plain_result(
    settings: Settings, services: Services, chunk_refs: list[str]
) -> None:
    tasks = _tasks(chunk_refs)
    expected = _plain(settings, services, tasks)
    offload = Recorder()

    found, index = _shared(settings, services, tasks, offload)

    [(project, token, chunks)] = offload.calls
    assert (project, chunks) == (PROJECT, 6)  # 21 tasks in chunks of 4
    _assert_same(found, expected)
    assert list(found.failed) == [120]  # corrupt.jpg: failed, not lost
    assert found.n_predicted == 20
    assert sorted(index.ids()) == sorted(expected.records)
    assert not (settings.paths.project(PROJECT).detect_chunks / token).exists()
    # a small pass is not shared: under two chunks' worth
    small = Recorder()
    _shared(replace(settings, model_dir=settings.model_dir / "small"), services, tasks[:7], small)
    assert small.calls == []


def test_a_stale_claim_is_taken_over(
    settings: Settings, services: Services, chunk_refs: list[str]
) -> None:
    detector = services.detectors.get(services.detectors.source_for(None, ()))
    signature = detection_signature(settings, detector.version, detector.names)
    tasks = _tasks(chunk_refs)
    plan = ChunkPlan.create(
        settings, PROJECT, detector.source, signature, "image", tasks, set(), CHUNK, 8
    )
    assert plan.claim(0) and not plan.claim(0)
    claim = plan.folder / "0.claim"
    old = time.time() - CLAIM_STALE_S - 1
    os.utime(claim, (old, old))
    assert plan.claim(0)  # its holder went silent
    assert not plan.claim(0)  # and the new holder's claim is fresh
    # a worker with another detection setup leaves the chunk alone
    other = replace(settings, image_size=320)
    assert take_chunk(other, services.detectors, services.images, PROJECT, plan.token, 1) == (
        "refused"
    )
    assert take_chunk(settings, services.detectors, services.images, PROJECT, "nope", 1) == "gone"
    assert take_chunk(settings, services.detectors, services.images, PROJECT, plan.token, 1) == (
        "done"
    )
    assert plan.done(1) is not None


# ------------------------------------------------------------------ with a real RQ worker
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_path() is None:
        pytest.skip("redis-server is missing: run `bash scripts/system-deps.sh`")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


class OnceAWorkerHasOne:
    """RQ's ChunkQueue, returning once a worker has claimed a chunk: the ranking would
    otherwise often finish 21 small tasks before the worker has loaded its model."""

    def __init__(self, inner: RQChunkQueue, settings: Settings) -> None:
        self.inner = inner
        self.settings = settings

    def submit(self, project_id: int, token: str, chunks: int) -> None:
        self.inner.submit(project_id, token, chunks)
        folder = self.settings.paths.project(project_id).detect_chunks / token
        deadline = time.monotonic() + 90
        while not list(folder.glob("*.claim")):
            assert time.monotonic() < deadline, "no worker took a chunk within 90 s"
            time.sleep(0.1)


def test_a_worker_takes_chunks_and_the_result_is_the_same(
    settings: Settings,
    services: Services,
    chunk_refs: list[str],
    trained_weights: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection: redis.Redis = redis_server.client()
    settings = replace(settings, redis_url=redis_server.url, train_queue=f"t-{uuid.uuid4().hex}")
    tasks = _tasks(chunk_refs)
    expected = _plain(settings, services, tasks)
    env = {
        "MODEL_DIR": str(settings.model_dir),
        "MODEL_PATH": str(trained_weights),
        "IMAGE_ROOT": str(settings.image_root),
        "IMAGE_SIZE": str(settings.image_size),
        "PREDICT_BATCH": str(settings.predict_batch),
        "REDIS_URL": redis_server.url,
        "TRAIN_QUEUE": settings.train_queue,
        "WORKER_HEARTBEAT_SECONDS": "1",
        "TRAINING": "0",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_registered(connection)
        offload = OnceAWorkerHasOne(RQChunkQueue(settings, connection), settings)
        with caplog.at_level(logging.INFO, logger="backend.ranking.chunks"):
            found, _ = _shared(settings, services, tasks, offload)
    finally:
        worker.stop()

    _assert_same(found, expected)
    queue = training_queue(settings, connection)
    finished = queue.finished_job_registry.get_job_ids()
    jobs = Job.fetch_many(finished, connection=connection, serializer=queue.serializer)
    assert "done" in [job.return_value() for job in jobs if job is not None], worker.log_tail()
    [line] = [r.getMessage() for r in caplog.records if "chunks by process" in r.getMessage()]
    by = ast.literal_eval(line[line.index("{") :])
    mine = by.pop(f"{socket.gethostname()}:{os.getpid()}", 0)  # the rest: workers' horses
    assert mine + sum(by.values()) == 6 and by, line
