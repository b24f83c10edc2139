"""k-center greedy, k-means clusters and near-duplicates on embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.diversity import (
    central_item,
    demote_near_duplicates,
    kcenter_greedy,
    kcenter_ranking,
    kmeans_clusters,
    near_duplicate_groups,
    near_duplicate_pairs,
)


def f32(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def brute_kcenter(x: np.ndarray, labeled: np.ndarray, b: int) -> list[int]:
    """Textbook greedy with exact float64 distances; same rules (lowest index on ties)."""
    xd = x.astype(np.float64)
    n = xd.shape[0]
    if labeled.shape[0]:
        diff = xd[:, None, :] - labeled.astype(np.float64)[None, :, :]
        best = (diff**2).sum(axis=2).min(axis=1)
    else:
        best = np.full(n, np.inf)
    picks: list[int] = []
    for t in range(min(b, n)):
        if t == 0 and labeled.shape[0] == 0:
            item = central_item(x)
        else:
            masked = best.copy()
            masked[picks] = -np.inf
            item = int(np.argmax(masked))
        picks.append(item)
        best = np.minimum(best, ((xd - xd[item]) ** 2).sum(axis=1))
    return picks


def test_kcenter_picks_far_outlier_first() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.1, size=(50, 3)).astype(np.float32)
    x[17] = [100.0, 0.0, 0.0]
    labeled = f32([[0.0, 0.0, 0.0]])
    result = kcenter_greedy(x, 3, labeled)
    assert result.picks[0] == 17
    assert result.pick_distances[0] == pytest.approx(100.0, rel=1e-5)
    assert result.min_distances[17] == 0.0


def test_kcenter_exact_small_case() -> None:
    # On a line, labeled at 0. Farthest is 10 (index 3); then 5, tied between indices 1 and 4
    # (lowest index wins); then 2, tied between index 2 (2 from 0) and index 5 (8 is 2 from 10).
    x = f32([[1.0], [5.0], [2.0], [10.0], [5.0], [8.0]])
    result = kcenter_greedy(x, 3, f32([[0.0]]))
    assert result.picks.tolist() == [3, 1, 2]
    np.testing.assert_allclose(result.pick_distances, [10.0, 5.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(result.min_distances, [1.0, 0.0, 0.0, 0.0, 0.0, 2.0], atol=1e-6)


def test_kcenter_cold_start_starts_at_centre_then_farthest() -> None:
    x = f32([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [9.0, 9.0]])
    # mean = (1.8, 2.0); nearest item is index 2 (0, 1)
    result = kcenter_greedy(x, 2, None)
    assert result.picks.tolist() == [2, 4]
    assert np.isinf(result.pick_distances[0])
    order, scores = kcenter_ranking(result)
    assert np.isfinite(scores).all()
    assert order[:2].tolist() == [2, 4]
    assert np.all(np.diff(scores[order]) <= 0)


def test_kcenter_never_takes_a_duplicate_while_distinct_items_remain() -> None:
    x = f32([[0.0], [3.0], [3.0], [7.0], [7.0], [1.0]])
    result = kcenter_greedy(x, 3, f32([[0.0]]))
    assert result.picks.tolist() == [3, 1, 5]


def test_kcenter_batch_clipped_and_zero() -> None:
    x = f32([[0.0], [1.0], [4.0]])
    assert kcenter_greedy(x, 10, f32([[0.0]])).picks.tolist() == [2, 1, 0]
    zero = kcenter_greedy(x, 0, f32([[0.0]]))
    assert zero.picks.size == 0
    np.testing.assert_allclose(zero.min_distances, [0.0, 1.0, 4.0])


def test_kcenter_cosine_is_scale_invariant() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    lab = rng.normal(size=(3, 5)).astype(np.float32)
    scale = rng.uniform(0.5, 20.0, size=(40, 1)).astype(np.float32)
    a = kcenter_greedy(x, 10, lab, metric="cosine")
    b = kcenter_greedy(x * scale, 10, lab * 3.0, metric="cosine")
    assert a.picks.tolist() == b.picks.tolist()


@pytest.mark.parametrize("shortlist", [1, 2, 7, 2048])
def test_kcenter_matches_brute_force_on_random_data(shortlist: int) -> None:
    rng = np.random.default_rng(shortlist)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    for m in (0, 5):
        lab = rng.normal(size=(m, 8)).astype(np.float32)
        got = kcenter_greedy(x, 40, lab, shortlist=shortlist)
        assert got.picks.tolist() == brute_kcenter(x, lab, 40)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.integers(-4, 4), min_size=3, max_size=3), min_size=n, max_size=n),
            st.lists(st.lists(st.integers(-4, 4), min_size=3, max_size=3), max_size=4),
            st.integers(0, n + 2),
            st.sampled_from([1, 2, 3, 2048]),
        )
    )
)
def test_kcenter_equals_brute_force_with_exact_ties(
    case: tuple[list[list[int]], list[list[int]], int, int],
) -> None:
    # Small integer coordinates: every squared distance is exact in float32, so ties are real
    # and both implementations must break them the same way (lowest index).
    rows, lab_rows, b, shortlist = case
    x = np.array(rows, dtype=np.float32)
    lab = np.array(lab_rows, dtype=np.float32).reshape(-1, 3)
    got = kcenter_greedy(x, b, lab, shortlist=shortlist)
    assert got.picks.tolist() == brute_kcenter(x, lab, b)
    order, scores = kcenter_ranking(got)
    assert sorted(order.tolist()) == list(range(x.shape[0]))
    assert np.isfinite(scores).all()
    assert np.all(np.diff(scores[order]) <= 1e-9)


def test_kcenter_input_errors() -> None:
    with pytest.raises(TypeError, match="float32"):
        kcenter_greedy(np.zeros((3, 2)), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        kcenter_greedy(f32([[np.nan, 0.0]]), 1)
    with pytest.raises(ValueError, match="batch_size"):
        kcenter_greedy(f32([[0.0]]), -1)
    with pytest.raises(ValueError, match="columns"):
        kcenter_greedy(f32([[0.0, 1.0]]), 1, f32([[0.0]]))
    with pytest.raises(ValueError, match="metric"):
        kcenter_greedy(f32([[0.0]]), 1, metric="manhattan")  # type: ignore[arg-type]


def test_kmeans_recovers_separated_blobs_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    truth = np.repeat([2, 0, 1], 30)
    x = (centres[truth] + rng.normal(0, 0.5, size=(90, 2))).astype(np.float32)
    labels = kmeans_clusters(x, 3, seed=7)
    # ids are numbered by first appearance, so they equal the blob order of appearance
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 30))
    np.testing.assert_array_equal(labels, kmeans_clusters(x, 3, seed=7))


def test_kmeans_small_inputs() -> None:
    x = f32([[0.0], [1.0]])
    assert kmeans_clusters(x, 10).tolist() == [0, 1]
    assert kmeans_clusters(x, 1).tolist() == [0, 0]
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_clusters(x, 0)


def test_near_duplicate_pairs_exact_threshold() -> None:
    x = f32([[0.0, 0.0], [0.0, 1e-4], [5.0, 5.0], [5.0, 5.05], [9.0, 0.0]])
    assert near_duplicate_pairs(x, 0.01).tolist() == [[0, 1]]
    assert near_duplicate_pairs(x, 0.1).tolist() == [[0, 1], [2, 3]]
    assert near_duplicate_pairs(x, 0.0).tolist() == []
    same = f32([[1.0, 2.0], [1.0, 2.0]])
    assert near_duplicate_pairs(same, 0.0).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="threshold"):
        near_duplicate_pairs(x, -1.0)


def test_near_duplicate_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x[100:110] = x[:10] + rng.normal(0, 1e-3, size=(10, 4)).astype(np.float32)
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    for threshold in (0.01, 0.5):
        i, j = np.nonzero(np.triu(d <= threshold, k=1))
        expected = np.stack([i, j], axis=1).tolist()
        assert near_duplicate_pairs(x, threshold).tolist() == expected


def test_near_duplicate_groups_are_transitive() -> None:
    x = f32([[3.0], [0.0], [0.9], [1.8], [10.0]])
    assert near_duplicate_groups(x, 1.0).tolist() == [0, 1, 1, 1, 4]


def test_demote_near_duplicate_of_earlier_item() -> None:
    x = f32([[0.0], [0.001], [5.0], [9.0]])
    order, demoted = demote_near_duplicates(np.array([0, 1, 2, 3]), x, 0.01)
    assert order.tolist() == [0, 2, 3, 1]
    assert demoted.tolist() == [False, True, False, False]


def test_demote_near_duplicate_of_labeled_item_anywhere_in_order() -> None:
    x = f32([[0.0], [5.0], [9.0], [5.001]])
    order, demoted = demote_near_duplicates(
        np.array([3, 1, 2, 0]), x, 0.01, labeled=f32([[9.0]]), keep=1
    )
    # keep=1: the walk stops after item 3; item 1 (dup of 3) is not walked, item 2 is a
    # duplicate of a labeled item and goes last anyway.
    assert order.tolist() == [3, 1, 0, 2]
    assert demoted.tolist() == [False, False, True, False]


def test_demote_rejects_non_permutation() -> None:
    with pytest.raises(ValueError, match="permutation"):
        demote_near_duplicates(np.array([0, 0]), f32([[0.0], [1.0]]), 0.1)
