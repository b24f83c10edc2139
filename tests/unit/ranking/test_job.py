"""`rank_project` and `rank_as_configured` end to end against an in-memory Label Studio, a
scripted detector and fake images: what the stages pass on, which queue versions are written,
switched to and removed (also after a crash), what is reused, and the guards that run before
any work.

The same against a real Label Studio: tests/e2e/test_queue.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.audit import split_key
from backend.config import Settings
from backend.errors import ImageError
from backend.labelstudio.images import LoadedImage
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.predictions import (
    PAGE_SIZE,
    UNCERTAINTY_SAMPLING,
    LabelStudioApiError,
    ProjectNotFound,
    queue_view_data,
)
from backend.layout import ModelDir
from backend.models.detector import Box, ImageDetections, ModelSource
from backend.project_params import save_project_params
from backend.ranking.errors import RankingBusy, RankingCancelled, RankingConfigError
from backend.ranking.job import (
    RankSummary,
    parse_task,
    primary_controls,
    rank_as_configured,
    rank_project,
    ranking_lock,
)
from backend.ranking.progress import RankProgress
from backend.ranking.queue_config import QueueConfig
from backend.ranking.store import load_ranking, precomputed_prediction
from backend.services import Services
from tests.conftest import BOX_CONFIG

NAMES = ("square", "circle", "triangle")
PROJECT = 9
# image -> (class id, confidence) of its one box; least confidence = 1 - confidence
BOXES = {"a.jpg": (0, 0.9), "b.jpg": (0, 0.9), "c.jpg": (1, 0.55), "d.jpg": (2, 0.7)}
BOXES["e.jpg"] = (0, 0.8)
LEAST_CONFIDENT = QueueConfig("least_confidence", {"n_clusters": 1}, batch_size=2)


# ------------------------------------------------------------------------------- the fakes
class FakeLabelStudio:
    """The Label Studio calls the ranking makes, over tasks and predictions held in memory,
    with Label Studio's semantics for model versions (listed with counts, the project's own
    listed with 0, deleted whole)."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = {t["id"]: t for t in tasks}
        self.project = SimpleNamespace(
            id=PROJECT, label_config=BOX_CONFIG, model_version="", sampling="Sequential sampling"
        )
        self.views: list[SimpleNamespace] = []
        self.calls: list[tuple[Any, ...]] = []
        self.after_switch: list[Any] = []  # called after a project update
        self._next_id = 1000
        self._lock = threading.Lock()
        self.sdk = SimpleNamespace(
            projects=SimpleNamespace(
                get=self.get_project,
                update=self.update_project,
                import_predictions=self.import_predictions,
            ),
            tasks=SimpleNamespace(list=self.list_tasks),
            predictions=SimpleNamespace(update=self.update),
            views=SimpleNamespace(list=self.list_views, create=self.create_view),
        )

    def writes(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] not in ("list", "versions")]

    def live(self, version: str) -> dict[int, list[dict[str, Any]]]:
        return {
            t["id"]: [p for p in t["predictions"] if p["model_version"] == version]
            for t in self.tasks.values()
        }

    def versions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tasks.values():
            for p in t["predictions"]:
                counts[p["model_version"]] = counts.get(p["model_version"], 0) + 1
        if self.project.model_version:
            counts.setdefault(self.project.model_version, 0)
        return counts

    def get_project(self, *, id: int) -> Any:
        if id != PROJECT:
            raise ApiError(status_code=404, body={"detail": "Not found."})
        return SimpleNamespace(**vars(self.project))

    def update_project(self, *, id: int, **changes: Any) -> None:
        self.calls.append(("project", id, tuple(sorted(changes.items()))))
        for key, value in changes.items():
            setattr(self.project, key, value)
        for hook in self.after_switch:
            hook()

    def api(self, method: str, path: str, *, json: Any = None, timeout: Any = None) -> Any:
        assert path == f"api/projects/{PROJECT}/model-versions"
        if method == "GET":
            self.calls.append(("versions",))
            return self.versions()
        assert method == "DELETE" and timeout > 0
        version = json["model_version"]
        assert version != self.project.model_version  # LS would clear the project's version
        self.calls.append(("delete", version))
        gone = 0
        for t in self.tasks.values():
            kept = [p for p in t["predictions"] if p["model_version"] != version]
            gone += len(t["predictions"]) - len(kept)
            t["predictions"] = kept
        return {"deleted_predictions": gone}

    def list_tasks(self, **params: Any) -> list[dict[str, Any]]:
        assert params["project"] == PROJECT and params["page_size"] == PAGE_SIZE
        if "query" not in params:
            assert (params["fields"], params["include"]) == ("all", "id,data,total_annotations")
            self.calls.append(("list",))
            return [{k: v for k, v in t.items() if k != "predictions"} for t in self.tasks.values()]
        version, counter = json.loads(params["query"])["filters"]["items"]
        field = counter["filter"].removeprefix("filter:tasks:")
        return [
            {"id": t["id"], "predictions": [dict(p) for p in t["predictions"]]}
            for t in self.tasks.values()
            if t.get(field, 0) > 0
            and any(version["value"][0] in p["model_version"] for p in t["predictions"])
        ]

    def import_predictions(
        self, *, id: int, request: list[dict[str, Any]], request_options: Any
    ) -> None:
        assert request_options["max_retries"] == 0 and request_options["timeout"] > 60
        self.calls.append(("import", id, tuple((i["task"], i["score"]) for i in request)))
        for item in request:
            assert set(item) == {"task", "result", "score", "model_version"}
            self._add(item["task"], item)

    def update(self, prediction_id: int, **fields: Any) -> None:
        self.calls.append(("keep", prediction_id, tuple(sorted(fields.items()))))
        self._find(prediction_id).update(fields)

    def list_views(self, *, project: int) -> list[SimpleNamespace]:
        return list(self.views)

    def create_view(self, *, project: int, data: dict[str, Any]) -> SimpleNamespace:
        self.calls.append(("view", project))
        view = SimpleNamespace(id=77, data=data)
        self.views.append(view)
        return view

    def _add(self, task: int, fields: dict[str, Any]) -> None:
        with self._lock:
            self._next_id += 1
            prediction = {
                "id": self._next_id,
                "model_version": fields["model_version"],
                "score": fields["score"],
                "result": fields["result"],
            }
            self.tasks[task]["predictions"].append(prediction)

    def _find(self, prediction_id: int) -> dict[str, Any]:
        for task in self.tasks.values():
            for prediction in task["predictions"]:
                if prediction["id"] == prediction_id:
                    return prediction
        raise AssertionError(f"no prediction {prediction_id}")


