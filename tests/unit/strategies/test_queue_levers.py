"""Queue levers: the audit slice, cost-aware (per-second) scores, scale-free near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import Pool, available_strategies, get_strategy
from strategies.diversity import median_neighbour_distance
from strategies.selection import audit_places, fill_places


def pool_with_keys(n: int, seed: int) -> Pool:
    rng = np.random.default_rng(seed)
    return Pool(
        [rng.random((int(rng.integers(0, 4)), 3)) for _ in range(n)],
        rng.normal(size=(n, 4)).astype(np.float32),
        split_keys=rng.random(n),
    )


def test_audit_places_every_fifth_for_a_fifth() -> None:
    assert np.flatnonzero(audit_places(12, 0.2)).tolist() == [4, 9]
    assert np.flatnonzero(audit_places(7, 0.5)).tolist() == [1, 3, 5]
    assert not audit_places(5, 0.0).any()


def test_fill_places_lets_either_list_run_out() -> None:
    places = audit_places(6, 0.5)  # places 1, 3, 5
    assert fill_places(places, np.array([10]), np.array([0, 1, 2, 3, 4])).tolist() == [
        0,
        10,
        1,
        2,
        3,
        4,
    ]
    assert fill_places(places, np.array([10, 11, 12, 13]), np.array([0, 1])).tolist() == [
        0,
        10,
        1,
        11,
        12,
        13,
    ]


@pytest.mark.parametrize("name", available_strategies())
def test_audit_slice_takes_its_places_in_key_order(name: str) -> None:
    pool = pool_with_keys(40, 4)  # 9 of its keys are below 0.25: fewer than the 10 places
    assert pool.split_keys is not None
    share = 0.25
    audit = np.flatnonzero(pool.split_keys < share)
    assert 3 <= audit.shape[0] < 40
    chosen = get_strategy(name, audit_share=share).select(pool, 8)
    places = audit_places(40, share)
    used = np.flatnonzero(places)[: audit.shape[0]]  # the places the slice can fill
    head = chosen.order[: used[-1] + 1]
    on_places = head[places[: head.shape[0]]]
    assert set(on_places.tolist()) <= set(audit.tolist())
    assert on_places.tolist() == sorted(on_places.tolist(), key=lambda i: pool.split_keys[i])
    assert not set(head[~places[: head.shape[0]]].tolist()) & set(audit.tolist())
    assert np.all(np.diff(chosen.scores[chosen.order]) <= 0)
    assert chosen.details["audit"][audit].tolist() == [1.0] * audit.shape[0]


def test_the_rest_is_the_strategy_order_without_the_slice() -> None:
    pool = pool_with_keys(30, 5)
    assert pool.split_keys is not None
    rest = pool.split_keys >= 0.2
    alone = get_strategy("entropy").select(pool.subset(rest), 30).order
    chosen = get_strategy("entropy", audit_share=0.2).select(pool, 30).order
    others = [int(i) for i in chosen if rest[i]]
    assert others == np.flatnonzero(rest)[alone].tolist()


def test_no_keys_or_zero_share_means_no_slice() -> None:
    pool = pool_with_keys(20, 1)
    plain = get_strategy("margin").select(pool, 5).order
    no_keys = Pool(list(pool.box_scores), pool.embeddings)
    assert get_strategy("margin", audit_share=0.3).select(no_keys, 5).order.tolist() == (
        plain.tolist()
    )
    assert get_strategy("margin", audit_share=0.0).select(pool, 5).order.tolist() == (
        plain.tolist()
    )


def test_bad_audit_share_and_keys() -> None:
    with pytest.raises(ValueError, match="audit_share"):
        get_strategy("random", audit_share=0.95)
    emb = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"split_keys must lie in \[0, 1\)"):
        Pool([np.zeros((0, 2))] * 2, emb, split_keys=np.array([0.1, 1.0]))
    with pytest.raises(ValueError, match="seconds must be > 0"):
        Pool([np.zeros((0, 2))] * 2, emb, seconds=np.array([3.0, 0.0]))
    with pytest.raises(ValueError, match=r"seconds must have shape \(2,\)"):
        Pool([np.zeros((0, 2))] * 2, emb, seconds=np.array([3.0]))


def test_per_second_prefers_the_cheaper_of_two_equally_uncertain_images() -> None:
    same = np.array([[0.5, 0.1]])
    pool = Pool(
        [same, same, np.array([[0.9, 0.0]])],
        np.eye(3, dtype=np.float32),
        seconds=np.array([60.0, 6.0, 3.0]),
    )
    # without costs: 0 and 1 tie on uncertainty (diversity breaks it), 2 is the most certain
    assert get_strategy("least_confidence").select(pool, 1).order.tolist() == [0, 1, 2]
    cost_aware = get_strategy("least_confidence", per_second=True).select(pool, 3)
    assert cost_aware.order.tolist() == [1, 2, 0]  # 0.5 / 6 s, 0.1 / 3 s, 0.5 / 60 s
    assert cost_aware.details["uncertainty"][1] == pytest.approx(0.5 / 6.0)
    hybrid = get_strategy("hybrid", lam=1.0, uncertainty_params={"per_second": True})
    assert hybrid.select(pool, 1).order[0] == 1


def test_median_neighbour_distance_is_the_pools_own_scale() -> None:
    points = np.array([[0.0], [1.0], [3.0], [6.0], [6.0]], dtype=np.float32)
    # nearest other item: 1, 1, 2, 0, 0 -> median 1
    assert median_neighbour_distance(points) == pytest.approx(1.0)
    assert median_neighbour_distance(points * 10) == pytest.approx(10.0)
    assert median_neighbour_distance(points[:1]) == 0.0


def test_dup_relative_keeps_two_near_copies_out_of_one_batch() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 3)).astype(np.float32) * 10
    emb[1] = emb[0] + 0.001  # a near-copy of item 0
    uncertain = np.array([[0.5, 0.5]])
    sure = np.array([[0.99, 0.0]])
    boxes = [uncertain, uncertain] + [sure] * 10  # the queue wants both copies first
    pool = Pool(boxes, emb)
    plain = get_strategy("least_confidence").select(pool, 3)
    assert set(plain.batch[:2].tolist()) == {0, 1}
    spread = get_strategy("least_confidence", dup_relative=0.25).select(pool, 3)
    assert len({0, 1} & set(spread.batch.tolist())) == 1
    assert spread.details["near_duplicate"].sum() == 1
    with pytest.raises(ValueError, match="dup_relative"):
        get_strategy("hybrid", dup_relative=-1.0)
