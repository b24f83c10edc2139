"""Shared fixtures: synthetic data, one tiny model trained per session, app and client."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from backend.config import Settings
from backend.models.offline import prepare_ultralytics
from backend.serving.app import create_app
from devkit.datagen import CLASSES, write_images
from devkit.demo_model import train_shapes_model

BOX_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)


@pytest.fixture(scope="session")
def ultralytics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ultralytics")
    prepare_ultralytics(folder)
    return folder


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory: pytest.TempPathFactory, ultralytics_dir: Path) -> Path:
    """yolo11n trained on the synthetic shapes (about a minute on 2 cores), once per session."""
    return train_shapes_model(tmp_path_factory.mktemp("tiny-model"), ultralytics_dir)


@pytest.fixture(scope="session")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images a test may reference by local path: synthetic shapes plus ultralytics' bus.jpg."""
    from ultralytics import ASSETS

    root = tmp_path_factory.mktemp("images")
    write_images(root / "shapes", 6, seed=123)
    shutil.copyfile(Path(ASSETS) / "bus.jpg", root / "bus.jpg")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.new("RGB", (64, 48), (128, 128, 128)).save(root / "blank.png")  # nothing to find
    return root


@pytest.fixture
def settings(tmp_path: Path, trained_weights: Path, image_root: Path) -> Settings:
    return Settings(
        model_dir=tmp_path / "models",
        model_path=trained_weights,
        image_root=image_root,
        image_size=160,
        predict_batch=4,
        training_enabled=False,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[object]:
    app = create_app(settings)
    with app.test_client() as test_client:
        yield test_client
