"""Shared fixtures: synthetic data, one tiny model trained per session (and exported to ONNX
once), app and client."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from backend.config import Settings
from backend.models.offline import prepare_ultralytics
from backend.models.registry import ONNX_EXPORT, ModelRegistry, ModelVersion
from backend.serving.app import create_app
from backend.training.onnx_export import export_promoted
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


EXPORTED_PROJECT = 3


@dataclass(frozen=True)
class ExportedModel:
    """A MODEL_DIR whose project EXPORTED_PROJECT has the tiny model live as v1, exported to
    ONNX and checked on image_root's shapes; `requirement_checks`: each requirement check the
    ultralytics exporter made, with whether it found everything installed."""

    model_dir: Path
    record: dict[str, Any]
    requirement_checks: list[tuple[Any, bool]]

    def copy(self, target: Path) -> Path:
        """A copy of the MODEL_DIR to change (returns `target`)."""
        shutil.copytree(self.model_dir, target)
        return target


def unexported_version(registry: ModelRegistry) -> ModelVersion:
    """EXPORTED_PROJECT's v1 (weights and meta) stored again as a new version, not exported
    (nor promoted)."""
    v1 = registry.get(EXPORTED_PROJECT, "v1")
    meta = {k: v for k, v in v1.meta.items() if k not in (ONNX_EXPORT, "version")}
    return registry.create_version(EXPORTED_PROJECT, v1.weights, meta)


@pytest.fixture(scope="session")
def exported_model(
    tmp_path_factory: pytest.TempPathFactory, trained_weights: Path, image_root: Path
) -> ExportedModel:
    """The tiny model promoted and exported to ONNX once per session (a few seconds)."""
    from ultralytics.engine import exporter

    settings = Settings(model_dir=tmp_path_factory.mktemp("exported") / "models")
    registry = ModelRegistry(settings.model_dir)
    meta = {
        "classes": list(CLASSES),
        "params": {"image_size": 160},
        "metrics": {"map50": 0.9, "map50_95": 0.6},
        "display_threshold": 0.3,
        "created_at": 1.0,
    }
    version = registry.create_version(EXPORTED_PROJECT, trained_weights, meta)
    registry.promote(EXPORTED_PROJECT, version.version, reason="test")
    checks: list[tuple[Any, bool]] = []
    real_check = exporter.check_requirements

    def observed(requirements: Any, *args: Any, **kwargs: Any) -> bool:
        met = bool(real_check(requirements, *args, **kwargs))
        checks.append((requirements, met))
        return met

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exporter, "check_requirements", observed)
        record = export_promoted(
            settings, registry, EXPORTED_PROJECT, version.version, image_root / "shapes", True
        )
    assert record is not None
    return ExportedModel(settings.model_dir, record, checks)
