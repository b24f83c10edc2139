"""`ls-active-yolo models`: export writes the live model and its metadata as the route hands
them out; promote and rollback export ONNX when the project opted in."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from backend.cli import main
from backend.config import Settings
from backend.models.handout import live_file
from backend.models.registry import ONNX_EXPORT, ModelRegistry
from tests.conftest import EXPORTED_PROJECT, ExportedModel, unexported_version

P = EXPORTED_PROJECT


@pytest.fixture
def model_dir(
    exported_model: ExportedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A copy of the exported MODEL_DIR, named by the environment the CLI reads."""
    folder = exported_model.copy(tmp_path / "models")
    for name in ("EXPORT_ONNX", "MODEL_PATH", "LABEL_STUDIO_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_export_writes_the_live_model_and_its_metadata(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(model_dir)
    assert main(["models", "export", "--project", str(P)]) == 0
    written = tmp_path / "project-3-v1.pt"
    assert written.read_bytes() == registry.get(P, "v1").weights.read_bytes()
    meta = json.loads((tmp_path / "project-3-v1.pt.json").read_text())
    assert meta == live_file(registry, P, "pt").metadata
    assert meta["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert f"wrote {written.name}" in capsys.readouterr().out

    out = tmp_path / "device" / "model.onnx"
    assert (
        main(["models", "export", "--project", str(P), "--format", "onnx", "--out", str(out)]) == 0
    )
    meta = json.loads(out.with_name("model.onnx.json").read_text())
    assert meta["onnx"]["passed"] is True and meta["version"] == "v1"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == meta["sha256"]

    assert main(["models", "export", "--project", "4"]) == 2
    assert "project 4 has no live model" in capsys.readouterr().err


def test_export_makes_a_missing_onnx_and_an_opted_in_rollback_exports(
    model_dir: Path,
    tmp_path: Path,
    image_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = ModelRegistry(model_dir)
    v1 = registry.get(P, "v1")
    unexported_version(registry)
    cache = Settings(model_dir=model_dir).paths.project(P).image_cache
    shutil.copytree(image_root / "shapes", cache)  # the project's cached training images

    assert main(["models", "promote", "--project", str(P), "v2"]) == 0  # EXPORT_ONNX off
    assert "ONNX export" not in capsys.readouterr().out
    assert ONNX_EXPORT not in registry.get(P, "v2").meta

    out = tmp_path / "v2.onnx"
    assert (
        main(["models", "export", "--project", str(P), "--format", "onnx", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr()
    assert "v2 ONNX export: checked on 6 images" in printed.err
    v2 = registry.get(P, "v2")
    assert v2.onnx is not None and v2.meta[ONNX_EXPORT]["check"]["images_from"] == "image-cache"
    assert out.read_bytes() == v2.onnx.read_bytes()

    monkeypatch.setenv("EXPORT_ONNX", "1")  # v1 has its export already: nothing runs again
    assert main(["models", "rollback", "--project", str(P)]) == 0
    printed = capsys.readouterr()
    assert "v1 ONNX export: checked on 6 images" in printed.out
    assert registry.live(P).version == "v1"
    assert registry.get(P, "v1").meta[ONNX_EXPORT] == v1.meta[ONNX_EXPORT]
