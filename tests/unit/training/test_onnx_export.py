"""The ONNX export after a promotion: a real export passes its check against PyTorch, a
mismatching or broken one is recorded and never handed out while the version stays live, and
nothing is exported unless the project opted in."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from backend.config import Settings
from backend.errors import NotFound
from backend.files import file_sha256
from backend.models.handout import live_file
from backend.models.registry import ONNX_EXPORT, ModelRegistry
from backend.project_params import save_project_params
from backend.training import onnx_export
from backend.training.onnx_export import (
    CHECK_IOU,
    SCORE_TOLERANCE,
    BoxTally,
    check_images,
    export_promoted,
    export_wanted,
)
from tests.conftest import EXPORTED_PROJECT, ExportedModel, unexported_version

P = EXPORTED_PROJECT

WriteOnnx = Callable[[Path], object]  # writes an exporter's ONNX file at the path it is given


@pytest.fixture
def replace_exporter(monkeypatch: pytest.MonkeyPatch) -> Callable[[WriteOnnx], None]:
    """Stand in for ultralytics' exporter: `write(path)` makes the ONNX file it returns."""

    def install(write: WriteOnnx) -> None:
        def export(_weights: Path, size: int | None, workdir: Path) -> tuple[Path, int]:
            path = workdir / "weights.onnx"
            write(path)
            return path, size or 160

        monkeypatch.setattr(onnx_export, "export_onnx", export)

    return install


def test_a_promoted_version_gets_an_onnx_that_passes_its_check(
    exported_model: ExportedModel,
) -> None:
    record = exported_model.record
    assert record["passed"] is True and "error" not in record
    check = record["check"]
    assert check["images"] == 6 and check["unreadable"] == 0  # image_root's shapes
    assert check["boxes_torch"] > 0
    assert check["boxes_torch"] == check["boxes_onnx"] == check["matched"]
    assert check["unmatched"] == 0
    assert CHECK_IOU <= check["min_iou"] <= check["mean_iou"] <= 1.0
    assert 0.0 <= check["max_score_diff"] <= SCORE_TOLERANCE
    assert record["image_size"] == 160
    assert record["input"] == {"name": "images", "shape": [1, 3, 160, 160]}
    assert record["output"]["name"] == "output0"
    assert record["output"]["shape"][:2] == [1, 4 + 3]  # box, then one score per class
    assert record["packages"]["onnxruntime"] and record["export_s"] > 0

    version = ModelRegistry(exported_model.model_dir).live(P)
    assert version is not None and version.meta[ONNX_EXPORT] == record
    assert version.onnx == version.path / "model.onnx"
    assert file_sha256(version.onnx) == record["sha256"]
    assert version.onnx.stat().st_size == record["bytes"]
    assert sorted(p.name for p in version.path.iterdir()) == [
        "meta.json",
        "model.onnx",
        "weights.pt",
    ]
    project = exported_model.model_dir / "projects" / str(P)
    assert not list(project.glob(".export-*"))  # the scratch folder is gone
    # offline: every requirement the exporter checked was already installed, so it had
    # nothing to install (YOLO_AUTOINSTALL=0 would also have refused)
    assert exported_model.requirement_checks
    assert all(met for _, met in exported_model.requirement_checks)


def test_a_version_exported_once_is_not_exported_again(
    exported_model: ExportedModel,
    tmp_path: Path,
    replace_exporter: Callable[[WriteOnnx], None],
) -> None:
    settings = Settings(model_dir=exported_model.copy(tmp_path / "models"))

    def refuse(_path: Path) -> None:
        raise AssertionError("exported again")

    replace_exporter(refuse)
    registry = ModelRegistry(settings.model_dir)
    again = export_promoted(settings, registry, P, "v1", tmp_path / "none", True)
    assert again == exported_model.record


@pytest.fixture
def promoted_v2(exported_model: ExportedModel, tmp_path: Path) -> tuple[Settings, ModelRegistry]:
    """A copy of the exported MODEL_DIR whose v2 (v1's weights again) is live, not exported."""
    settings = Settings(model_dir=exported_model.copy(tmp_path / "models"))
    registry = ModelRegistry(settings.model_dir)
    registry.promote(P, unexported_version(registry).version, reason="test")
    return settings, registry


def test_a_mismatching_export_fails_its_check_and_the_version_stays_live(
    promoted_v2: tuple[Settings, ModelRegistry],
    tmp_path: Path,
    image_root: Path,
    replace_exporter: Callable[[WriteOnnx], None],
) -> None:
    settings, registry = promoted_v2
    good = registry.get(P, "v1").onnx
    assert good is not None

    def skewed(path: Path) -> None:
        """A real export whose weights came out 3% off (an operator exported wrongly)."""
        model = onnx.load(str(good))
        kernels = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
        for tensor in model.graph.initializer:
            if tensor.name in kernels:
                values = numpy_helper.to_array(tensor) * np.float32(1.03)
                tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
        onnx.save(model, str(path))

    replace_exporter(skewed)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for picture in sorted((image_root / "shapes").glob("*.jpg"))[:2]:
        shutil.copyfile(picture, pictures / picture.name)
    record = export_promoted(settings, registry, P, "v2", pictures, True)

    assert record is not None and record["passed"] is False
    assert record["error"].startswith("check failed: ")
    assert record["check"]["images"] == 2
    assert record["check"]["max_score_diff"] > SCORE_TOLERANCE
    live = registry.live(P)
    assert live is not None and live.version == "v2"  # the promotion stands
    assert live.meta[ONNX_EXPORT] == record and live.onnx is None
    assert not (live.path / "model.onnx").exists()
    with pytest.raises(NotFound, match="no checked ONNX export: check failed"):
        live_file(registry, P, "onnx")
    assert live_file(registry, P, "pt").version == "v2"


