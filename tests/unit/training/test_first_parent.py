"""Where a first model starts: a backbone pretrained once on the project's pictures (the run's
training images and its unlabeled tasks'), else random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.training.trainer import TrainingCancelled, cancel_check, first_parent


def _picture(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)


def _project(tmp_path: Path, seconds: float) -> tuple[Settings, ImageLoader, Path, list[str]]:
    """A run's training pictures and unlabeled references (one unreadable)."""
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
        model_dir=tmp_path / "models", image_root=tmp_path, backbone_pretrain_seconds=seconds
    )
    loader = ImageLoader(settings, LabelStudioClient(None, None))
    return settings, loader, tmp_path / "data" / "data.yaml", refs


def test_the_backbone_is_pretrained_once_and_unreadable_pictures_are_skipped(
    tmp_path: Path, ultralytics_dir: Path
) -> None:
    settings, loader, data_yaml, refs = _project(tmp_path, 2.0)

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


def test_a_cancelled_run_stops_the_pretraining_and_keeps_no_backbone(
    tmp_path: Path, ultralytics_dir: Path
) -> None:
    settings, loader, data_yaml, refs = _project(tmp_path, 600.0)
    flag = settings.paths.project(7).cancel_flag
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()  # `ls-active-yolo train cancel`, as the run starts its ten-minute pretraining

    with pytest.raises(TrainingCancelled, match="run 3 cancelled"):
        first_parent(settings, loader, 7, data_yaml, refs, 64, cancel_check(settings, 7, 3))
    assert not settings.paths.project(7).backbone("yolo11n.yaml").exists()
