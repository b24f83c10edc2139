"""Model registry: monotonic versions, atomic promotion, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.models.registry import ModelRegistry


def _weights(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"w-{content.decode()}.pt"
    path.write_bytes(content)
    return path


def test_versions_are_monotonic_and_immutable(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.live(1) is None
    v1 = registry.create_version(1, _weights(tmp_path, b"a"), {"metrics": {"map50": 0.5}})
    v2 = registry.create_version(1, _weights(tmp_path, b"b"), {})
    other = registry.create_version(2, _weights(tmp_path, b"c"), {})
    assert (v1.version, v2.version, other.version) == ("v1", "v2", "v1")
    assert v1.meta == {"metrics": {"map50": 0.5}, "version": "v1"}
    assert v1.weights.read_bytes() == b"a"
    assert [v.version for v in registry.versions(1)] == ["v1", "v2"]
    assert not list((tmp_path / "models" / "projects" / "1").glob(".staging-*"))
    assert registry.live(1) is None  # creating is not promoting


def test_promote_and_rollback_step_back(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for content in (b"a", b"b", b"c"):
        version = registry.create_version(5, _weights(tmp_path, content), {})
        registry.promote(5, version.version, reason="test")
    assert registry.live(5).version == "v3"
    assert registry.rollback(5).version == "v2"
    assert registry.live(5).version == "v2"
    assert registry.rollback(5).version == "v1"
    with pytest.raises(LookupError, match="no earlier"):
        registry.rollback(5)
    assert [h["version"] for h in registry.history(5)] == ["v1", "v2", "v3", "v2", "v1"]


def test_bad_names_and_missing_versions(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ValueError, match="invalid version"):
        registry.get(1, "../../etc")
    with pytest.raises(FileNotFoundError):
        registry.promote(1, "v9", reason="test")
    with pytest.raises(LookupError, match="no live version"):
        registry.rollback(1)
