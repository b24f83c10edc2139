"""Where a first model starts: a backbone pretrained once on the project's pictures (the run's
training images and its unlabeled tasks'), else random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.training.trainer import first_parent


def _picture(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)


def test_the_backbone_is_pretrained_once_and_unreadable_pictures_are_skipped(
    tmp_path: Path, ultralytics_dir: Path
) -> None:
    train = tmp_path / "data" / "images" / "train"
    train.mkdir(parents=True)
    for i in range(3):
        _picture(train / f"{i}.png", i)
    pictures = tmp_path / "unlabeled"
    pictures.mkdir()
    for i in range(4):
        _picture(pictures / f"{i}.png", 10 + i)
    (pictures / "broken.png").write_bytes(b"not a picture")
    refs = [str(pictures / f"{i}.png") for i in range(4)] + [str(pictures / "broken.png")]
    settings = Settings(
        model_dir=tmp_path / "models", image_root=tmp_path, backbone_pretrain_seconds=2.0
    )
    loader = ImageLoader(settings, LabelStudioClient(None, None))
    data_yaml = tmp_path / "data" / "data.yaml"

    weights, parent, report = first_parent(settings, loader, 7, data_yaml, refs, 64)
    assert weights == settings.paths.project(7).backbone("yolo11n.yaml") and weights.is_file()
    assert parent == "pretrained-backbone:yolo11n.yaml"
    assert report is not None and report["images"] == 7 and report["steps"] >= 1

    again = first_parent(settings, loader, 7, data_yaml, refs, 64)
    assert again == (weights, parent, None)  # kept: a failed first run does not pay twice

    off = Settings(model_dir=tmp_path / "other", image_root=tmp_path, backbone_pretrain_seconds=0)
    assert first_parent(off, loader, 7, data_yaml, refs, 64) == (
        None,
        "random-init:yolo11n.yaml",
        None,
    )
