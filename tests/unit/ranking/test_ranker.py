"""The ranker's pure parts: queue order and scores, pool building, write plans, stored rankings.

Label Studio itself is exercised in tests/e2e/test_queue.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.config import Settings
from backend.labelstudio.images import LoadedImage
from backend.labelstudio.label_config import parse_label_config
from backend.models.detector import Box, Detector, ImageDetections, ModelSource
from backend.ranking.job import (
    DesiredPrediction,
    DetectionCache,
    ExistingPrediction,
    ImageRecord,
    LabelStudioApiError,
    ProjectNotFound,
    RankingBusy,
    RankingConfigError,
    RankProgress,
    _project_lock,
    class_ap_vector,
    load_ranking,
    mapped_class_mask,
    plan_writes,
    pool_box_scores,
    precomputed_prediction,
    queue_order,
    queue_scores,
    rank_project,
    ranking_dir,
    ranking_path,
    save_ranking,
)
from devkit.datagen import write_images
from strategies import Pool, get_strategy
from tests.conftest import BOX_CONFIG

NAMES = ("square", "circle", "triangle")


def record(classes: list[int], conf: list[float], ref: str = "a.jpg") -> ImageRecord:
    """A record with one box per class id; box i's score vector puts conf[i] on its class."""
    k = len(classes)
    scores = np.zeros((k, len(NAMES)), dtype=np.float32)
    scores[np.arange(k), classes] = conf
    return ImageRecord(
        ref=ref,
        width=200,
        height=100,
        xyxy=np.array([[10.0 * i, 5.0, 10.0 * i + 8, 25.0] for i in range(k)], np.float32).reshape(
            -1, 4
        ),
        class_ids=np.array(classes, dtype=np.int64),
        conf=np.array(conf, dtype=np.float32),
        class_scores=scores,
    )


def served_by_label_studio(scores: np.ndarray, clusters: np.ndarray) -> list[int]:
    """What LS 1.23's uncertainty sampling serves one annotator labeling every task in turn:
    the lowest score among the tasks of the clusters they labeled least (next_task.py)."""
    left = set(range(len(scores)))
    solved: Counter[int] = Counter()
    served = []
    while left:
        best = min(left, key=lambda i: (solved[int(clusters[i])], scores[i]))
        served.append(best)
        solved[int(clusters[best])] += 1
        left.remove(best)
    return served


# ---------------------------------------------------------------------- queue order / scores
def test_queue_order_takes_the_best_of_each_cluster_first() -> None:
    order = np.array([0, 1, 2, 3, 4, 5])
    clusters = np.array([0, 0, 1, 1, 2, 0])
    assert queue_order(order, clusters).tolist() == [0, 2, 4, 1, 3, 5]


def test_queue_order_follows_the_strategy_order_not_the_index() -> None:
    order = np.array([3, 5, 0, 4, 1, 2])
    clusters = np.array([7, 7, 9, 7, 9, 7])  # by index
    # strategy order by cluster: 3(7) 5(7) 0(7) 4(9) 1(7) 2(9)
    assert queue_order(order, clusters).tolist() == [3, 4, 5, 2, 0, 1]


@pytest.mark.parametrize("clusters", [[0, 0, 0, 0, 0], [4, 3, 2, 1, 0]])
def test_one_cluster_or_all_distinct_keeps_the_strategy_order(clusters: list[int]) -> None:
    order = np.array([2, 4, 0, 1, 3])
    assert queue_order(order, np.array(clusters)).tolist() == [2, 4, 0, 1, 3]


def test_label_studio_serves_exactly_the_queue() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        order = rng.permutation(n)
        clusters = rng.integers(0, int(rng.integers(1, 6)), size=n)
        queue = queue_order(order, clusters)
        assert served_by_label_studio(queue_scores(queue), clusters) == queue.tolist()


