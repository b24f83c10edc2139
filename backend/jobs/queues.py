"""The RQ side of scale-out, shared by whoever queues and whoever works: the Redis connection,
the one queue every job goes through, and the detect chunks a ranking offers to workers
(`backend.ranking.chunks`; the training runs are queued by `launchers.RQLauncher`)."""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.serializers import JSONSerializer

from backend.config import Settings
from backend.errors import ConfigError

logger = logging.getLogger(__name__)

CHUNK_JOB_FUNCTION = "backend.jobs.worker.detect_chunk_job"  # by name, as the training job


def connect(settings: Settings) -> Redis:
    """A Redis client for REDIS_URL (RQ needs raw bytes, so no decode_responses)."""
    if settings.redis_url is None:
        raise ConfigError("REDIS_URL is not set")
    return Redis.from_url(settings.redis_url)


def training_queue(settings: Settings, connection: Redis) -> Queue:
    """The RQ queue of training jobs and detect chunks. JSON, not pickle: a job read from a
    shared Redis must not be able to run arbitrary code in a worker."""
    return Queue(settings.train_queue, connection=connection, serializer=JSONSerializer)


class RQChunkQueue:
    """`ranking.chunks.ChunkQueue` on RQ: one job per chunk, at the front of the queue (a
    ranking waits for them, a queued training run does not), never retried (the ranking does
    a chunk nobody finished)."""

    def __init__(self, settings: Settings, connection: Redis | None = None) -> None:
        self._settings = settings
        self._queue = training_queue(settings, connection or connect(settings))

    def submit(self, project_id: int, token: str, chunks: int) -> None:
        jobs = [
            Queue.prepare_data(
                CHUNK_JOB_FUNCTION,
                args=(int(project_id), token, k),
                job_id=f"ls-active-yolo-detect-p{int(project_id)}-{token}-{k}",
                timeout=self._settings.train_job_timeout,
                result_ttl=3600,
                failure_ttl=86400,
                at_front=True,
                description=f"detect chunk {k} of project {project_id}'s ranking {token}",
            )
            for k in range(chunks)
        ]
        try:
            self._queue.enqueue_many(jobs)
        except RedisError as exc:
            logger.warning(
                "project=%s: detect chunks not offered to workers (%s); ranking alone",
                project_id,
                exc,
            )
            return
        logger.info(
            "project=%s: %d detect chunks offered to workers on %s",
            project_id,
            chunks,
            self._settings.train_queue,
        )


def chunk_queue(settings: Settings) -> RQChunkQueue | None:
    """Where a ranking offers its detect chunks: RQ with REDIS_URL, else nowhere."""
    return RQChunkQueue(settings) if settings.redis_url is not None else None
