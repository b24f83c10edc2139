"""The queue's pure stages: pool rows, queue order and scores, and the predictions Label Studio
must hold.

Label Studio itself is exercised in tests/e2e/test_queue.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from backend.config import Settings
from backend.labelstudio.images import LoadedImage
from backend.labelstudio.label_config import parse_label_config
from backend.labelstudio.predictions import DesiredPrediction
from backend.models.detector import Detector, ModelSource
from backend.ranking.detect import flip_disagreements
from backend.ranking.detection_cache import ImageRecord
from backend.ranking.queue import (
    QueuedTask,
    class_ap_vector,
    empty_selection,
    mapped_class_mask,
    near_duplicate_marks,
    pool_box_scores,
    queue_head,
    queue_order,
    queue_predictions,
    queue_scores,
    queue_tasks,
    task_regions,
)
from devkit.datagen import write_images
from strategies import Selection
from tests.conftest import BOX_CONFIG
from tests.support.records import NAMES, record


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


REGION = [{"from_name": "label", "value": {"x": 1}}]


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


def test_label_studio_serves_exactly_the_queue_with_or_without_clusters() -> None:
    """Why the queue writes no cluster: one annotator labeling in turn is served the same
    order whether Label Studio balances the clusters or reads the scores alone (the bulk
    import stores no cluster, so every task is in one)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        order = rng.permutation(n)
        clusters = rng.integers(0, int(rng.integers(1, 6)), size=n)
        queue = queue_order(order, clusters)
        assert served_by_label_studio(queue_scores(queue), clusters) == queue.tolist()
        assert served_by_label_studio(queue_scores(queue), np.zeros(n)) == queue.tolist()


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


def test_empty_selection_asks_no_strategy() -> None:
    selection = empty_selection("hybrid")
    assert (selection.order.shape, selection.scores.shape, selection.clusters.shape) == (
        (0,),
        (0,),
        (0,),
    )
    assert (selection.batch_size, selection.strategy) == (0, "hybrid")


def test_real_detections_reach_the_pool_whole_and_the_pre_annotation_above_threshold(
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
    controls = parse_label_config(BOX_CONFIG).controls
    mask = mapped_class_mask(detector.names, controls)
    threshold = settings.score_threshold

    assert mask.all()
    assert min(b.conf for f in found for b in f.boxes) >= settings.detect_conf_floor
    assert any(b.conf < threshold for f in found for b in f.boxes)  # weak boxes exist
    for stored, detections in zip(records, found, strict=True):
        # the pool gets every kept box, the weak ones included, as the detector scored it
        expected = np.zeros((0, len(detector.names)), dtype=np.float32)
        if detections.boxes:
            expected = np.stack([b.class_scores for b in detections.boxes]).astype(np.float32)
        np.testing.assert_array_equal(pool_box_scores(stored, mask), expected)
        # the pre-annotation only the boxes at or above the threshold, labelled per the config
        regions = task_regions(stored, detector.names, controls, threshold)
        strong = np.flatnonzero(stored.conf >= threshold)
        assert [r["score"] for r in regions] == [round(float(stored.conf[i]), 4) for i in strong]
        assert [r["value"]["rectanglelabels"] for r in regions] == [
            [detector.names[stored.class_ids[i]].capitalize()] for i in strong
        ]


# --------------------------------------------------------------------- queue and predictions
def test_queue_tasks_place_every_task_exactly() -> None:
    selection = Selection(
        order=np.array([0, 1, 2, 3]),
        scores=np.array([0.9, 0.8, 0.7, 0.6]),
        clusters=np.array([0, 0, 1, 1]),
        batch_size=2,
        strategy="hybrid",
    )

    queued = queue_tasks(selection, [10, 11, 12, 13])

    # served: 10 (cluster 0), 12 (cluster 1), then 11, 13
    assert queued == (
        QueuedTask(10, position=0, score=0.0, strategy_rank=0, strategy_score=0.9),
        QueuedTask(11, position=2, score=0.5, strategy_rank=1, strategy_score=0.8),
        QueuedTask(12, position=1, score=0.25, strategy_rank=2, strategy_score=0.7),
        QueuedTask(13, position=3, score=0.75, strategy_rank=3, strategy_score=0.6),
    )
    assert queue_head(queued, 3) == (10, 12, 11)
    assert queue_head(queued, 10) == (10, 12, 11, 13)


def test_queue_tasks_of_nothing_and_of_the_wrong_length() -> None:
    assert queue_tasks(empty_selection("kcenter"), []) == ()
    with pytest.raises(ValueError, match="covers 0 tasks, not 1"):
        queue_tasks(empty_selection("kcenter"), [7])


def test_queue_predictions_hold_regions_and_score() -> None:
    controls = parse_label_config(BOX_CONFIG).controls
    queued = (
        QueuedTask(5, position=1, score=0.5, strategy_rank=0, strategy_score=0.9),
        QueuedTask(6, position=0, score=0.0, strategy_rank=1, strategy_score=0.2),
    )
    records = {5: record([0, 1], [0.9, 0.1]), 6: record([], [])}

    desired = queue_predictions(queued, records, NAMES, controls, 0.25)

    assert list(desired) == [5, 6]
    assert desired[5] == DesiredPrediction(
        task_regions(records[5], NAMES, controls, 0.25), score=0.5
    )
    assert len(desired[5].result) == 1
    assert desired[6] == DesiredPrediction([], score=0.0)


def test_task_regions_follow_each_controls_threshold() -> None:
    config = parse_label_config(
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image">'
        '<Label value="Square"/><Label value="Circle"/></RectangleLabels>'
        '<RectangleLabels name="weak" toName="image" model_score_threshold="0.05">'
        '<Label value="Circle"/></RectangleLabels></View>'
    )
    rec = record([0, 1], [0.9, 0.1])  # a square at 0.9, a circle at 0.1

    regions = task_regions(rec, NAMES, config.controls, 0.25)

    assert [(r["from_name"], r["value"]["rectanglelabels"]) for r in regions] == [
        ("label", ["Square"]),
        ("weak", ["Circle"]),
    ]
    assert regions[0] == {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": {
            "x": 0.0,
            "y": 5.0,
            "width": 4.0,
            "height": 20.0,
            "rotation": 0,
            "rectanglelabels": ["Square"],
        },
        "score": 0.9,
    }
    assert regions[1]["score"] == 0.1


