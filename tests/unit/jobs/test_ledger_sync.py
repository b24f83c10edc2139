"""Webhook events -> the annotation ledger, against a Label Studio stand-in (its answers and
faults); the same against a real Label Studio: tests/e2e/test_analytics.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.analytics.ledger import AnnotationLedger
from backend.config import Settings
from backend.events import EventStore
from backend.jobs.ledger_sync import sync_events
from backend.ranking.store import ranking_document, ranking_entry, ranking_path, save_ranking
from backend.services import Services
from tests.conftest import BOX_CONFIG

PREDICTIONS = {
    5: {
        "id": 5,
        "model_version": "v2",
        "result": [
            {
                "from_name": "label",
                "type": "rectanglelabels",
                "value": {"x": 10, "y": 10, "width": 20, "height": 20}
                | {"rectanglelabels": ["Square"]},
            }
        ],
    }
}


class FakeLabelStudio:
    configured = True

    def __init__(self) -> None:
        self.down = False
        self.sdk = SimpleNamespace(
            projects=SimpleNamespace(get=self.project),
            predictions=SimpleNamespace(get=self.prediction),
        )

    def project(self, *, id: int) -> Any:
        if id == 404:
            raise ApiError(status_code=404, body="no project")
        return SimpleNamespace(id=id, label_config=BOX_CONFIG)

    def prediction(self, *, id: int) -> dict[str, Any]:
        if self.down:
            raise httpx.ConnectError("refused")
        if id not in PREDICTIONS:
            raise ApiError(status_code=404, body="gone")
        return PREDICTIONS[id]


def annotation(annotation_id: int, parent: int | None, regions: list[dict]) -> dict:
    return {
        "id": annotation_id,
        "task": 30 + annotation_id,
        "result": regions,
        "lead_time": 9.0,
        "completed_by": 1,
        "parent_prediction": parent,
    }


@pytest.fixture
def world(tmp_path: Path) -> SimpleNamespace:
    settings = Settings(model_dir=tmp_path)
    ls = FakeLabelStudio()
    services = Services(
        settings=settings,
        events=EventStore(settings.paths.events_db),
        registry=None,  # type: ignore[arg-type]
        label_studio=ls,  # type: ignore[arg-type]
        images=None,  # type: ignore[arg-type]
        detectors=None,  # type: ignore[arg-type]
        ledger=AnnotationLedger(settings.paths.annotation_ledger),
    )
    return SimpleNamespace(services=services, ls=ls, events=services.events)


def test_events_land_in_the_ledger_once_and_deletions_leave_it(world: SimpleNamespace) -> None:
    kept = PREDICTIONS[5]["result"]
    world.events.append(3, "ANNOTATION_CREATED", (1,), {"annotation": annotation(1, 5, kept)})
    world.events.append(3, "ANNOTATION_CREATED", (2,), {"annotation": annotation(2, None, kept)})
    world.events.append(3, "ANNOTATION_CREATED", (3,), {"annotation": annotation(3, 77, kept)})
    world.events.append(3, "START_TRAINING", (), {})
    world.events.append(404, "ANNOTATION_CREATED", (4,), {"annotation": annotation(4, 5, kept)})

    summary = sync_events(world.services)

    assert (summary.recorded, summary.forgotten, summary.without_prediction) == (2, 0, 1)
    rows = {r.annotation_id: r for r in world.services.ledger.records(3)}
    assert rows[1].edits["accepted"] == 1 and rows[1].model_version == "v2"
    assert rows[2].edits["drawn"] == 1 and rows[2].model_version is None
    assert world.services.ledger.event_cursor() == 5
    assert sync_events(world.services).recorded == 0  # nothing new

    world.events.append(3, "ANNOTATIONS_DELETED", (1,), {"annotations": [{"id": 1}]})
    assert sync_events(world.services).forgotten == 1
    assert [r.annotation_id for r in world.services.ledger.records(3)] == [2]


def test_an_unreachable_label_studio_leaves_the_events_for_later(world: SimpleNamespace) -> None:
    world.events.append(3, "ANNOTATION_CREATED", (1,), {"annotation": annotation(1, 5, [])})
    world.ls.down = True
    with pytest.raises(Exception, match="reading prediction 5 failed"):
        sync_events(world.services)
    assert world.services.ledger.event_cursor() == 0
    world.ls.down = False
    assert sync_events(world.services).recorded == 1


def test_a_queue_prediction_is_recorded_under_its_model_with_its_queue_position(
    world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    regions = PREDICTIONS[5]["result"]
    # the live queue's, an older queue's (re-ranked since), one kept by a ranking
    for prediction_id, version in ((6, "v2.q3"), (7, "v2.q2"), (8, "v2")):
        prediction = {"id": prediction_id, "model_version": version, "result": regions}
        monkeypatch.setitem(PREDICTIONS, prediction_id, prediction)
    entry = ranking_entry(
        result=regions, score=0.25, rank=4, strategy_rank=4, strategy_score=0.5, ref="x"
    )
    tasks = {str(30 + i): entry for i in (1, 2, 3)}
    document = ranking_document(
        project_id=3,
        model_version="v2",
        queue_version="v2.q3",
        strategy="hybrid",
        created_at=0.0,
        tasks=tasks,
        written=len(tasks),
    )
    save_ranking(ranking_path(world.services.settings.model_dir, 3, "v2"), document)
    for annotation_id, parent in ((1, 6), (2, 7), (3, 8)):
        payload = {"annotation": annotation(annotation_id, parent, regions)}
        world.events.append(3, "ANNOTATION_CREATED", (annotation_id,), payload)

    assert sync_events(world.services).recorded == 3

    rows = {r.annotation_id: r for r in world.services.ledger.records(3)}
    assert {i: (r.model_version, r.queue_position) for i, r in rows.items()} == {
        1: ("v2", 4),  # served from the stored queue
        2: ("v2", None),  # an older queue of the same model: its positions are gone
        3: ("v2", None),
    }
