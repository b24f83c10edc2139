"""Near-duplicate groups: embedding candidates verified by shift-aligned correlation, and the
demotion every strategy applies to them."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import (
    DuplicateThresholds,
    Pool,
    aligned_correlation,
    detail,
    duplicate_groups,
    get_strategy,
    grey_thumbnails,
    worst_block_change,
)
from strategies.duplicates import candidate_pairs, demote_duplicate_groups

LOOSE = DuplicateThresholds(whole=0.95, detail=0.95, change=float("inf"))


def scenes(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """n different smooth random pictures, (n, size, size) grey."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, size // 8, size // 8))
    return np.kron(coarse, np.ones((8, 8))).astype(np.float32)


def test_grey_thumbnails_and_their_detail() -> None:
    green = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    green[..., 1] = 255
    assert grey_thumbnails(green)[0, 0, 0] == pytest.approx(0.587)
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (1, 32, 1))  # lighting only
    assert np.abs(detail(ramp)[:, 8:-8, 8:-8]).max() < 0.02
    spot = np.zeros((1, 32, 32), dtype=np.float32)
    spot[0, 14:18, 14:18] = 1.0  # a small square
    assert detail(spot)[0, 15, 15] == pytest.approx(1 - 16 / 81, abs=1e-5)
    assert detail(spot)[0, 0, 0] == 0.0
    with pytest.raises(ValueError, match="thumbnails"):
        grey_thumbnails(np.zeros((1, 4, 4), dtype=np.uint8))


def test_a_moved_brighter_copy_correlates_fully_and_another_picture_does_not() -> None:
    pictures = scenes(2)
    moved = np.roll(pictures[0], (2, -1), axis=(0, 1)) * 0.7 + 0.2
    greys = np.stack([pictures[0], moved, pictures[1]])
    pairs = np.array([[0, 1], [0, 2]], dtype=np.int64)
    aligned = aligned_correlation(greys, pairs, max_shift=3)
    assert aligned[0] == pytest.approx(1.0, abs=1e-5)
    assert aligned[1] < 0.8
    unaligned = aligned_correlation(greys, pairs, max_shift=0)
    assert unaligned[0] < aligned[0]  # the shift search is what finds the copy


def test_candidates_are_unique_nearest_neighbour_pairs() -> None:
    x = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=np.float32)
    assert candidate_pairs(x, neighbours=1).tolist() == [[0, 1], [2, 3]]
    assert candidate_pairs(x[:1], neighbours=3).shape == (0, 2)


def test_groups_join_verified_copies_only() -> None:
    pictures = scenes(6)
    copies = [np.roll(pictures[0], 1, axis=1), np.roll(pictures[3], -2, axis=0) * 0.9]
    greys = np.concatenate([pictures, np.stack(copies)])
    # Embeddings that cannot tell anything apart: every pair is a candidate.
    embeddings = np.zeros((8, 4), dtype=np.float32)
    groups = duplicate_groups(embeddings, greys, LOOSE, neighbours=7)
    assert groups.tolist() == [0, 1, 2, 3, 4, 5, 0, 3]
    with pytest.raises(ValueError, match="greys"):
        duplicate_groups(embeddings, greys[:3], LOOSE)


def test_a_small_object_that_came_is_a_local_change() -> None:
    rng = np.random.default_rng(3)
    background = scenes(1, size=64)[0] * 0.5 + rng.normal(0, 0.01, (64, 64)).astype(np.float32)
    drifted = np.roll(background, 1, axis=1)  # the camera shook a pixel
    came = background.copy()
    came[40:46, 20:26] += 0.3  # a small object came: 1% of the picture
    greys = np.stack([background, drifted, came]).astype(np.float32)
    pairs = np.array([[0, 1], [0, 2]], dtype=np.int64)
    assert aligned_correlation(greys, pairs)[1] > 0.95  # the whole picture barely moves
    change = worst_block_change(detail(greys), pairs)
    assert change[1] > 5 * change[0]
    embeddings = np.zeros((3, 4), dtype=np.float32)
    strict = DuplicateThresholds(whole=0.9, detail=0.5, change=float(change[0]) * 2)
    assert duplicate_groups(embeddings, greys, strict).tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match="too small"):
        worst_block_change(greys[:, :16, :16], pairs)


def test_demotion_keeps_the_first_of_each_group() -> None:
    order = np.array([3, 0, 1, 2, 4], dtype=np.int64)
    groups = np.array([7, 7, 2, 7, 4], dtype=np.int64)
    new, demoted = demote_duplicate_groups(order, groups)
    assert new.tolist() == [3, 2, 4, 0, 1]
    assert demoted.tolist() == [True, True, False, False, False]
    new, demoted = demote_duplicate_groups(order, groups, np.array([2]))
    assert new.tolist() == [3, 4, 0, 1, 2]  # group 2 holds a labeled image


@pytest.mark.parametrize("name", ["hybrid", "entropy", "kcenter", "typiclust", "random"])
def test_every_strategy_moves_group_members_behind(name: str) -> None:
    rng = np.random.default_rng(0)
    n = 30
    groups = np.arange(n, dtype=np.int64)
    groups[[4, 9, 17]] = 4
    pool = Pool(
        [rng.random((2, 3)) for _ in range(n)],
        rng.normal(size=(n, 5)).astype(np.float32),
        duplicate_groups=groups,
        labeled_groups=np.array([20]),
    )
    selection = get_strategy(name).select(pool, 10)
    order = selection.order.tolist()
    behind = set(order[-3:])
    assert 20 in behind  # its group holds a labeled image
    assert len(behind & {4, 9, 17}) == 2  # one of the three stays where the strategy put it
    assert selection.details["duplicate_group"].sum() == 3


def test_pool_checks_the_groups() -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    boxes = [np.zeros((0, 1))] * 3
    with pytest.raises(ValueError, match="duplicate_groups"):
        Pool(boxes, x, duplicate_groups=np.array([0, 1]))
    with pytest.raises(ValueError, match="labeled_groups"):
        Pool(boxes, x, labeled_groups=np.array([0.5]))
    subset = Pool(boxes, x, duplicate_groups=np.array([5, 6, 5])).subset(np.array([1, 0, 1], bool))
    assert subset.duplicate_groups is not None and subset.duplicate_groups.tolist() == [5, 5]
