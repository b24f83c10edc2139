"""The active-learning queue against a real Label Studio 1.23: what `rank_project` writes and
what Label Studio then serves (`/next`, the Data Manager tab), and that re-ranking never
duplicates predictions."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.labelstudio.predictions import QUEUE_VIEW_TITLE, UNCERTAINTY_SAMPLING
from backend.models.detector import DetectorPool
from backend.models.registry import ModelRegistry
from backend.ranking.errors import RankingCancelled
from backend.ranking.job import RankSummary, rank_project
from backend.ranking.progress import RankProgress
from backend.ranking.queue_config import QueueConfig
from backend.ranking.store import load_ranking, precomputed_prediction
from devkit.datagen import write_images
from devkit.local_label_studio import LocalLabelStudio
from tests.conftest import BOX_CONFIG

N_IMAGES = 12
N_SEED_LABELED = 2
AP50 = {"square": 0.9, "circle": 0.6, "triangle": 0.75}


class QueueWorld:
    """One project in the session's Label Studio plus the backend services that rank it."""

    def __init__(
        self, ls: LocalLabelStudio, document_root: Path, weights: Path, model_dir: Path
    ) -> None:
        self.ls = ls
        self.headers = ls.auth_headers()
        self.project_id = ls.create_project("AL queue", BOX_CONFIG)
        folder = document_root / f"queue-{uuid.uuid4().hex[:8]}"
        images = [path for path, _ in write_images(folder, N_IMAGES, seed=11)]
        self.task_ids = ls.import_images(self.project_id, images)
        self.settings = Settings(
            model_dir=model_dir,
            model_path=weights,
            label_studio_url=ls.url,
            label_studio_api_key=ls.legacy_token,
            local_files_root=document_root.resolve(),
            image_size=160,
            predict_batch=4,
        )
        self.registry = ModelRegistry(model_dir)
        version = self.registry.create_version(
            self.project_id, weights, {"metrics": {"per_class_ap50": AP50}}
        )
        self.registry.promote(self.project_id, version.version, reason="e2e")
        self.version = version.version
        self.client = LabelStudioClient(ls.url, ls.legacy_token)
        self.detectors = DetectorPool(self.settings, self.registry)
        self.images = ImageLoader(self.settings, self.client)
        self.sdk = ls.client()
        for task_id in self.task_ids[:N_SEED_LABELED]:
            self.annotate(task_id)

    def rank(self, clusters: bool = True, **kwargs: Any) -> RankSummary:
        return rank_project(
            settings=self.settings,
            detectors=self.detectors,
            images=self.images,
            label_studio=self.client,
            registry=self.registry,
            project_id=self.project_id,
            queue=QueueConfig(batch_size=N_IMAGES, clusters=clusters),
            **kwargs,
        )

    def annotate(self, task_id: int) -> None:
        region = {
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 320,
            "original_height": 256,
            "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["Square"]},
        }
        answer = requests.post(
            f"{self.ls.url}/api/tasks/{task_id}/annotations/",
            json={"result": [region], "was_cancelled": False},
            headers=self.headers,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text

    def predictions(self) -> dict[int, list[Any]]:
        """Every prediction of the project, by task id."""
        by_task: dict[int, list[Any]] = defaultdict(list)
        for prediction in self.sdk.predictions.list(project=self.project_id):
            by_task[int(prediction.task)].append(prediction)
        return by_task

    def live_predictions(self) -> dict[int, list[Any]]:
        return {
            task: [p for p in items if p.model_version == self.version]
            for task, items in self.predictions().items()
        }

    def next_task(self) -> dict[str, Any]:
        answer = requests.get(
            f"{self.ls.url}/api/projects/{self.project_id}/next", headers=self.headers, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
def world(
    label_studio: LocalLabelStudio, ls_document_root: Path, trained_weights: Path, tmp_path: Path
) -> QueueWorld:
    return QueueWorld(label_studio, ls_document_root, trained_weights, tmp_path / "models")


def test_label_studio_serves_the_ranked_queue(world: QueueWorld) -> None:
    reports: list[RankProgress] = []

    summary = world.rank(progress=reports.append)

    unlabeled = world.task_ids[N_SEED_LABELED:]
    queue = list(summary.top_task_ids)
    assert summary.model_version == world.version == "v1"
    assert summary.strategy == "hybrid"
    assert (summary.n_tasks, summary.n_labeled, summary.n_ranked) == (12, 2, 10)
    assert (summary.n_failed, summary.n_predicted, summary.n_reused) == (0, 12, 0)
    assert (summary.created, summary.updated, summary.deleted) == (10, 0, 0)
    assert sorted(queue) == sorted(unlabeled)
    assert reports[-1].stage == "write" and reports[-1].done == reports[-1].total == 10
    assert [r.done for r in reports if r.stage == "predict"][-1] == 12

    # exactly one live prediction per unlabeled task, scores = queue position / n, clusters set
    live = world.live_predictions()
    for task_id in world.task_ids[:N_SEED_LABELED]:
        assert live.get(task_id, []) == []
    for position, task_id in enumerate(queue):
        (prediction,) = live[task_id]
        assert prediction.score == pytest.approx(position / 10)
        assert isinstance(prediction.cluster, int)
        stored = precomputed_prediction(world.settings.model_dir, world.project_id, task_id, "v1")
        assert stored == {
            "result": prediction.result,
            "score": prediction.score,
            "model_version": "v1",
        }
    assert any(prediction.result for (prediction,) in (live[t] for t in queue))

    project = world.sdk.projects.get(id=world.project_id)
    assert project.model_version == "v1"
    assert project.sampling == UNCERTAINTY_SAMPLING

    # the label stream: the top task first, then the second once the first is labeled
    first = world.next_task()
    assert first["id"] == queue[0]
    assert "Active learning" in first["queue"]
    view = queue_view(world)
    assert view.id == summary.view_id
    assert view.data["ordering"] == ["tasks:predictions_score"]
    assert listed_in_view(world, view.id) == queue
    world.annotate(queue[0])
    second = world.next_task()
    assert second["id"] == queue[1]
    assert "Active learning" in second["queue"]

    # the Data Manager tab lists the unlabeled tasks in queue order, and "Label Tasks As
    # Displayed" (the next_task action with the tab's ordering and filters) follows it
    assert listed_in_view(world, view.id) == queue[1:]
    displayed = requests.post(
        f"{world.ls.url}/api/dm/actions",
        params={"id": "next_task", "project": world.project_id},
        json={"ordering": view.data["ordering"], "filters": view.data["filters"]},
        headers=world.headers,
        timeout=30,
    )
    assert displayed.status_code == 200, displayed.text
    assert (displayed.json()["id"], displayed.json()["queue"]) == (queue[1], "Data manager queue")


def queue_view(world: QueueWorld) -> Any:
    (view,) = [
        v
        for v in world.sdk.views.list(project=world.project_id)
        if (v.data or {}).get("title") == QUEUE_VIEW_TITLE
    ]
    return view


def listed_in_view(world: QueueWorld, view_id: int) -> list[int]:
    """Task ids as the Data Manager tab lists them."""
    answer = requests.get(
        f"{world.ls.url}/api/tasks",
        params={"project": world.project_id, "view": view_id, "page_size": 100},
        headers=world.headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return [int(t["id"]) for t in answer.json()["tasks"]]


def test_reranking_supersedes_instead_of_duplicating(world: QueueWorld) -> None:
    unlabeled = world.task_ids[N_SEED_LABELED:]
    old, dup = unlabeled[0], unlabeled[1]
    # another model version's prediction with a tempting score and cluster, and a copy of the
    # live version without a cluster (what Label Studio stores from /predict)
    world.sdk.predictions.create(task=old, result=[], score=-1.0, cluster=3, model_version="v0")
    world.sdk.predictions.create(task=dup, result=[], score=0.99, model_version="v1")

    def cancel(report: RankProgress) -> None:
        raise RankingCancelled(f"stopped at {report.stage} {report.done}/{report.total}")

    with pytest.raises(RankingCancelled, match="predict 12/12"):
        world.rank(progress=cancel)
    assert sum(len(p) for p in world.live_predictions().values()) == 1  # nothing written yet

    first = world.rank()

    assert (first.n_predicted, first.n_reused) == (0, 12)  # the cancelled run's detections
    assert (first.created, first.updated, first.deleted) == (9, 1, 0)
    live = world.live_predictions()
    assert all(len(live[t]) == 1 for t in unlabeled)
    assert all(live[t][0].cluster > 3 for t in unlabeled)  # above every older cluster id
    (foreign,) = [p for p in world.predictions()[old] if p.model_version == "v0"]
    assert (foreign.score, foreign.cluster) == (-1.0, 3)
    assert world.next_task()["id"] == first.top_task_ids[0]
    ids_before = {t: live[t][0].id for t in unlabeled}

    again = world.rank()

    assert (again.n_predicted, again.n_reused) == (0, 12)
    assert (again.created, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 10)
    assert again.top_task_ids == first.top_task_ids
    assert {t: p[0].id for t, p in world.live_predictions().items() if t in ids_before} == (
        ids_before
    )

    top = first.top_task_ids[0]
    world.annotate(top)
    after = world.rank()

    assert (after.n_labeled, after.n_ranked, after.n_predicted) == (3, 9, 0)
    assert (after.created, after.deleted) == (0, 0)
    live = world.live_predictions()
    assert all(len(live[t]) == 1 for t in unlabeled)  # the labeled top keeps its one
    assert top not in after.top_task_ids
    assert world.next_task()["id"] == after.top_task_ids[0]
    ranking = load_ranking(world.settings.model_dir, world.project_id, "v1")
    assert ranking is not None and sorted(ranking["tasks"]) == sorted(
        str(t) for t in after.top_task_ids
    )


def test_without_clusters_the_queue_is_bulk_imported(world: QueueWorld) -> None:
    summary = world.rank(clusters=False)

    queue = list(summary.top_task_ids)
    assert (summary.n_ranked, summary.created, summary.updated) == (10, 10, 0)
    live = world.live_predictions()
    assert all(len(live[t]) == 1 and live[t][0].cluster is None for t in queue)
    assert [live[t][0].score for t in queue] == pytest.approx([i / 10 for i in range(10)])
    assert world.next_task()["id"] == queue[0]
    world.annotate(queue[0])
    assert world.next_task()["id"] == queue[1]

    with_clusters = world.rank()  # the same predictions gain cluster ids

    assert (with_clusters.created, with_clusters.deleted) == (0, 0)
    assert with_clusters.updated == 9
    live = world.live_predictions()
    assert all(len(live[t]) == 1 and live[t][0].cluster is not None for t in queue[1:])
    # Label Studio hands an annotator back the task they were served and hold a lock on
    # (queue[1], above) before anything else; once it is labeled, the new queue serves.
    assert world.next_task()["id"] == queue[1]
    world.annotate(queue[1])
    assert world.next_task()["id"] == next(t for t in with_clusters.top_task_ids if t != queue[1])