class FakeImages:
    """Each known image decodes to pixels whose first value names it; others fail."""

    def load(self, ref: object) -> LoadedImage:
        if ref not in BOXES:
            raise ImageError(f"cannot read {ref}")
        code = sorted(BOXES).index(str(ref))
        return LoadedImage(np.full((2, 2, 3), code, dtype=np.uint8), 200, 100)


class FakeDetector:
    version = "v1"
    names = NAMES
    source = ModelSource("v1", None, kind="registry")  # no calibrated threshold

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, pixels: list[np.ndarray]) -> list[ImageDetections]:
        found = []
        for image in pixels:
            name = sorted(BOXES)[int(image[0, 0, 0])]
            self.seen.append(name)
            class_id, conf = BOXES[name]
            scores = np.zeros(len(NAMES), dtype=np.float32)
            scores[class_id] = conf
            embedding = np.eye(8, dtype=np.float32)[sorted(BOXES).index(name)]
            box = Box(10.0, 20.0, 50.0, 60.0, class_id, conf, scores)
            found.append(ImageDetections(boxes=(box,), embedding=embedding))
        return found


class FakeDetectors:
    def __init__(self) -> None:
        self.detector = FakeDetector()

    def source_for(self, project: int, labels: Any, model_path: Any) -> str:
        assert project == PROJECT and model_path is None
        return "live"

    def get(self, source: str) -> FakeDetector:
        return self.detector


def task(task_id: int, image: str, labeled: bool = False, *predictions: Any) -> dict[str, Any]:
    keys = ("id", "model_version", "score", "result")
    return {
        "id": task_id,
        "data": {"image": image},
        "total_annotations": int(labeled),
        "cancelled_annotations": 0,
        "predictions": [dict(zip(keys, p, strict=True)) for p in predictions],
    }


