"""The active-learning queue against a real Label Studio 1.23: what `rank_project` writes and
what Label Studio then serves (`/next`, the Data Manager tab, the editor), how a re-ranking
switches to a new queue version and removes old ones without losing an annotation's
prediction, and that a crash before the switch leaves the old queue served."""

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
from devkit.demo import retrieve_predictions
from devkit.local_label_studio import LocalLabelStudio
from tests.conftest import BOX_CONFIG

from .conftest import BackendFactory

N_IMAGES = 12
N_SEED_LABELED = 2
AP50 = {"square": 0.9, "circle": 0.6, "triangle": 0.75}


class QueueWorld:
    """One project in the session's Label Studio plus the backend services that rank it."""

    def __init__(
        self,
        ls: LocalLabelStudio,
        document_root: Path,
        weights: Path,
        model_dir: Path,
        *,
        promote: bool = True,
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
        self.client = LabelStudioClient(ls.url, ls.legacy_token)
        self.detectors = DetectorPool(self.settings, self.registry)
        if promote:
            version = self.registry.create_version(
                self.project_id, weights, {"metrics": {"per_class_ap50": AP50}}
            )
            self.registry.promote(self.project_id, version.version, reason="e2e")
        self.version = self.detectors.source_for(self.project_id, (), None).version
        self.images = ImageLoader(self.settings, self.client)
        self.sdk = ls.client()
        for task_id in self.task_ids[:N_SEED_LABELED]:
            self.annotate(task_id)

    def rank(self, queue_length: int = 0, **kwargs: Any) -> RankSummary:
        return rank_project(
            settings=self.settings,
            detectors=self.detectors,
            images=self.images,
            label_studio=self.client,
            registry=self.registry,
            project_id=self.project_id,
            queue=QueueConfig(batch_size=N_IMAGES, queue_length=queue_length),
            **kwargs,
        )

    def annotate(self, task_id: int, parent_prediction: int | None = None) -> int:
        region = {
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 320,
            "original_height": 256,
            "value": {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["Square"]},
        }
        body: dict[str, Any] = {"result": [region], "was_cancelled": False}
        if parent_prediction is not None:  # started from the pre-annotation, as in the editor
            body["parent_prediction"] = parent_prediction
        answer = requests.post(
            f"{self.ls.url}/api/tasks/{task_id}/annotations/",
            json=body,
            headers=self.headers,
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def predictions(self) -> dict[int, list[Any]]:
        """Every prediction of the project, by task id."""
        by_task: dict[int, list[Any]] = defaultdict(list)
        for prediction in self.sdk.predictions.list(project=self.project_id):
            by_task[int(prediction.task)].append(prediction)
        return by_task

    def of_version(self, version: str) -> dict[int, list[Any]]:
        """The predictions of one model version, by task id (every task listed)."""
        found = self.predictions()
        return {
            task: [p for p in found.get(task, []) if p.model_version == version]
            for task in self.task_ids
        }

    def model_versions(self) -> dict[str, int]:
        answer = requests.get(
            f"{self.ls.url}/api/projects/{self.project_id}/model-versions",
            headers=self.headers,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

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
    assert (summary.queue_version, summary.imported, summary.removed_versions) == ("v1.q1", 10, ())
    assert summary.strategy == "hybrid"
    assert (summary.n_tasks, summary.n_labeled, summary.n_ranked) == (12, 2, 10)
    assert (summary.n_failed, summary.n_predicted, summary.n_reused) == (0, 12, 0)
    assert sorted(queue) == sorted(unlabeled)
    assert reports[-1].stage == "write" and reports[-1].done == reports[-1].total == 10
    assert [r.done for r in reports if r.stage == "predict"][-1] == 12
    assert world.model_versions() == {"v1.q1": 10}

    # exactly one prediction of the queue version per unlabeled task, scores = position / n
    live = world.of_version("v1.q1")
    for task_id in world.task_ids[:N_SEED_LABELED]:
        assert live[task_id] == []
    for position, task_id in enumerate(queue):
        (prediction,) = live[task_id]
        assert prediction.score == pytest.approx(position / 10)
        assert prediction.cluster is None
        stored = precomputed_prediction(world.settings.model_dir, world.project_id, task_id, "v1")
        assert stored == {
            "result": prediction.result,
            "score": prediction.score,
            "model_version": "v1.q1",
        }
    assert any(prediction.result for (prediction,) in (live[t] for t in queue))

    project = world.sdk.projects.get(id=world.project_id)
    assert project.model_version == "v1.q1"
    assert project.sampling == UNCERTAINTY_SAMPLING

    # the label stream: the top task first, with its pre-annotation, then the second once the
    # first is labeled
    first = world.next_task()
    assert first["id"] == queue[0]
    assert "Active learning" in first["queue"]
    assert [p["id"] for p in first["predictions"]] == [live[queue[0]][0].id]
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


def test_with_a_queue_length_label_studio_holds_the_head_and_the_backend_answers_the_rest(
    world: QueueWorld,
) -> None:
    summary = world.rank(queue_length=4)

    ranking = load_ranking(world.settings.model_dir, world.project_id, "v1")
    assert ranking is not None and (ranking["written"], ranking["n_ranked"]) == (4, 10)
    queue = sorted(ranking["tasks"], key=lambda t: ranking["tasks"][t]["rank"])
    queue = [int(t) for t in queue]
    head, rest = queue[:4], queue[4:]
    assert summary.imported == 4 and world.model_versions() == {"v1.q1": 4}
    assert {t for t, found in world.of_version("v1.q1").items() if found} == set(head)
    assert world.next_task()["id"] == head[0]
    # the tab lists the head in order, then the tasks without a queue prediction
    listed = listed_in_view(world, summary.view_id or 0)
    assert listed[:4] == head and sorted(listed[4:]) == sorted(rest)
    # a task past the head is answered from the stored ranking, under the queue version
    answer = precomputed_prediction(world.settings.model_dir, world.project_id, rest[0], "v1")
    assert answer is not None and answer["model_version"] == "v1.q1"
    assert answer["score"] == pytest.approx(4 / 10)


def test_reranking_switches_to_a_new_version_and_removes_old_ones_keeping_annotated(
    world: QueueWorld,
) -> None:
    other = world.task_ids[N_SEED_LABELED]
    # another version's prediction with a tempting score: never touched, never served
    world.sdk.predictions.create(task=other, result=[], score=-1.0, model_version="v0")
    first = world.rank()
    top = first.top_task_ids[0]
    (shown,) = world.of_version("v1.q1")[top]
    annotation = world.annotate(top, parent_prediction=shown.id)

    second = world.rank()

    # a new version, switched to; the one served until now stays for tasks still open
    assert (second.queue_version, second.removed_versions) == ("v1.q2", ())
    assert (second.n_predicted, second.n_reused, second.n_ranked) == (0, 12, 9)
    assert world.model_versions() == {"v1.q2": 9, "v1.q1": 10, "v0": 1}
    assert world.sdk.projects.get(id=world.project_id).model_version == "v1.q2"
    assert world.next_task()["id"] == second.top_task_ids[0]
    assert precomputed_prediction(world.settings.model_dir, world.project_id, other, "v1") == {
        "result": world.of_version("v1.q2")[other][0].result,
        "score": world.of_version("v1.q2")[other][0].score,
        "model_version": "v1.q2",
    }

    third = world.rank()

    # v1.q1 is removed in one call, but the annotated task's prediction is kept, same id,
    # under its detector's version, and the annotation still points at it
    assert (third.queue_version, third.removed_versions) == ("v1.q3", ("v1.q1",))
    assert (third.removed, third.kept) == (9, 1)
    assert world.model_versions() == {"v1.q3": 9, "v1.q2": 9, "v1": 1, "v0": 1}
    (kept,) = world.of_version("v1")[top]
    assert (kept.id, kept.result, kept.score) == (shown.id, shown.result, shown.score)
    parent = world.sdk.annotations.get(id=annotation).parent_prediction
    assert parent == shown.id
    (foreign,) = [p for p in world.predictions()[other] if p.model_version == "v0"]
    assert foreign.score == -1.0
    # Label Studio serves the new queue, though tasks still hold the older version's
    assert world.next_task()["id"] == third.top_task_ids[0]
    ranking = load_ranking(world.settings.model_dir, world.project_id, "v1")
    assert ranking is not None and ranking["queue_version"] == "v1.q3"
    assert sorted(ranking["tasks"]) == sorted(str(t) for t in third.top_task_ids)


def test_a_crash_before_the_switch_leaves_the_old_queue_served_and_the_next_run_cleans_up(
    world: QueueWorld,
) -> None:
    first = world.rank()

    def crash(report: RankProgress) -> None:
        if report.stage == "write" and report.done == report.total:
            raise RankingCancelled("crashed after the import, before the switch")

    with pytest.raises(RankingCancelled):
        world.rank(progress=crash)

    # the new version is wholly in Label Studio, but the project still serves the old one
    assert world.model_versions() == {"v1.q1": 10, "v1.q2": 10}
    assert world.sdk.projects.get(id=world.project_id).model_version == "v1.q1"
    served = world.next_task()
    assert served["id"] == first.top_task_ids[0]
    assert [p["model_version"] for p in served["predictions"]] == ["v1.q1"]
    ranking = load_ranking(world.settings.model_dir, world.project_id, "v1")
    assert ranking is not None and ranking["queue_version"] == "v1.q1"

    after = world.rank()

    # the orphan goes; the version served until this switch stays one ranking more
    assert (after.queue_version, after.removed_versions) == ("v1.q3", ("v1.q2",))
    assert world.model_versions() == {"v1.q3": 10, "v1.q1": 10}
    assert world.next_task()["id"] == first.top_task_ids[0]  # the task it holds a lock on


def test_after_the_switch_label_studio_shows_and_keeps_the_backends_answers(
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    trained_weights: Path,
    backend_factory: BackendFactory,
) -> None:
    """With the backend connected: /setup and /predict answer with the project's queue version,
    so a task opened in the editor shows its pre-annotation, and "Retrieve predictions" never
    duplicates the queue's."""
    backend = backend_factory.start(
        "queue", api_key=label_studio.legacy_token, document_root=ls_document_root
    )
    model_dir = Path(backend.settings["MODEL_DIR"])
    world = QueueWorld(label_studio, ls_document_root, trained_weights, model_dir, promote=False)
    label_studio.connect_ml_backend(world.project_id, backend.url)
    summary = world.rank()
    queue = f"{world.version}.q1"
    assert summary.queue_version == queue

    # the label stream shows the ranked prediction; LS does not ask the backend again
    top = world.next_task()
    (ranked,) = world.of_version(queue)[top["id"]]
    assert [(p["id"], p["model_version"]) for p in top["predictions"]] == [(ranked.id, queue)]
    # a task imported after the ranking: opening it asks /predict, and what comes back is
    # filed under the queue version, so the editor shows it (behind the ranked tasks)
    folder = ls_document_root / f"late-{uuid.uuid4().hex[:8]}"
    (late,) = label_studio.import_images(world.project_id, [write_images(folder, 1, 5)[0][0]])
    opened = requests.get(
        f"{label_studio.url}/api/tasks/{late}", headers=world.headers, timeout=120
    ).json()
    ((model_version, score),) = [(p["model_version"], p["score"]) for p in opened["predictions"]]
    assert model_version == queue and score >= 1.0

    retrieve_predictions(label_studio, world.project_id)
    retrieve_predictions(label_studio, world.project_id)

    counts = world.model_versions()
    # every task holds one prediction of the queue: the labeled ones got theirs from /predict
    assert counts[queue] == N_IMAGES + 1
    held = world.of_version(queue)
    assert all(len(held[t]) == 1 for t in world.task_ids)
    assert world.next_task()["id"] == top["id"]
