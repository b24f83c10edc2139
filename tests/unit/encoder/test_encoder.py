"""The project encoder: contrastive training on thumbnails, its versions on disk with a
near-duplicate threshold calibrated on re-shot copies, and the thumbnail cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.encoder.contrastive import (
    EMBED_DIM,
    THUMB_SIZE,
    embed,
    random_views,
    reshot,
    to_tensor,
    train_encoder,
)
from backend.encoder.store import duplicate_thresholds, is_stale, live_encoder, train_version
from backend.encoder.thumbnails import ThumbnailCache, thumbnail
from devkit.datagen import make_image
from strategies import aligned_correlation, detail, grey_thumbnails, worst_block_change


@pytest.fixture(scope="module")
def thumbs() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.stack([thumbnail(np.asarray(make_image(rng).image), bgr=False) for _ in range(24)])


def test_thumbnails_are_small_rgb_squares() -> None:
    picture = np.zeros((30, 50, 3), dtype=np.uint8)
    picture[..., 0] = 200  # blue, as BGR
    thumb = thumbnail(picture)
    assert thumb.shape == (THUMB_SIZE, THUMB_SIZE, 3) and thumb.dtype == np.uint8
    assert thumb[0, 0].tolist() == [0, 0, 200]
    with pytest.raises(ValueError, match="thumbnails"):
        to_tensor(np.zeros((2, 8, 8), dtype=np.uint8))


def test_views_differ_per_image_and_keep_the_value_range() -> None:
    import torch

    images = to_tensor(np.full((4, THUMB_SIZE, THUMB_SIZE, 3), 128, dtype=np.uint8))
    views = random_views(images, torch.Generator().manual_seed(0))
    assert views.min() >= 0 and views.max() <= 1
    means = views.mean(dim=(1, 2, 3))
    assert len(set(means.round(decimals=4).tolist())) == 4


def test_training_is_deterministic_and_lowers_the_loss(thumbs: np.ndarray) -> None:
    first, report = train_encoder(thumbs, seconds=60, seed=1, max_steps=30)
    second, _ = train_encoder(thumbs, seconds=60, seed=1, max_steps=30)
    assert report.steps == 30 and report.images == 24
    assert report.loss_last < report.loss_first
    x = embed(first, thumbs)
    assert x.shape == (24, EMBED_DIM) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(x, embed(second, thumbs), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        train_encoder(thumbs[:1], seconds=1)


def test_training_stops_at_the_epoch_cap(thumbs: np.ndarray) -> None:
    _, report = train_encoder(thumbs[:8], seconds=600)
    assert report.epochs == pytest.approx(100)


def test_the_thresholds_separate_copies_from_other_pictures(thumbs: np.ndarray) -> None:
    thresholds = duplicate_thresholds(thumbs)
    copies = reshot(thumbs, seed=9)
    greys = grey_thumbnails(np.concatenate([thumbs, copies]))
    fine = detail(greys)
    n = len(thumbs)
    same = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)
    other = np.stack([np.arange(n), np.roll(np.arange(n), 1)], axis=1)

    def verified(pairs: np.ndarray) -> np.ndarray:
        return (
            (aligned_correlation(greys, pairs) >= thresholds.whole)
            & (aligned_correlation(fine, pairs) >= thresholds.detail)
            & (worst_block_change(fine, pairs) <= thresholds.change)
        )

    assert verified(same).mean() >= 0.9
    assert not verified(other).any()


def test_versions_are_stored_replaced_and_refreshed(tmp_path: Path, thumbs: np.ndarray) -> None:
    assert live_encoder(tmp_path) is None
    first = train_version(tmp_path, thumbs[:10], seconds=1)
    loaded = live_encoder(tmp_path)
    assert loaded is not None and loaded.name == first.name == "e1"
    np.testing.assert_allclose(embed(loaded.encoder, thumbs), embed(first.encoder, thumbs))
    assert loaded.duplicate_thresholds == first.duplicate_thresholds
    assert not is_stale(loaded, 15) and is_stale(loaded, 16)
    first.index_path(tmp_path).write_bytes(b"old index")
    second = train_version(tmp_path, thumbs, seconds=1)
    assert second.name == "e2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e2.json", "e2.pt"]
    (tmp_path / "e3.json").write_text("{not json")  # a crash's leftover is skipped
    assert (live := live_encoder(tmp_path)) is not None and live.name == "e2"
    meta = json.loads((tmp_path / "e2.json").read_text())
    meta["duplicate_thresholds"] = [0.9, 0.5]  # calibrated before the change check
    (tmp_path / "e2.json").write_text(json.dumps(meta))
    assert live_encoder(tmp_path) is None  # so the next ranking trains anew


def test_the_thumbnail_cache_keys_by_reference(tmp_path: Path, thumbs: np.ndarray) -> None:
    path = tmp_path / "thumbnails.npz"
    cache = ThumbnailCache(path)
    cache.put(1, "a.jpg", thumbs[0])
    cache.put(2, "b.jpg", thumbs[1])
    cache.save()
    again = ThumbnailCache(path)
    assert again.get(1, "a.jpg") is not None and again.get(1, "other.jpg") is None
    again.retain({1: "changed.jpg", 2: "b.jpg"})
    again.save()
    assert ThumbnailCache(path).get(1, "a.jpg") is None
    np.testing.assert_array_equal(ThumbnailCache(path).get(2, "b.jpg"), thumbs[1])
    path.write_bytes(b"not a zip")
    assert ThumbnailCache(path).get(2, "b.jpg") is None
