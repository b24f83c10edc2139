"""When a training job ranks the queue again without a new model: once half of the queue's
head that Label Studio holds (`al_queue_length`) is annotated."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.config import Settings
from backend.events import EventStore
from backend.jobs.pipeline import written_head_half_annotated
from backend.ranking.store import ranking_document, ranking_path, save_ranking

PROJECT = 7


@pytest.fixture
def services(tmp_path: Path) -> SimpleNamespace:
    settings = Settings(model_dir=tmp_path)
    return SimpleNamespace(settings=settings, events=EventStore(settings.paths.events_db))


def ranked(services: SimpleNamespace, *, ranked: int, written: int, at: float) -> None:
    document = ranking_document(
        project_id=PROJECT,
        model_version="v2",
        queue_version="v2.q1",
        strategy="hybrid",
        created_at=at,
        tasks={str(t): {} for t in range(ranked)},
        written=written,
    )
    save_ranking(ranking_path(services.settings.model_dir, PROJECT, "v2"), document)


def annotate(services: SimpleNamespace, *ids: int, action: str = "ANNOTATION_CREATED") -> None:
    services.events.append(PROJECT, action, ids, {})


def test_half_of_the_written_head_annotated_since_the_ranking_ranks_again(
    services: SimpleNamespace,
) -> None:
    annotate(services, 1, 2, 3)  # before the ranking: not counted
    time.sleep(0.01)
    ranked(services, ranked=10, written=4, at=time.time())
    assert not written_head_half_annotated(services, PROJECT)

    annotate(services, 4)
    annotate(services, 4, action="ANNOTATION_UPDATED")  # the same annotation, edited
    services.events.append(PROJECT + 1, "ANNOTATION_CREATED", (9,), {})  # another project
    assert not written_head_half_annotated(services, PROJECT)

    annotate(services, 5, 6, action="ANNOTATIONS_CREATED")
    assert written_head_half_annotated(services, PROJECT)
    assert services.events.annotations_created_since(PROJECT, 0.0) == 6


def test_a_queue_written_whole_or_never_ranked_is_never_ranked_again_for_it(
    services: SimpleNamespace,
) -> None:
    assert not written_head_half_annotated(services, PROJECT)

    ranked(services, ranked=4, written=4, at=0.0)
    annotate(services, 1, 2, 3, 4)

    assert not written_head_half_annotated(services, PROJECT)
