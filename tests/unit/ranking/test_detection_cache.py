"""Detections per task on disk: ImageRecord <-> boxes, the cache file, its place and versions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backend.labelstudio.images import LoadedImage
from backend.layout import ModelDir
from backend.models.detector import Box, ImageDetections
from backend.ranking.detection_cache import (
    DetectionCache,
    ImageRecord,
    detection_cache_path,
    remove_other_caches,
)
from tests.support.records import record


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


def test_detection_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cache.npz"
    signature = {"model_version": "v1", "image_size": 160}
    cache = DetectionCache(path, signature)
    cache.put(5, record([0, 2], [0.9, 0.1], ref="/a.jpg"))
    cache.put(6, replace(record([], [], ref="/b.jpg"), flip_disagreement=0.25))
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
    assert six.flip_disagreement == 0.25 and np.isnan(five.flip_disagreement)
    assert loaded.get(5, "/changed.jpg") is None
    assert loaded.get(7, "/a.jpg") is None
    loaded.retain({6})
    loaded.save()
    assert len(DetectionCache(path, signature)) == 1
    assert len(DetectionCache(path, {**signature, "image_size": 640})) == 0


SIGNATURE = {"model_version": "v2", "image_size": 160}


def test_open_reads_the_projects_cache_of_the_version(tmp_path: Path) -> None:
    path = detection_cache_path(tmp_path, 4, "v2")
    assert path == ModelDir(tmp_path).project(4).ranking / "v2.detections.npz"
    cache = DetectionCache.open(tmp_path, 4, "v2", SIGNATURE)
    assert cache.path == path and len(cache) == 0
    cache.put(5, record([1], [0.5]))
    cache.save()

    again = DetectionCache.open(tmp_path, 4, "v2", SIGNATURE)

    assert len(again) == 1 and again.get(5, "a.jpg") is not None


def test_opening_a_version_removes_other_versions_caches_only(tmp_path: Path) -> None:
    for version in ("v1", "v3"):
        old = DetectionCache.open(tmp_path, 4, version, SIGNATURE, prune_other_versions=False)
        old.put(1, record([], []))
        old.save()
    folder = ModelDir(tmp_path).project(4).ranking
    (folder / "v1.json").write_text("{}")

    DetectionCache.open(tmp_path, 4, "v2", SIGNATURE)

    assert sorted(p.name for p in folder.iterdir()) == ["v1.json"]
    assert remove_other_caches(tmp_path, 5, "v1") == []


def test_an_unreadable_cache_is_ignored(tmp_path: Path) -> None:
    path = detection_cache_path(tmp_path, 4, "v2")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz file")

    cache = DetectionCache.open(tmp_path, 4, "v2", SIGNATURE)

    assert len(cache) == 0
    cache.put(3, record([0], [0.7]))
    cache.save()
    assert len(DetectionCache(path, SIGNATURE)) == 1