def project_tasks() -> list[dict[str, Any]]:
    return [
        task(1, "a.jpg", True),  # labeled: embeddings only
        task(2, "b.jpg"),
        task(3, "c.jpg"),
        task(4, "d.jpg"),
        task(5, "missing.jpg", False, (500, "v1", 0.0, [])),  # from /predict, image gone since
        task(6, "e.jpg", False, (600, "v0", -1.0, []), (601, "v1", 0.9, [])),
    ]


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(model_dir=tmp_path)
        self.ls = FakeLabelStudio(project_tasks())
        self.detectors = FakeDetectors()
        live = SimpleNamespace(version="v1", meta={})
        self.registry = SimpleNamespace(live=lambda project_id: live)
        self.services = Services(
            settings=self.settings,
            events=None,  # type: ignore[arg-type]
            ledger=None,  # type: ignore[arg-type]
            registry=self.registry,  # type: ignore[arg-type]
            label_studio=self.ls,  # type: ignore[arg-type]
            images=FakeImages(),  # type: ignore[arg-type]
            detectors=self.detectors,  # type: ignore[arg-type]
        )

    def rank(self, queue: QueueConfig = LEAST_CONFIDENT, **kwargs: Any) -> RankSummary:
        return rank_project(
            settings=self.settings,
            detectors=self.detectors,  # type: ignore[arg-type]
            images=FakeImages(),  # type: ignore[arg-type]
            label_studio=self.ls,  # type: ignore[arg-type]
            registry=self.registry,  # type: ignore[arg-type]
            project_id=PROJECT,
            queue=queue,
            **kwargs,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# ------------------------------------------------------------------------------- rankings
SWITCH = ("model_version", "v1.q1"), ("sampling", UNCERTAINTY_SAMPLING)


def test_a_ranking_imports_its_queue_version_switches_to_it_and_stores_it(world: World) -> None:
    reports: list[RankProgress] = []

    summary = world.rank(progress=reports.append)

    # least confidence: c (0.45), d (0.30), e (0.20), b (0.10)
    assert summary.top_task_ids == (3, 4)
    assert (summary.n_tasks, summary.n_labeled, summary.n_ranked, summary.n_failed) == (6, 1, 4, 1)
    assert (summary.n_predicted, summary.n_reused) == (5, 0)
    assert (summary.queue_version, summary.imported) == ("v1.q1", 4)
    assert (summary.removed_versions, summary.removed, summary.kept) == ((), 0, 0)
    assert (summary.model_version, summary.strategy, summary.view_id) == (
        "v1",
        "least_confidence",
        77,
    )
    assert list(summary.timings) == [
        *("fetch", "predict", "encode", "select", "write", "switch", "views", "remove", "total")
    ]
    assert summary.ranking_path == ModelDir(world.settings.model_dir).project(9).ranking / "v1.json"
    assert sorted(world.detectors.detector.seen) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    # in queue order, then one switch; the /predict predictions of v0 and v1 stay
    assert world.ls.writes() == [
        ("import", 9, ((3, 0.0), (4, 0.25), (6, 0.5), (2, 0.75))),
        ("project", 9, SWITCH),
        ("view", 9),
    ]
    assert world.ls.views[0].data == queue_view_data()
    assert [(r.stage, r.done, r.total) for r in reports] == [("predict", 6, 6), ("write", 4, 4)]
    assert world.ls.versions() == {"v0": 1, "v1": 2, "v1.q1": 4}

    live = world.ls.live("v1.q1")
    assert {t: [p["score"] for p in ps] for t, ps in live.items()} == {
        1: [],
        2: [0.75],
        3: [0.0],
        4: [0.25],
        5: [],
        6: [0.5],
    }
    stored = load_ranking(world.settings.model_dir, PROJECT, "v1")
    assert stored is not None
    assert (stored["project_id"], stored["strategy"], stored["n_ranked"]) == (
        9,
        "least_confidence",
        4,
    )
    assert (stored["model_version"], stored["queue_version"]) == ("v1", "v1.q1")
    assert list(stored["tasks"]) == ["2", "3", "4", "6"]
    assert {k: (e["rank"], e["strategy_rank"], e["ref"]) for k, e in stored["tasks"].items()} == {
        "2": (3, 3, "b.jpg"),
        "3": (0, 0, "c.jpg"),
        "4": (1, 1, "d.jpg"),
        "6": (2, 2, "e.jpg"),
    }
    (region,) = live[3][0]["result"]
    assert region["value"]["rectanglelabels"] == ["Circle"] and region["score"] == 0.55
    assert precomputed_prediction(world.settings.model_dir, PROJECT, 3, "v1") == {
        "result": live[3][0]["result"],
        "score": 0.0,
        "model_version": "v1.q1",  # what Label Studio's project serves
    }
    assert stored["tasks"]["3"]["result"] == [region]
    assert (region["from_name"], region["to_name"]) == ("label", "image")


def test_each_ranking_removes_the_version_before_last_keeping_annotated_tasks(
    world: World,
) -> None:
    first = world.rank()
    world.ls.calls.clear()
    world.detectors.detector.seen.clear()

    again = world.rank()

    assert (again.n_predicted, again.n_reused, again.n_failed) == (0, 5, 1)
    assert again.top_task_ids == first.top_task_ids
    assert world.detectors.detector.seen == []
    # v1.q1 stays one ranking longer: an annotator may have one of its tasks open
    assert (again.queue_version, again.removed_versions) == ("v1.q2", ())
    assert world.ls.versions() == {"v0": 1, "v1": 2, "v1.q1": 4, "v1.q2": 4}
    assert world.ls.project.model_version == "v1.q2"
    assert world.ls.writes()[1] == ("project", 9, (("model_version", "v1.q2"),))
    # an annotator labels task 3 from its v1.q1 prediction, another skips task 4
    shown = {t: p["id"] for t in (3, 4) for p in world.ls.live("v1.q1")[t]}
    world.ls.tasks[3]["total_annotations"] = 1
    world.ls.tasks[4]["cancelled_annotations"] = 1
    world.ls.calls.clear()

    third = world.rank()

    assert (third.queue_version, third.removed_versions) == ("v1.q3", ("v1.q1",))
    assert (third.removed, third.kept) == (2, 2)
    assert third.top_task_ids == (4, 6)  # a skipped task is still unlabeled
    # moved first, then the version deleted in one call
    assert sorted(c for c in world.ls.writes() if c[0] == "keep") == sorted(
        ("keep", i, (("model_version", "v1"),)) for i in shown.values()
    )
    assert world.ls.writes()[-1] == ("delete", "v1.q1")
    # the annotated tasks' predictions survive, same ids, under their detector's version
    for task_id, prediction_id in shown.items():
        assert prediction_id in [p["id"] for p in world.ls.live("v1")[task_id]]
    assert world.ls.versions() == {"v0": 1, "v1": 4, "v1.q2": 4, "v1.q3": 3}


def test_a_crash_before_the_switch_leaves_the_old_queue_served_and_the_next_run_cleans_up(
    world: World,
) -> None:
    world.rank()

    def crash(report: RankProgress) -> None:
        if report.stage == "write" and report.done == report.total:
            raise RankingCancelled("stopped after the import")

    with pytest.raises(RankingCancelled):
        world.rank(progress=crash)

    # fully imported, never switched to: the project still serves v1.q1
    assert world.ls.project.model_version == "v1.q1"
    assert world.ls.versions() == {"v0": 1, "v1": 2, "v1.q1": 4, "v1.q2": 4}
    stored = load_ranking(world.settings.model_dir, PROJECT, "v1")
    assert stored is not None and stored["queue_version"] == "v1.q1"

    after = world.rank()

    # above the orphan; the orphan goes, the queue served until now stays one more ranking
    assert (after.queue_version, after.removed_versions) == ("v1.q3", ("v1.q2",))
    assert world.ls.versions() == {"v0": 1, "v1": 2, "v1.q1": 4, "v1.q3": 4}


def test_nothing_is_removed_when_the_project_was_switched_meanwhile(world: World) -> None:
    world.rank()
    world.rank()
    world.ls.after_switch.append(lambda: setattr(world.ls.project, "model_version", "by-hand"))

    summary = world.rank()

    assert summary.removed_versions == ()
    assert {"v1.q1", "v1.q2", "v1.q3"} <= set(world.ls.versions())


def test_flip_consistency_detects_mirrors_once_and_reorders(world: World) -> None:
    world.rank()  # detections cached without flip disagreement
    world.detectors.detector.seen.clear()
    # The fake finds the same box on an image and on its mirror, so mirrored back it lies
    # elsewhere: every image disagrees by its box's confidence, and with the full flip
    # weight the most confident images come first (least confidence alone puts them last).
    flip = QueueConfig("least_confidence", {"n_clusters": 1, "flip": 1.0}, 2, flip_pass=True)

    summary = world.rank(flip)

    assert summary.top_task_ids == (2, 6)  # b (0.9), e (0.8)
    # the ranked tasks' cached records lacked the figure; the labeled one's is reused as is
    assert (summary.n_predicted, summary.n_reused) == (4, 1)
    assert sorted(world.detectors.detector.seen) == sorted(2 * ["b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    world.detectors.detector.seen.clear()
    assert world.rank(flip).n_reused == 5 and world.detectors.detector.seen == []


def test_a_cancelled_ranking_writes_nothing_and_keeps_its_detections(world: World) -> None:
    def cancel(report: RankProgress) -> None:
        raise RankingCancelled(f"stopped at {report.stage} {report.done}/{report.total}")

    with pytest.raises(RankingCancelled, match="predict 6/6"):
        world.rank(progress=cancel)
    assert world.ls.writes() == []
    assert load_ranking(world.settings.model_dir, PROJECT, "v1") is None

    after = world.rank()

    assert (after.n_predicted, after.n_reused) == (0, 5)


def test_rank_as_configured_reads_the_projects_queue_settings(world: World) -> None:
    save_project_params(
        world.settings.paths,
        PROJECT,
        {"al_strategy": "least_confidence", "al_batch_size": 3, "al_audit": False},
    )

    summary = rank_as_configured(world.services, PROJECT)
    narrower = rank_as_configured(world.services, PROJECT, overrides={"al_batch_size": 1})
    audited = rank_as_configured(world.services, PROJECT, overrides={"al_audit": True})

    assert summary.strategy == "least_confidence" and summary.top_task_ids[0] == 3
    assert len(summary.top_task_ids) == 3
    assert narrower.top_task_ids == summary.top_task_ids[:1]
    # Task 3's id hash puts it in the 20% audit slice: the strategy does not rank it, and in
    # a queue of four, too short for an audit place (every fifth), it comes last.
    assert split_key(3) < 0.2 and summary.n_ranked == 4
    assert audited.top_task_ids == (4, 6, 2) == summary.top_task_ids[1:] + (2,)
    with pytest.raises(ProjectNotFound, match="no project 8"):
        rank_as_configured(world.services, 8)


# ---------------------------------------------------------------------------- the stages
def test_parse_task_keeps_what_the_ranking_needs() -> None:
    parsed = parse_task(task(7, "x.jpg", True), "image")

    assert (parsed.id, parsed.ref, parsed.labeled, parsed.data) == (
        7,
        "x.jpg",
        True,
        {"image": "x.jpg"},
    )
    unlabeled = parse_task({"id": 8, "data": {"other": "y.jpg"}}, "image")
    assert (unlabeled.ref, unlabeled.labeled) == (None, False)


def test_primary_controls_share_the_first_image_field() -> None:
    config = parse_label_config(
        '<View><Image name="a" value="$front"/><Image name="b" value="$back"/>'
        '<RectangleLabels name="one" toName="a"><Label value="Square"/></RectangleLabels>'
        '<RectangleLabels name="two" toName="b"><Label value="Square"/></RectangleLabels>'
        '<RectangleLabels name="three" toName="a"><Label value="Circle"/></RectangleLabels>'
        "</View>"
    )
    assert [c.from_name for c in primary_controls(config, 1)] == ["one", "three"]


# ---------------------------------------------------------------------------- the guards
def fake_services(tmp_path: Path, sdk: Any = None) -> dict[str, Any]:
    return {
        "settings": Settings(model_dir=tmp_path),
        "detectors": None,
        "images": None,
        "label_studio": SimpleNamespace(sdk=sdk),
        "registry": None,
    }


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        (QueueConfig(strategy="nope"), "valid names"),
        (QueueConfig(params={"lam": 3.0}), "lam"),
        (QueueConfig(params={"bogus": 1}), "bogus"),
        (QueueConfig(batch_size=0), "batch_size"),
    ],
)
def test_rank_project_rejects_bad_requests_before_any_work(
    tmp_path: Path, queue: QueueConfig, message: str
) -> None:
    with pytest.raises(RankingConfigError, match=message):
        rank_project(**fake_services(tmp_path), project_id=1, queue=queue)
    assert not (tmp_path / "projects").exists()


def test_one_ranking_per_project_at_a_time(tmp_path: Path) -> None:
    with ranking_lock(ModelDir(tmp_path), 1):
        with pytest.raises(RankingBusy, match="project 1 is already being ranked"):
            rank_project(**fake_services(tmp_path), project_id=1, queue=QueueConfig())
        with pytest.raises(RankingBusy):
            with ranking_lock(ModelDir(tmp_path), 1):
                pass
        with ranking_lock(ModelDir(tmp_path), 2):  # other projects are free
            pass
    with ranking_lock(ModelDir(tmp_path), 1):  # released
        pass


def test_label_studio_errors_become_clear_errors(tmp_path: Path) -> None:
    def missing(**_: Any) -> None:
        raise ApiError(status_code=404, headers={"set-cookie": "secret"}, body={"detail": "nope"})

    def broken(**_: Any) -> None:
        raise ApiError(status_code=500, headers={"set-cookie": "secret"}, body="boom")

    for get, error in ((missing, ProjectNotFound), (broken, LabelStudioApiError)):
        sdk = SimpleNamespace(projects=SimpleNamespace(get=get))
        with pytest.raises(error) as caught:
            rank_project(**fake_services(tmp_path, sdk), project_id=9, queue=QueueConfig())
        assert "secret" not in str(caught.value)
    assert "HTTP 500: boom" in str(caught.value)
