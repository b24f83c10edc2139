"""Flip consistency: the disagreement between an image's detections and its mirror's."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import Pool, get_strategy
from strategies.boxes import box_iou, mirror_boxes
from strategies.consistency import flip_disagreement

WIDTH = 100.0
BOX = [[10.0, 20.0, 30.0, 60.0]]
MIRRORED = [[70.0, 20.0, 90.0, 60.0]]  # the same box as the mirrored image shows it
CAT = [[0.9, 0.1]]


def test_mirroring_twice_is_the_identity_and_iou_is_exact() -> None:
    np.testing.assert_allclose(mirror_boxes(BOX, WIDTH), MIRRORED)
    np.testing.assert_allclose(mirror_boxes(mirror_boxes(BOX, WIDTH), WIDTH), BOX)
    # 20x40 boxes overlapping by 10x40: 400 / (800 + 800 - 400)
    assert box_iou(BOX, [[20.0, 20.0, 40.0, 60.0]])[0, 0] == pytest.approx(1 / 3)
    assert box_iou([], BOX).shape == (0, 1)
    assert box_iou([[5.0, 5.0, 5.0, 5.0]], [[5.0, 5.0, 5.0, 5.0]])[0, 0] == 0.0  # no area


def test_the_same_answer_on_both_sides_agrees_fully() -> None:
    assert flip_disagreement(BOX, CAT, MIRRORED, CAT, WIDTH) == pytest.approx(0.0)


def test_nothing_on_either_side_is_consistent() -> None:
    empty = np.zeros((0, 2))
    assert flip_disagreement(empty, empty, empty, empty, WIDTH) == 0.0
    # below the floor counts as nothing
    assert flip_disagreement(BOX, [[0.01, 0.02]], empty, empty, WIDTH) == 0.0


def test_a_box_only_one_side_finds_disagrees_by_its_confidence() -> None:
    empty = np.zeros((0, 2))
    assert flip_disagreement(BOX, CAT, empty, empty, WIDTH) == pytest.approx(0.9)
    assert flip_disagreement(empty, empty, MIRRORED, [[0.2, 0.6]], WIDTH) == pytest.approx(0.6)


def test_a_moved_box_and_a_changed_class_disagree_by_how_much() -> None:
    moved = [[60.0, 20.0, 80.0, 60.0]]  # mirrored back: 20..40, IoU 1/3 with the original
    assert flip_disagreement(BOX, CAT, moved, CAT, WIDTH) == pytest.approx(0.9 * (2 / 3))
    # same place, class scores 0.9/0.1 vs 0.1/0.9: total variation 0.8
    assert flip_disagreement(BOX, CAT, MIRRORED, [[0.1, 0.9]], WIDTH) == pytest.approx(0.9 * 0.8)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="one row per box"):
        flip_disagreement(BOX, [[0.9, 0.1], [0.2, 0.3]], MIRRORED, CAT, WIDTH)
    with pytest.raises(ValueError, match="same classes"):
        flip_disagreement(BOX, CAT, MIRRORED, [[0.9]], WIDTH)
    with pytest.raises(ValueError, match="width"):
        flip_disagreement(BOX, CAT, MIRRORED, CAT, 0.0)


def flip_pool(disagreement: list[float] | None) -> Pool:
    # class uncertainty (least confidence): image 0 most uncertain, then 1, 2, 3
    scores = [np.array([[c, 0.0]]) for c in (0.3, 0.5, 0.7, 0.9)]
    embeddings = np.eye(4, dtype=np.float32)
    return Pool(scores, embeddings, flip_disagreement=disagreement)


def test_the_flip_weight_blends_disagreement_by_rank() -> None:
    pool = flip_pool([0.0, 0.1, 0.2, 0.8])  # the most confident image is the least stable
    plain = get_strategy("least_confidence").select(pool, 2)
    assert plain.order.tolist() == [0, 1, 2, 3]
    assert get_strategy("least_confidence", flip=1.0).select(pool, 2).order.tolist() == [
        3,
        2,
        1,
        0,
    ]
    # equal weights: ranks (0,1,2,3) and (3,2,1,0) tie everywhere; diversity breaks the ties
    blended = get_strategy("least_confidence", flip=0.5).select(pool, 2)
    np.testing.assert_allclose(blended.scores, 0.5)
    hybrid = get_strategy("hybrid", uncertainty_params={"flip": 0.75}).select(pool, 1)
    assert hybrid.batch.tolist() == [3]  # flip-dominated uncertainty, diversity equal


def test_a_flip_weight_without_the_figure_is_an_error() -> None:
    with pytest.raises(ValueError, match="flip_disagreement"):
        get_strategy("entropy", flip=0.5).select(flip_pool(None), 2)
    with pytest.raises(ValueError, match="flip must lie in"):
        get_strategy("entropy", flip=2.0)
    with pytest.raises(ValueError, match="must lie in"):
        flip_pool([0.0, 0.0, 0.0, 1.5])