def test_an_export_that_breaks_is_recorded_not_raised(
    promoted_v2: tuple[Settings, ModelRegistry],
    image_root: Path,
    replace_exporter: Callable[[WriteOnnx], None],
) -> None:
    settings, registry = promoted_v2
    replace_exporter(lambda path: path.write_bytes(b"\x08\x07\x12\x04half"))  # cut-off protobuf
    killed = settings.paths.project(P).export_scratch("killed-mid-way")
    killed.mkdir()
    (killed / "weights.onnx").write_bytes(b"half")
    record = export_promoted(settings, registry, P, "v2", image_root / "shapes", True)

    assert record is not None and record["passed"] is False
    assert "check" not in record and record["error"]
    live = registry.live(P)
    assert live is not None and live.version == "v2" and live.onnx is None
    assert json.loads((live.path / "meta.json").read_text())[ONNX_EXPORT] == record
    assert not list((settings.model_dir / "projects" / str(P)).glob(".export-*"))


def test_nothing_is_exported_unless_the_project_opted_in(
    promoted_v2: tuple[Settings, ModelRegistry], image_root: Path
) -> None:
    settings, registry = promoted_v2
    assert export_promoted(settings, registry, P, "v2", image_root / "shapes", False) is None
    assert ONNX_EXPORT not in registry.get(P, "v2").meta
    assert not (registry.get(P, "v2").path / "model.onnx").exists()

    assert export_wanted(settings, P) is False  # EXPORT_ONNX is off by default
    on = Settings(model_dir=settings.model_dir, export_onnx=True)
    assert export_wanted(on, P) is True
    save_project_params(settings.paths, P, {"export_onnx": False})
    assert export_wanted(on, P) is False  # the project's param overrides the setting
    save_project_params(settings.paths, P, {"export_onnx": "true"})
    assert export_wanted(settings, P) is True


def _boxes(*rows: tuple[float, float, float, float, float, int]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def test_the_tally_pairs_boxes_of_one_class_at_the_required_iou() -> None:
    tally = BoxTally(conf=0.05)
    torch_boxes = _boxes(
        (0, 0, 100, 100, 0.9, 0),  # matched exactly
        (200, 200, 300, 300, 0.8, 1),  # its partner moved: IoU 0.90 < 0.95
        (400, 400, 450, 450, 0.7, 2),  # its partner has another class
        (500, 500, 520, 520, 0.055, 0),  # alone, but just over conf: borderline
        (600, 600, 620, 620, 0.5, 0),  # alone
    )
    onnx_boxes = _boxes(
        (0, 0, 100, 100, 0.9, 0),
        (200, 200, 300, 290, 0.8, 1),
        (400, 400, 450, 450, 0.7, 1),
    )
    tally.add(torch_boxes, onnx_boxes, 0.002)
    tally.add(_boxes(), _boxes(), 0.0)
    figures = tally.figures(1.0, 0.5)
    assert (figures.images, figures.boxes_torch, figures.boxes_onnx) == (2, 5, 3)
    assert figures.matched == 1
    assert figures.borderline == 1
    assert figures.unmatched == 5  # the moved pair (2), the relabeled pair (2), the lone box
    assert figures.min_iou == pytest.approx(0.9) and figures.max_score_diff == 0.002
    assert figures.mean_iou == pytest.approx(0.95)
    assert not figures.passed
    assert figures.failure() == "5 boxes without a same-class partner at IoU >= 0.95"


def test_a_check_passes_only_on_images_with_agreeing_scores() -> None:
    empty = BoxTally(conf=0.25).figures(0.0, 0.0)
    assert not empty.passed and empty.failure() == "no image to check on"
    nothing_found = BoxTally(conf=0.25)
    nothing_found.add(_boxes(), _boxes(), SCORE_TOLERANCE)
    assert nothing_found.figures(0.0, 0.0).passed  # the scores agree: no box either way
    drifted = BoxTally(conf=0.25)
    drifted.add(_boxes(), _boxes(), 0.2)
    assert drifted.figures(0.0, 0.0).failure() == (
        f"class scores differ by up to 0.2000 (tolerance {SCORE_TOLERANCE})"
    )


def test_check_images_samples_the_folder_evenly(tmp_path: Path) -> None:
    for i in range(120):
        (tmp_path / f"{i:03d}.jpg").touch()
    (tmp_path / "labels.txt").touch()
    picked = check_images(tmp_path, limit=50)
    assert [p.name for p in picked] == [f"{i * 120 // 50:03d}.jpg" for i in range(50)]
    assert len(check_images(tmp_path, limit=200)) == 120
    assert check_images(tmp_path / "missing") == []
