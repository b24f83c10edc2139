"""The per-project FAISS embedding index: ids, replacement, exact and IVF search, persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from backend.layout import ModelDir
from backend.ranking.embedding_index import EmbeddingIndex, index_path, remove_other_versions


def unit(d: int, *hot: int) -> np.ndarray:
    """(len(hot), d) float32 rows, row i = the one-hot vector e_{hot[i]}."""
    out = np.zeros((len(hot), d), dtype=np.float32)
    out[np.arange(len(hot)), hot] = 1.0
    return out


def blobs(n: int, d: int, seed: int) -> np.ndarray:
    """n L2-normalised float32 vectors around 4 well-separated centres."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:4] * 3.0
    x = centres[rng.integers(0, 4, size=n)] + rng.normal(0, 0.3, size=(n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_get_returns_vectors_in_the_requested_order() -> None:
    index = EmbeddingIndex()
    index.upsert([10, 20, 30], unit(4, 0, 1, 2))

    assert len(index) == 3
    assert index.dim == 4
    assert index.kind == "flat"
    np.testing.assert_array_equal(index.get([30, 10]), unit(4, 2, 0))
    np.testing.assert_array_equal(index.ids(), [10, 20, 30])
    assert 20 in index and 40 not in index
    np.testing.assert_array_equal(index.contains([40, 10]), [False, True])


def test_upsert_replaces_the_vector_of_an_existing_id() -> None:
    index = EmbeddingIndex()
    index.upsert([10, 20, 30], unit(4, 0, 1, 2))
    index.upsert([20, 40], unit(4, 3, 0))

    assert len(index) == 4
    np.testing.assert_array_equal(index.get([20]), unit(4, 3))
    distances, labels = index.search(unit(4, 3), k=1)
    assert labels.tolist() == [[20]]
    assert distances.tolist() == [[0.0]]


def test_exact_search_distances_and_missing_neighbours() -> None:
    index = EmbeddingIndex()
    index.upsert([1, 2], np.array([[0, 0], [3, 4]], dtype=np.float32))

    distances, labels = index.search(np.array([[0, 1]], dtype=np.float32), k=3)

    assert labels.tolist() == [[1, 2, -1]]
    np.testing.assert_allclose(distances[0, :2], [1.0, 18.0])  # squared L2: 1, 9 + 9
    assert np.isinf(distances[0, 2])


def test_search_on_an_empty_index_finds_nothing() -> None:
    distances, labels = EmbeddingIndex().search(unit(3, 0), k=2)
    assert labels.tolist() == [[-1, -1]]
    assert np.isinf(distances).all()


def test_remove_ignores_absent_ids() -> None:
    index = EmbeddingIndex()
    index.upsert([10, 20, 30], unit(4, 0, 1, 2))

    assert index.remove([10, 99]) == 1
    assert index.remove([]) == 0
    np.testing.assert_array_equal(index.ids(), [20, 30])
    with pytest.raises(KeyError, match="10"):
        index.get([10])
    _, labels = index.search(unit(4, 0), k=3)
    assert labels.tolist() == [[20, 30, -1]]


@pytest.mark.parametrize(
    ("ids", "vectors", "error"),
    [
        ([1, 2], np.zeros((2, 3), dtype=np.float64), TypeError),
        ([1, 1], np.zeros((2, 3), dtype=np.float32), ValueError),
        ([1, -2], np.zeros((2, 3), dtype=np.float32), ValueError),
        ([1.5, 2], np.zeros((2, 3), dtype=np.float32), TypeError),
        ([1, 2], np.zeros((3, 3), dtype=np.float32), ValueError),
        ([1], np.full((1, 3), np.nan, dtype=np.float32), ValueError),
        ([1], [[0.0, 1.0, 0.0]], TypeError),
    ],
)
def test_upsert_validates_its_arguments(ids: list[float], vectors: object, error: type) -> None:
    with pytest.raises(error):
        EmbeddingIndex().upsert(ids, vectors)  # type: ignore[arg-type]


def test_the_first_vectors_fix_the_dimension() -> None:
    index = EmbeddingIndex()
    index.upsert([1], unit(4, 0))
    with pytest.raises(ValueError, match="d=4"):
        index.upsert([2], unit(5, 0))
    with pytest.raises(ValueError, match="d=4"):
        index.search(unit(5, 0), k=1)


def test_saved_index_is_reloaded_with_the_same_vectors(tmp_path: Path) -> None:
    index = EmbeddingIndex.open(tmp_path, 7, "v1")
    assert len(index) == 0 and index.save() is None  # nothing to write yet
    index.upsert([5, 6], unit(3, 1, 2))
    assert index.dirty

    written = index.save()

    assert written == tmp_path / "projects" / "7" / "embeddings" / "v1.faiss"
    assert not index.dirty
    assert sorted(p.name for p in written.parent.iterdir()) == ["v1.faiss"]  # no temp files
    again = EmbeddingIndex.open(tmp_path, 7, "v1")
    np.testing.assert_array_equal(again.ids(), [5, 6])
    np.testing.assert_array_equal(again.get([6, 5]), unit(3, 2, 1))
    assert not again.dirty


def test_a_new_model_version_starts_empty_and_removes_older_files(tmp_path: Path) -> None:
    old = EmbeddingIndex.open(tmp_path, 7, "v1")
    old.upsert([5], unit(3, 1))
    old.save()
    other_project = EmbeddingIndex.open(tmp_path, 8, "v1")
    other_project.upsert([5], unit(3, 1))
    other_project.save()

    new = EmbeddingIndex.open(tmp_path, 7, "v2")

    assert len(new) == 0
    assert not index_path(tmp_path, 7, "v1").exists()
    assert index_path(tmp_path, 8, "v1").exists()  # other projects are left alone
    kept = EmbeddingIndex.open(tmp_path, 7, "v1", prune_other_versions=False)
    assert len(kept) == 0


def test_remove_other_versions_lists_what_it_deleted(tmp_path: Path) -> None:
    for version in ("v1", "v2", "v3"):
        index = EmbeddingIndex.open(tmp_path, 1, version, prune_other_versions=False)
        index.upsert([1], unit(2, 0))
        index.save()

    removed = remove_other_versions(tmp_path, 1, "v2")

    assert [p.name for p in removed] == ["v1.faiss", "v3.faiss"]
    assert [p.name for p in ModelDir(tmp_path).project(1).embeddings.iterdir()] == ["v2.faiss"]


def test_an_unreadable_file_is_ignored(tmp_path: Path) -> None:
    path = index_path(tmp_path, 3, "v1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a faiss index")

    index = EmbeddingIndex.open(tmp_path, 3, "v1")

    assert len(index) == 0
    index.upsert([1], unit(2, 1))
    index.save()
    np.testing.assert_array_equal(EmbeddingIndex(path).get([1]), unit(2, 1))


def test_ivf_above_the_threshold_matches_exact_search(tmp_path: Path) -> None:
    vectors = blobs(300, 16, seed=1)
    ids = np.arange(1000, 1300)
    exact = EmbeddingIndex()
    exact.upsert(ids, vectors)
    ivf = EmbeddingIndex(tmp_path / "ivf.faiss", ivf_threshold=100, nprobe=64)
    ivf.upsert(ids[:50], vectors[:50])
    assert ivf.kind == "flat"

    ivf.upsert(ids[50:], vectors[50:])

    assert ivf.kind == "ivf"
    assert ivf.nlist == 7  # min(4 * sqrt(300), 300 // 39)
    assert exact.kind == "flat"
    queries = blobs(20, 16, seed=2)
    d_exact, i_exact = exact.search(queries, k=5)
    d_ivf, i_ivf = ivf.search(queries, k=5)  # nprobe >= nlist: every list is visited
    np.testing.assert_array_equal(i_ivf, i_exact)
    np.testing.assert_allclose(d_ivf, d_exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ivf.get(ids[::-1]), vectors[::-1])

    ivf.upsert([1005], vectors[:1])  # replace inside IVF
    assert len(ivf) == 300
    _, labels = ivf.search(vectors[:1], k=2)
    assert sorted(labels[0].tolist()) == [1000, 1005]
    assert ivf.remove([1000]) == 1

    ivf.save()
    loaded = EmbeddingIndex(tmp_path / "ivf.faiss", ivf_threshold=100, nprobe=64)
    assert loaded.kind == "ivf" and len(loaded) == 299
    np.testing.assert_array_equal(loaded.ids(), ids[1:])
    np.testing.assert_array_equal(loaded.get([1005, 1299]), vectors[[0, 299]])
    _, labels = loaded.search(vectors[:1], k=1)
    assert labels.tolist() == [[1005]]


def test_ivf_is_retrained_when_it_has_grown_enough() -> None:
    vectors = blobs(1200, 8, seed=3)
    index = EmbeddingIndex(ivf_threshold=100)
    index.upsert(np.arange(100), vectors[:100])
    assert (index.kind, index.nlist) == ("ivf", 2)  # 100 // 39

    index.upsert(np.arange(100, 150), vectors[100:150])
    assert index.nlist == 2  # ideal 3 < 2 * 2: no retraining yet

    index.upsert(np.arange(150, 1200), vectors[150:])
    assert index.nlist == 30  # ideal for 1200 = min(138, 30) >= 4: retrained
    np.testing.assert_array_equal(index.get(np.arange(1200)), vectors)


def test_concurrent_upserts_keep_every_vector() -> None:
    vectors = blobs(800, 8, seed=4)
    index = EmbeddingIndex()

    def add(part: int) -> None:
        for start in range(part * 200, (part + 1) * 200, 10):
            index.upsert(np.arange(start, start + 10), vectors[start : start + 10])

    threads = [threading.Thread(target=add, args=(part,)) for part in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(index) == 800
    np.testing.assert_array_equal(index.get(np.arange(800)), vectors)
