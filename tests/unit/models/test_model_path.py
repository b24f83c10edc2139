"""A label config's `model_path` serves weights only from under MODELS_ROOT.

Weights are code (ultralytics unpickles them), so each test first builds the attack that used
to work, then checks the real Flask app refuses it: a pickle outside MODELS_ROOT never runs,
and a refusal says nothing about whether the named file exists.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
import torch
from flask.testing import FlaskClient

from backend.config import Settings
from backend.errors import LabelConfigError
from backend.models.detector import OUTSIDE_ROOT, weights_under_root
from backend.serving.app import create_app
from devkit.datagen import CLASSES

REFUSED = {"error": "unsupported_label_config", "message": OUTSIDE_ROOT}


class _Payload:
    """Unpickling this writes `marker`: what a hostile checkpoint could run as the server."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": _Payload(marker)}, path)
    return path


def _config(model_path: str) -> str:
    labels = "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="label" toName="image" model_path={quoteattr(model_path)}>'
        f"{labels}</RectangleLabels></View>"
    )


def _setup(client: FlaskClient, model_path: str) -> tuple[int, dict]:
    response = client.post("/setup", json={"project": "7.1", "schema": _config(model_path)})
    return response.status_code, response.get_json()


def _predict(client: FlaskClient, model_path: str, image: Path) -> tuple[int, dict]:
    body = {
        "tasks": [{"id": 1, "data": {"image": str(image)}}],
        "project": "7.1",
        "label_config": _config(model_path),
    }
    response = client.post("/predict", json=body)
    return response.status_code, response.get_json()


def _expected_version(weights: Path) -> str:
    return f"{weights.stem}-{hashlib.sha256(weights.read_bytes()).hexdigest()[:8]}"


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models-root"
    root.mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to MODELS_ROOT, as writable by an attacker as /tmp."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def image(image_root: Path) -> Path:
    return next(iter(sorted((image_root / "shapes").glob("*.jpg"))))


@pytest.fixture
def rooted_client(settings: Settings, models_root: Path) -> FlaskClient:
    return create_app(replace(settings, models_root=models_root)).test_client()


def test_the_hostile_checkpoint_is_live(outside: Path) -> None:
    """The payload used below really runs when loaded the way ultralytics loads weights."""
    marker = outside / "control-marker"
    path = _hostile_checkpoint(outside / "control.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("with_root", [True, False], ids=["MODELS_ROOT set", "no MODELS_ROOT"])
def test_a_pickle_outside_models_root_never_runs(
    settings: Settings, models_root: Path, outside: Path, image: Path, with_root: bool
) -> None:
    marker = outside / "marker"
    evil = _hostile_checkpoint(outside / "evil.pt", marker)
    client = create_app(
        replace(settings, models_root=models_root if with_root else None)
    ).test_client()
    for status, body in (_setup(client, str(evil)), _predict(client, str(evil), image)):
        assert status == 422
        assert body["error"] == "unsupported_label_config"
        if with_root:
            assert body == REFUSED
        else:
            assert "no MODELS_ROOT" in body["message"]
    assert not marker.exists()


def test_refusals_do_not_reveal_whether_a_file_exists(
    rooted_client: FlaskClient, models_root: Path, outside: Path, image: Path
) -> None:
    (outside / "real.pt").write_bytes(b"exists")
    names = [
        "/etc/shadow",  # answered "shadow-<hash prefix>" before
        "/etc/passwd",  # a 500 before
        "/nonexistent",
        str(outside / "real.pt"),
        str(outside / "missing.pt"),
        "../outside/real.pt",
        "../outside/missing.pt",
        "sub/../../outside/real.pt",
        f"{models_root}/../outside/real.pt",
        str(models_root),
        ".",
    ]
    answers = {name: _setup(rooted_client, name) for name in names}
    answers |= {f"predict {name}": _predict(rooted_client, name, image) for name in names}
    assert answers == {name: (422, REFUSED) for name in answers}


def test_a_symlink_in_models_root_pointing_outside_is_refused(
    rooted_client: FlaskClient, models_root: Path, outside: Path, image: Path
) -> None:
    marker = outside / "marker"
    _hostile_checkpoint(outside / "evil.pt", marker)
    (models_root / "linked.pt").symlink_to(outside / "evil.pt")
    (models_root / "dir").symlink_to(outside, target_is_directory=True)
    (models_root / "dangling.pt").symlink_to(outside / "missing.pt")
    for name in ("linked.pt", str(models_root / "linked.pt"), "dir/evil.pt", "dangling.pt"):
        assert _setup(rooted_client, name) == (422, REFUSED), name
        assert _predict(rooted_client, name, image) == (422, REFUSED), name
    assert not marker.exists()


def test_weights_under_models_root_serve(
    rooted_client: FlaskClient, models_root: Path, trained_weights: Path, image: Path
) -> None:
    weights = models_root / "pinned" / "detector.pt"
    weights.parent.mkdir()
    shutil.copyfile(trained_weights, weights)
    (models_root / "current.pt").symlink_to(weights)  # a link inside the root is fine
    version = _expected_version(weights)
    assert version.startswith("detector-")
    for name in (str(weights), "pinned/detector.pt", "pinned/../pinned/detector.pt"):
        assert _setup(rooted_client, name) == (200, {"model_version": version}), name
    assert _setup(rooted_client, "current.pt") == (200, {"model_version": version})
    status, body = _predict(rooted_client, "pinned/detector.pt", image)
    assert status == 200, body
    (result,) = body["results"]
    assert result["model_version"] == version
    assert result["result"], "the trained model should find a shape"


def test_bad_files_under_models_root_give_clear_errors(
    rooted_client: FlaskClient, models_root: Path, image: Path
) -> None:
    (models_root / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"epoch": 3}, models_root / "not-yolo.pt")
    (models_root / "model.onnx").write_bytes(b"onnx")
    (models_root / "folder.pt").mkdir()

    for name in ("junk.pt", "not-yolo.pt"):  # weights that are no YOLO checkpoint
        status, body = _predict(rooted_client, name, image)
        assert status == 503, body
        assert body["error"] == "model_unavailable"
        assert body["message"].startswith(f"cannot load model {models_root / name}: ")

    assert _setup(rooted_client, "model.onnx") == (422, REFUSED)  # .pt only
    for name in ("missing.pt", "folder.pt"):
        message = f"model_path {name!r}: no weights file at {name} under MODELS_ROOT"
        expected = (422, {"error": "unsupported_label_config", "message": message})
        assert _setup(rooted_client, name) == expected
        assert _predict(rooted_client, name, image) == expected


def test_weights_under_root_resolves_inside_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "w.pt").write_bytes(b"w")
    assert weights_under_root("a/w.pt", root) == root / "a" / "w.pt"
    assert weights_under_root(str(root / "a" / "w.pt"), root) == root / "a" / "w.pt"
    assert weights_under_root("./a/../a/w.pt", root) == root / "a" / "w.pt"
    # ".." is collapsed before the file system is asked: a missing folder cannot be probed
    assert weights_under_root("a/none/../w.pt", root) == root / "a" / "w.pt"
    for name in ("", "a/w.pt\0", "\ud800.pt", "../root/a/w.pt/..", "a", "/a/w.pt", "a/W.PT"):
        with pytest.raises(LabelConfigError) as info:
            weights_under_root(name, root)
        assert str(info.value) == OUTSIDE_ROOT, name
    with pytest.raises(LabelConfigError, match="no MODELS_ROOT"):
        weights_under_root("a/w.pt", None)
