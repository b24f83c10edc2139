"""TypiClust: one typical image per cluster, largest clusters first, clusters that already
hold a labeled image last."""

from __future__ import annotations

import numpy as np

from strategies import Pool, TypiClust, get_strategy, typicality


def blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.arange(len(sizes), dtype=np.float32)[:, None] * np.array([[20.0, 0.0]])
    x = np.concatenate([c + rng.normal(size=(k, 2)) for c, k in zip(centres, sizes, strict=True)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return x.astype(np.float32), labels


def pool_of(x: np.ndarray, labeled: np.ndarray | None = None) -> Pool:
    return Pool([np.zeros((0, 1))] * len(x), x, labeled)


def test_typicality_is_highest_in_the_dense_middle() -> None:
    x = np.array([[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [5, 5]], dtype=np.float32)
    typical = typicality(x, neighbours=2)
    assert int(np.argmax(typical)) == 0
    assert int(np.argmin(typical)) == 4
    assert typicality(x[:1]).tolist() == [1.0]


def test_the_batch_covers_every_cluster_largest_first_with_its_typical_image() -> None:
    x, labels = blobs([40, 10, 25])
    selection = TypiClust(neighbours=5).select(pool_of(x), 3)
    batch = selection.batch.tolist()
    assert [int(labels[i]) for i in batch] == [0, 2, 1]
    typical = typicality(x, neighbours=5)
    for i in batch:
        members = np.flatnonzero(labels == labels[i])
        assert i == members[np.argmax(typical[members])]
    # The rest follows round by round, every cluster again before any third pick.
    rounds = [int(labels[i]) for i in selection.order[3:6]]
    assert sorted(rounds) == [0, 1, 2]


def test_a_cluster_with_a_labeled_image_comes_last() -> None:
    x, labels = blobs([40, 10, 25])
    labeled = x[labels == 0][:1] + 0.01
    batch = get_strategy("typiclust", neighbours=5).select(pool_of(x, labeled), 2).batch
    assert sorted(int(labels[i]) for i in batch) == [1, 2]


def test_typiclust_is_deterministic() -> None:
    x, _ = blobs([15, 15, 15], seed=3)
    a = TypiClust().select(pool_of(x), 5).order
    b = TypiClust().select(pool_of(x), 5).order
    assert a.tolist() == b.tolist()