def test_real_flip_disagreement_is_the_same_seen_from_either_side(
    trained_weights: Path, tmp_path: Path
) -> None:
    settings = Settings(model_dir=tmp_path, image_size=160, predict_batch=4)
    detector = Detector(ModelSource(version="t", weights=trained_weights), settings)
    samples = write_images(tmp_path / "images", 4, seed=3)
    plain = [np.asarray(s.image)[:, :, ::-1].copy() for _, s in samples]
    blank = np.full_like(plain[0], 128)
    images = [LoadedImage(px, px.shape[1], px.shape[0]) for px in [*plain, blank]]
    mirrored = [
        LoadedImage(np.ascontiguousarray(i.pixels[:, ::-1]), i.width, i.height) for i in images
    ]

    def records(loaded: list[LoadedImage]) -> list[ImageRecord]:
        found = detector.predict([i.pixels for i in loaded])
        n_classes = len(detector.names)
        return [
            ImageRecord.from_detections("", i, f, n_classes)
            for i, f in zip(loaded, found, strict=True)
        ]

    there = flip_disagreements(detector, images, records(images))
    back = flip_disagreements(detector, mirrored, records(mirrored))

    # swapping the image and its mirror swaps the two sides of one symmetric comparison
    np.testing.assert_allclose(there, back, atol=1e-5)
    assert all(0.0 <= d <= 1.0 for d in there)
    assert there[-1] == 0.0  # a blank image: nothing on either side
    assert max(there[:-1]) > 0.0  # a model trained on 30 images is not perfectly consistent


def test_near_duplicates_are_marked_with_the_task_they_copy() -> None:
    def queued(task_id: int, position: int) -> QueuedTask:
        return QueuedTask(task_id, position, position / 5, position, 1.0 - position / 5)

    queue = [queued(20, 3), queued(21, 0), queued(22, 4), queued(23, 1), queued(24, 2)]
    groups = {20: 21, 21: 21, 22: 5, 23: 23}  # 24 has no group entry: its own group
    assert near_duplicate_marks(queue, groups, labeled=[5, 6]) == {20: 21, 22: 5}
    assert near_duplicate_marks(queue, {}, labeled=[]) == {}
