"""Strategies end to end: Pool -> Selection, hybrids, registry, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import (
    DUA,
    Entropy,
    KCenter,
    Pool,
    RankMix,
    Selection,
    available_strategies,
    get_strategy,
    strategy_params,
)

ALL = available_strategies()


def f32(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def box(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def random_pool(n: int, seed: int, *, m: int = 5, d: int = 6, n_classes: int = 3) -> Pool:
    rng = np.random.default_rng(seed)
    boxes = [rng.random((int(rng.integers(0, 4)), n_classes)) for _ in range(n)]
    return Pool(
        boxes,
        rng.normal(size=(n, d)).astype(np.float32),
        rng.normal(size=(m, d)).astype(np.float32),
        class_ap=rng.random(n_classes),
        class_quality=rng.random(n_classes),
    )


# ---------------------------------------------------------------------------- registry
def test_registry_names() -> None:
    assert ALL == (
        "dcus",
        "dua",
        "entropy",
        "hybrid",
        "kcenter",
        "least_confidence",
        "margin",
        "prefilter",
        "random",
        "typiclust",
    )
    assert isinstance(get_strategy("hybrid", lam=0.5), RankMix)
    assert get_strategy("hybrid").lam == 0.5  # type: ignore[attr-defined]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        get_strategy("coreset-ish")
    for name in ALL:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("hybrid", {"lam": 1.5}, "lam must lie in"),
        ("hybrid", {"lam": "half"}, "lam must be a number"),
        ("hybrid", {"lam": float("nan")}, "lam must be finite"),
        ("hybrid", {"lamda": 0.5}, "accepted: lam"),
        ("hybrid", {"uncertainty": "kcenter"}, "uncertainty must be one of"),
        (
            "prefilter",
            {"uncertainty": "margin", "uncertainty_params": {"variant": "binary"}},
            r"unknown parameter\(s\) variant for strategy 'margin'",
        ),
        ("prefilter", {"factor": 0.5}, "factor must lie in"),
        ("entropy", {"aggregate": "median"}, "aggregate must be one of max, mean, sum"),
        ("entropy", {"variant": "shannon"}, "variant must be one of"),
        ("margin", {"variant": "binary"}, "unknown parameter"),
        ("margin", {"floor": 1.5}, "floor must lie in"),
        ("kcenter", {"n_clusters": 0}, "n_clusters must be >= 1"),
        ("kcenter", {"metric": "manhattan"}, "metric must be one of l2, cosine"),
        ("random", {"seed": -1}, "seed must be >= 0"),
        ("random", {"seed": 1.5}, "seed must be an integer"),
        ("dcus", {"alpha": 0.0}, "alpha must lie in"),
        ("dua", {"dup_threshold": -0.1}, "dup_threshold must lie in"),
    ],
)
def test_bad_params_raise_value_error(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_strategy(name, **params)


def test_strategy_params_lists_own_then_common() -> None:
    assert strategy_params("hybrid") == (
        "lam",
        "uncertainty",
        "uncertainty_params",
        "shortlist",
        "seed",
        "n_clusters",
        "dup_threshold",
        "dup_relative",
        "metric",
        "audit_share",
    )
    assert strategy_params("entropy")[:5] == (
        "variant",
        "aggregate",
        "floor",
        "empty_score",
        "per_second",
    )


def test_bad_batch_size_and_pool_type() -> None:
    pool = random_pool(5, 0)
    with pytest.raises(ValueError, match="batch_size"):
        get_strategy("random").select(pool, -1)
    with pytest.raises(ValueError, match="batch_size"):
        get_strategy("random").select(pool, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Pool"):
        get_strategy("random").select([], 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- known answers
def uncertainty_pool() -> Pool:
    """0: confident; 1: close top-2; 2: nothing detected; 3: 99/1; 4: a 0.6 and a 0.95 box."""
    boxes = [
        box([0.97, 0.01]),
        box([0.5, 0.45]),
        box(),
        box([0.99, 0.01]),
        box([0.6, 0.1], [0.95, 0.02]),
    ]
    emb = f32([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    return Pool(boxes, emb)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy"])
def test_uncertainty_order_known_answer(name: str) -> None:
    selection = get_strategy(name).select(uncertainty_pool(), 2)
    # nothing detected (1.0) first, then the close top-2 box, the 0.6 box, 0.97, 0.99 last
    assert selection.order.tolist() == [2, 1, 4, 0, 3]
    assert selection.batch.tolist() == [2, 1]
    assert selection.scores[2] == 1.0
    assert "uncertainty" in selection.details


def test_nothing_detected_score_is_configurable() -> None:
    selection = get_strategy("entropy", empty_score=0.0).select(uncertainty_pool(), 2)
    assert selection.order[-1] == 2


def test_sum_aggregation_adds_box_scores() -> None:
    pool = uncertainty_pool()
    maxed = get_strategy("least_confidence", aggregate="max").select(pool, 5)
    summed = get_strategy("least_confidence", aggregate="sum").select(pool, 5)
    np.testing.assert_allclose(maxed.scores[4], 0.4)
    np.testing.assert_allclose(summed.scores[4], 0.45)


def test_dua_strategy_upweights_lowest_ap_class() -> None:
    boxes = [box([0.7, 0.1]), box([0.1, 0.7]), box([0.1, 0.7])]
    emb = f32([[0.0], [1.0], [2.0]])
    pool = Pool(boxes, emb, class_ap=np.array([0.2, 0.6]))
    selection = DUA().select(pool, 1)
    assert selection.batch.tolist() == [0]
    np.testing.assert_allclose(selection.scores, [0.3, 0.0, 0.0], atol=1e-12)
    # Reverse the AP: now class 1 is the hard one.
    flipped = Pool(boxes, emb, class_ap=np.array([0.6, 0.2]))
    assert DUA().select(flipped, 1).order.tolist() == [1, 2, 0]


def test_dua_missing_ap_counts_as_hardest() -> None:
    boxes = [
        np.array([[0.7, 0.1, 0.1]]),
        np.array([[0.1, 0.7, 0.1]]),
        np.array([[0.1, 0.1, 0.7]]),
    ]
    pool = Pool(boxes, f32([[0.0], [1.0], [2.0]]), class_ap=np.array([0.9, 0.4, np.nan]))
    selection = DUA().select(pool, 1)
    np.testing.assert_allclose(selection.scores, [0.0, 0.3, 0.3], atol=1e-12)
    assert selection.order.tolist() == [1, 2, 0]


def test_dcus_strategy_prefers_low_quality_class() -> None:
    boxes = [box([0.5, 0.1]), box([0.1, 0.5])]
    pool = Pool(boxes, f32([[0.0], [1.0]]), class_quality=np.array([0.9, 0.1]))
    selection = get_strategy("dcus").select(pool, 1)
    assert selection.order.tolist() == [1, 0]


def test_kcenter_strategy_picks_outlier_and_scores_are_distances() -> None:
    emb = f32([[0.0], [0.1], [0.2], [50.0], [0.3]])
    pool = Pool([box()] * 5, emb, f32([[0.0]]))
    selection = KCenter().select(pool, 1)
    assert selection.batch.tolist() == [3]
    np.testing.assert_allclose(
        selection.scores[selection.order], [50.0, 0.3, 0.2, 0.1, 0.0], rtol=1e-5, atol=1e-6
    )


def test_near_duplicate_is_demoted() -> None:
    # Image 1 is a copy of image 0 (same boxes, embedding 1e-4 away); image 3 duplicates a
    # labeled image. Without demotion the copy ranks second; with it, it goes to the back.
    boxes = [box([0.5, 0.5]), box([0.5, 0.5]), box([0.6, 0.3]), box([0.55, 0.45]), box([0.9, 0.1])]
    emb = f32([[0.0, 0.0], [0.0, 1e-4], [3.0, 0.0], [7.0, 7.0], [0.0, 3.0]])
    pool = Pool(boxes, emb, f32([[7.0, 7.0]]))
    plain = get_strategy("margin").select(pool, 2)
    assert plain.order.tolist() == [0, 1, 3, 2, 4]
    dedup = get_strategy("margin", dup_threshold=0.01).select(pool, 2)
    assert dedup.batch.tolist() == [0, 2]
    assert dedup.order.tolist() == [0, 2, 4, 1, 3]
    assert dedup.details["near_duplicate"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert np.all(np.diff(dedup.scores[dedup.order]) <= 0)


def test_hybrid_endpoints_equal_pure_orders() -> None:
    pool = random_pool(200, 1)
    for batch in (0, 10, 200):
        pure_u = Entropy().select(pool, batch).order
        pure_d = KCenter().select(pool, batch).order
        np.testing.assert_array_equal(
            get_strategy("hybrid", lam=1.0).select(pool, batch).order, pure_u
        )
        np.testing.assert_array_equal(
            get_strategy("hybrid", lam=0.0).select(pool, batch).order, pure_d
        )


def test_hybrid_mixes_ranks() -> None:
    # uncertainty order [0, 1, 2]; diversity order [2, 1, 0] (item 2 far from labeled).
    boxes = [box([0.5, 0.5]), box([0.7, 0.2]), box([0.99, 0.0])]
    emb = f32([[0.0], [1.0], [10.0]])
    pool = Pool(boxes, emb, f32([[0.0]]))
    assert get_strategy("hybrid", lam=0.5, uncertainty="margin").select(pool, 1).order.tolist() == [
        0,
        1,
        2,
    ]  # all mixed ranks tie at 1.0 -> uncertainty rank breaks ties
    assert get_strategy("hybrid", lam=0.4, uncertainty="margin").select(pool, 1).order.tolist() == [
        2,
        1,
        0,
    ]
    hybrid = RankMix(lam=0.6, uncertainty="margin")
    selection = hybrid.select(pool, 1)
    assert selection.order.tolist() == [0, 1, 2]
    np.testing.assert_allclose(selection.scores, [1 - 0.8 / 2, 0.5, 1 - 1.2 / 2])


def test_prefilter_picks_diverse_items_among_the_uncertain() -> None:
    # Items 0, 1, 2 are the most uncertain; 0 and 1 sit together, 2 far away. Item 3 is even
    # farther but confident: the pre-filter (factor 1.5 * B=2 -> 3 items) excludes it.
    boxes = [box([0.5, 0.5]), box([0.5, 0.49]), box([0.55, 0.45]), box([0.99, 0.0])]
    emb = f32([[0.01], [0.0], [5.0], [100.0]])
    pool = Pool(boxes, emb, f32([[-1.0]]))
    selection = get_strategy("prefilter", factor=1.5, uncertainty="margin").select(pool, 2)
    assert selection.batch.tolist() == [2, 0]
    assert selection.order.tolist() == [2, 0, 1, 3]
    np.testing.assert_allclose(selection.scores[selection.order], [1.0, 0.75, 0.5, 0.25])
    plain_kcenter = KCenter().select(pool, 2)
    assert plain_kcenter.batch.tolist() == [3, 2]


def test_hybrid_accepts_instance_and_inner_params() -> None:
    pool = uncertainty_pool()
    a = get_strategy("hybrid", uncertainty=Entropy(variant="normalized")).select(pool, 2)
    b = get_strategy(
        "hybrid", uncertainty="entropy", uncertainty_params={"variant": "normalized"}
    ).select(pool, 2)
    np.testing.assert_array_equal(a.order, b.order)
    with pytest.raises(ValueError, match="variant"):
        get_strategy("hybrid", uncertainty_params={"variant": "x"})


def test_random_is_seeded_control() -> None:
    pool = random_pool(100, 2)
    a = get_strategy("random", seed=3).select(pool, 10)
    b = get_strategy("random", seed=3).select(pool, 10)
    c = get_strategy("random", seed=4).select(pool, 10)
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)
    generator = get_strategy("random", seed=np.random.default_rng(3)).select(pool, 10)
    np.testing.assert_array_equal(generator.order, a.order)


def test_clusters_follow_embeddings() -> None:
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [40.0, 0.0]])
    emb = (centres[np.repeat([0, 1], 20)] + rng.normal(0, 0.3, (40, 2))).astype(np.float32)
    pool = Pool([box()] * 40, emb)
    selection = get_strategy("random", n_clusters=2).select(pool, 3)
    np.testing.assert_array_equal(selection.clusters, np.repeat([0, 1], 20))


def test_empty_pool_gives_empty_selection() -> None:
    pool = Pool([], np.zeros((0, 4), dtype=np.float32))
    for name in ALL:
        selection = get_strategy(name).select(pool, 5)
        assert selection.order.size == 0 and selection.batch_size == 0


# ---------------------------------------------------------------------------- containers
def test_pool_validation() -> None:
    emb = f32([[0.0], [1.0]])
    with pytest.raises(TypeError, match="float32"):
        Pool([box(), box()], emb.astype(np.float64))
    with pytest.raises(ValueError, match="2 rows"):
        Pool([box()], emb)
    with pytest.raises(ValueError, match="classes"):
        Pool([box([0.1, 0.2]), np.zeros((1, 3))], emb)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Pool([box([0.1, 1.2]), box()], emb)
    with pytest.raises(ValueError, match="NaN"):
        Pool([box([0.1, np.nan]), box()], emb)
    with pytest.raises(ValueError, match="2-D"):
        Pool([np.zeros(2), box()], emb)
    with pytest.raises(ValueError, match="class_ap"):
        Pool([box(), box()], emb, class_ap=np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="columns"):
        Pool([box(), box()], emb, f32([[0.0, 1.0]]))
    with pytest.raises(TypeError, match="list or tuple"):
        Pool(np.zeros((2, 1, 2)), emb)  # type: ignore[arg-type]
    pool = Pool([box([0.5, 0.5]), box()], emb)
    assert pool.n == 2 and pool.dim == 1 and pool.n_classes == 2
    assert pool.labeled.shape == (0, 1)
    assert pool.n_boxes.tolist() == [1, 0]


def test_selection_validation() -> None:
    ok = np.array([1, 0])
    with pytest.raises(ValueError, match="permutation"):
        Selection(np.array([0, 0]), np.zeros(2), np.zeros(2, dtype=np.int64), 1, "x")
    with pytest.raises(ValueError, match="finite"):
        Selection(ok, np.array([np.inf, 0.0]), np.zeros(2, dtype=np.int64), 1, "x")
    with pytest.raises(ValueError, match="batch_size"):
        Selection(ok, np.zeros(2), np.zeros(2, dtype=np.int64), 3, "x")
    selection = Selection(ok, np.array([0.0, 1.0]), np.zeros(2, dtype=np.int64), 1, "x")
    assert selection.ranks.tolist() == [1, 0]


# ---------------------------------------------------------------------------- properties
@st.composite
def pools(draw: st.DrawFn) -> Pool:
    n = draw(st.integers(1, 20))
    d = draw(st.integers(1, 4))
    n_classes = draw(st.integers(1, 3))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    coord = st.floats(-10.0, 10.0, allow_nan=False, width=32)
    boxes = [
        np.array(
            draw(st.lists(st.lists(unit, min_size=n_classes, max_size=n_classes), max_size=3)),
            dtype=np.float64,
        ).reshape(-1, n_classes)
        for _ in range(n)
    ]
    emb = np.array(
        draw(st.lists(st.lists(coord, min_size=d, max_size=d), min_size=n, max_size=n)),
        dtype=np.float32,
    )
    m = draw(st.integers(0, 3))
    labeled = np.array(
        draw(st.lists(st.lists(coord, min_size=d, max_size=d), min_size=m, max_size=m)),
        dtype=np.float32,
    ).reshape(m, d)
    ap = np.array(
        draw(
            st.lists(st.one_of(unit, st.just(float("nan"))), min_size=n_classes, max_size=n_classes)
        )
    )
    return Pool(boxes, emb, labeled, class_ap=ap, class_quality=ap[::-1].copy())


@settings(max_examples=60, deadline=None)
@given(
    pool=pools(),
    name=st.sampled_from(ALL),
    batch=st.integers(0, 25),
    seed=st.integers(0, 3),
    dup=st.sampled_from([None, 0.0, 0.5]),
)
def test_selection_invariants(
    pool: Pool, name: str, batch: int, seed: int, dup: float | None
) -> None:
    strategy = get_strategy(name, seed=seed, n_clusters=3, dup_threshold=dup)
    selection = strategy.select(pool, batch)
    n = pool.n
    assert sorted(selection.order.tolist()) == list(range(n))
    assert selection.batch_size == min(batch, n)
    assert np.isfinite(selection.scores).all()
    assert np.all(np.diff(selection.scores[selection.order]) <= 0)
    assert selection.clusters.shape == (n,) and selection.clusters.min() >= 0
    assert selection.strategy == name
    again = get_strategy(name, seed=seed, n_clusters=3, dup_threshold=dup).select(pool, batch)
    np.testing.assert_array_equal(selection.order, again.order)
    np.testing.assert_array_equal(selection.scores, again.scores)
    np.testing.assert_array_equal(selection.clusters, again.clusters)


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence", "hybrid", "dua"])
def test_nothing_detected_anywhere_is_ordered_by_diversity_not_import_order(name: str) -> None:
    # A cold model finds nothing: every image scores the same. Items 0-4 are near-copies of
    # one scene, 5-9 each a different one; the batch must spread, not take 0, 1, 2, ...
    empty = np.zeros((0, 3))
    emb = f32([[0.0, i * 0.01] for i in range(5)] + [[10.0 * (i + 1), 0.0] for i in range(5)])
    pool = Pool([empty] * 10, emb, f32([[0.0, 0.0]]))
    batch = get_strategy(name).select(pool, 5).batch.tolist()
    assert len(set(batch) & {0, 1, 2, 3, 4}) <= 1, batch
    assert get_strategy(name).select(pool, 5).batch.tolist() == batch  # deterministic