def test_queue_scores_give_the_first_task_the_lowest_score() -> None:
    scores = queue_scores(np.array([2, 0, 3, 1]))
    assert scores.tolist() == [0.25, 0.75, 0.0, 0.5]
    assert queue_scores(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_queue_order_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="permutation"):
        queue_order(np.array([0, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="shape"):
        queue_order(np.array([0, 1]), np.array([1]))


# ------------------------------------------------------------------------- pool building
def test_pool_box_scores_keep_every_box_of_a_mapped_class() -> None:
    rec = record([0, 1, 2, 1], [0.9, 0.06, 0.3, 0.5])
    rows = pool_box_scores(rec, np.array([True, False, True]))
    np.testing.assert_array_equal(rows, rec.class_scores[[0, 2]])
    empty = pool_box_scores(record([], []), np.array([True, True, True]))
    assert empty.shape == (0, 3)


def test_mapped_class_mask_follows_the_label_config() -> None:
    config = parse_label_config(
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image">'
        '<Label value="Square"/><Label value="Round" predicted_values="circle"/>'
        "</RectangleLabels></View>"
    )
    mask = mapped_class_mask(("square", "circle", "triangle"), config.controls)
    assert mask.tolist() == [True, True, False]


def test_class_ap_vector_reads_per_class_ap50() -> None:
    meta = {"metrics": {"per_class_ap50": {"square": 0.5, "circle": 1.2, "triangle": "x"}}}
    values = class_ap_vector(meta, NAMES)
    assert values is not None
    assert values[0] == 0.5 and np.isnan(values[1]) and np.isnan(values[2])
    assert class_ap_vector({}, NAMES) is None
    assert class_ap_vector({"metrics": {"per_class_ap50": {"dog": 0.3}}}, NAMES) is None


def test_image_record_round_trips_boxes() -> None:
    box = Box(1.5, 2.0, 30.0, 40.0, 2, 0.8, np.array([0.1, 0.2, 0.8], dtype=np.float32))
    weak = Box(5.0, 6.0, 7.0, 8.0, 0, 0.06, np.array([0.06, 0.0, 0.01], dtype=np.float32))
    found = ImageDetections(boxes=(box, weak), embedding=np.ones(4, dtype=np.float32))
    image = LoadedImage(np.zeros((100, 200, 3), dtype=np.uint8), 200, 100)

    rec = ImageRecord.from_detections("x.jpg", image, found, 3)

    assert (rec.width, rec.height, rec.ref) == (200, 100, "x.jpg")
    assert rec.class_scores.shape == (2, 3)
    strong = rec.boxes(min_conf=0.25)
    assert len(strong) == 1
    assert (strong[0].x1, strong[0].y2, strong[0].class_id) == (1.5, 40.0, 2)
    assert strong[0].conf == pytest.approx(0.8)
    assert len(rec.boxes()) == 2
    nothing = ImageRecord.from_detections("y.jpg", image, ImageDetections((), found.embedding), 3)
    assert nothing.class_scores.shape == (0, 3) and nothing.boxes() == ()


def test_real_detections_build_a_pool_from_every_kept_box(
    trained_weights: Path, tmp_path: Path
) -> None:
    settings = Settings(model_dir=tmp_path, image_size=160, predict_batch=4)
    detector = Detector(ModelSource(version="t", weights=trained_weights), settings)
    samples = write_images(tmp_path / "images", 6, seed=9)
    pixels = [np.asarray(s.image)[:, :, ::-1].copy() for _, s in samples]
    found = detector.predict(pixels)
    records = [
        ImageRecord.from_detections(
            str(p), LoadedImage(px, s.image.width, s.image.height), f, len(detector.names)
        )
        for (p, s), px, f in zip(samples, pixels, found, strict=True)
    ]
    mask = mapped_class_mask(detector.names, parse_label_config(BOX_CONFIG).controls)

    pool = Pool(
        box_scores=[pool_box_scores(r, mask) for r in records],
        embeddings=np.stack([f.embedding for f in found]),
    )

    assert mask.all()
    assert pool.n_boxes.tolist() == [len(f.boxes) for f in found]
    assert min(b.conf for f in found for b in f.boxes) >= settings.detect_conf_floor
    assert any(b.conf < settings.score_threshold for f in found for b in f.boxes)
    selection = get_strategy("hybrid", lam=0.5).select(pool, 3)
    assert sorted(selection.order.tolist()) == list(range(6))


# --------------------------------------------------------------------------- write plans
def existing(
    pid: int, task: int, version: str, score: float | None, cluster: int | None, result: Any
) -> ExistingPrediction:
    return ExistingPrediction(pid, task, version, score, cluster, result)


REGION = [{"from_name": "label", "value": {"x": 1}}]


def test_plan_writes_creates_updates_and_deletes_only_what_differs() -> None:
    desired = {
        1: DesiredPrediction(REGION, 0.0, 5),  # no prediction yet
        2: DesiredPrediction(REGION, 0.25, 6),  # identical one exists
        3: DesiredPrediction([], 0.5, 5),  # score and result differ, cluster matches
        4: DesiredPrediction(REGION, 0.75, 7),  # two copies: the matching one is kept
        6: DesiredPrediction(REGION, 0.8, 2),  # two stale copies: the newest is updated
    }
    current = {
        1: [existing(10, 1, "v1", 0.1, 1, REGION)],  # another version: left alone
        2: [existing(20, 2, "v2", 0.25, 6, REGION)],
        3: [existing(30, 3, "v2", 0.9, 5, REGION)],
        4: [existing(40, 4, "v2", 0.75, 7, REGION), existing(41, 4, "v2", None, None, [])],
        5: [existing(50, 5, "v2", 0.0, 1, REGION), existing(51, 5, "v1", 0.0, 1, REGION)],
        6: [existing(61, 6, "v2", 0.1, 1, REGION), existing(60, 6, "v2", 0.2, 2, REGION)],
    }

    plan = plan_writes(desired, current, "v2", retire=[5, 1])

    assert plan.create == ((1, desired[1]),)
    assert plan.update == ((30, {"score": 0.5, "result": []}), (61, {"score": 0.8, "cluster": 2}))
    assert plan.delete == (41, 60, 50)
    assert plan.unchanged == 2
    assert plan.n_writes == 6


def test_plan_writes_is_empty_when_everything_matches() -> None:
    desired = {7: DesiredPrediction(REGION, 0.0, 3)}
    plan = plan_writes(desired, {7: [existing(70, 7, "v1", 0.0, 3, REGION)]}, "v1")
    assert (plan.create, plan.update, plan.delete, plan.unchanged) == ((), (), (), 1)


# ------------------------------------------------------------------------ stored rankings
def stored(version: str = "v3") -> dict[str, Any]:
    return {
        "project_id": 4,
        "model_version": version,
        "tasks": {
            "11": {"result": REGION, "score": 0.0, "cluster": 2, "ref": "/data/a.jpg"},
            "12": {"result": [], "score": 0.5, "cluster": 3, "ref": "/data/b.jpg"},
        },
    }


def test_precomputed_prediction_answers_for_the_current_version(tmp_path: Path) -> None:
    save_ranking(ranking_path(tmp_path, 4, "v3"), stored())

    found = precomputed_prediction(tmp_path, 4, 11, "v3")

    assert found == {"result": REGION, "score": 0.0, "model_version": "v3"}
    assert precomputed_prediction(tmp_path, 4, 12, "v3", image_ref="/data/b.jpg") == {
        "result": [],
        "score": 0.5,
        "model_version": "v3",
    }
    assert precomputed_prediction(tmp_path, 4, 12, "v3", image_ref="/data/other.jpg") is None
    assert precomputed_prediction(tmp_path, 4, 13, "v3") is None
    assert precomputed_prediction(tmp_path, 4, 11, "v4") is None
    assert precomputed_prediction(tmp_path, 5, 11, "v3") is None
    assert found is not None
    found["result"][0]["value"]["x"] = 99  # callers get copies
    assert precomputed_prediction(tmp_path, 4, 11, "v3")["result"] == REGION  # type: ignore[index]


def test_a_rewritten_ranking_is_read_afresh(tmp_path: Path) -> None:
    path = ranking_path(tmp_path, 4, "v3")
    save_ranking(path, stored())
    assert precomputed_prediction(tmp_path, 4, 12, "v3")["score"] == 0.5  # type: ignore[index]
    newer = stored()
    newer["tasks"]["12"]["score"] = 0.25
    newer["tasks"]["14"] = {"result": [], "score": 0.75, "cluster": 1, "ref": "c"}
    save_ranking(path, newer)

    assert precomputed_prediction(tmp_path, 4, 12, "v3")["score"] == 0.25  # type: ignore[index]
    assert load_ranking(tmp_path, 4, "v3") == json.loads(path.read_text())
    assert sorted(p.name for p in ranking_dir(tmp_path, 4).iterdir()) == ["v3.json"]


def test_an_unreadable_ranking_answers_none(tmp_path: Path) -> None:
    path = ranking_path(tmp_path, 4, "v3")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert precomputed_prediction(tmp_path, 4, 11, "v3") is None


# ------------------------------------------------------------------------ detection cache
def test_detection_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    signature = {"model_version": "v1", "image_size": 160}
    cache = DetectionCache(path, signature)
    cache.put(5, record([0, 2], [0.9, 0.1], ref="/a.jpg"))
    cache.put(6, record([], [], ref="/b.jpg"))
    cache.save()

    loaded = DetectionCache(path, signature)

    assert len(loaded) == 2
    five = loaded.get(5, "/a.jpg")
    assert five is not None
    np.testing.assert_array_equal(five.class_scores, record([0, 2], [0.9, 0.1]).class_scores)
    np.testing.assert_array_equal(five.class_ids, [0, 2])
    assert (five.width, five.height) == (200, 100)
    six = loaded.get(6, "/b.jpg")
    assert six is not None and six.class_scores.shape == (0, 3)
    assert loaded.get(5, "/changed.jpg") is None
    assert loaded.get(7, "/a.jpg") is None
    loaded.retain({6})
    loaded.save()
    assert len(DetectionCache(path, signature)) == 1
    assert len(DetectionCache(path, {**signature, "image_size": 640})) == 0


# ------------------------------------------------------------------- rank_project guards
def fake_services(tmp_path: Path, sdk: Any = None) -> dict[str, Any]:
    return {
        "settings": Settings(model_dir=tmp_path),
        "detectors": None,
        "images": None,
        "ls": SimpleNamespace(sdk=sdk),
        "registry": None,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "nope"}, "valid names"),
        ({"strategy_params": {"lam": 3.0}}, "lam"),
        ({"strategy_params": {"bogus": 1}}, "bogus"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_rank_project_rejects_bad_requests_before_any_work(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(RankingConfigError, match=message):
        rank_project(**fake_services(tmp_path), project_id=1, **kwargs)
    assert not (tmp_path / "projects").exists()


def test_one_ranking_per_project_at_a_time(tmp_path: Path) -> None:
    with _project_lock(ranking_dir(tmp_path, 1), 1):
        with pytest.raises(RankingBusy):
            rank_project(**fake_services(tmp_path), project_id=1)


def test_label_studio_errors_become_ranking_errors(tmp_path: Path) -> None:
    def missing(**_: Any) -> None:
        raise ApiError(status_code=404, headers={"set-cookie": "secret"}, body={"detail": "nope"})

    def broken(**_: Any) -> None:
        raise ApiError(status_code=500, headers={"set-cookie": "secret"}, body="boom")

    for get, error in ((missing, ProjectNotFound), (broken, LabelStudioApiError)):
        sdk = SimpleNamespace(projects=SimpleNamespace(get=get))
        with pytest.raises(error) as caught:
            rank_project(**fake_services(tmp_path, sdk), project_id=9)
        assert "secret" not in str(caught.value)
    assert "HTTP 500: boom" in str(caught.value)


def test_progress_rate_and_eta() -> None:
    report = RankProgress(1, "v1", "predict", done=30, total=90, elapsed_s=10.0)
    assert report.rate == 3.0
    assert report.eta_s == 20.0
    assert RankProgress(1, "v1", "predict", 0, 10, 0.0).eta_s is None
