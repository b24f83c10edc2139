"""File names per model version, shared by the ranking's stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.ranking.version_files import remove_other_versions, version_file, version_file_stem


def test_version_file_stem() -> None:
    assert version_file_stem("v12") == "v12"
    assert version_file_stem("shapes-1a2b3c4d") == "shapes-1a2b3c4d"
    odd = version_file_stem("my model/../x")
    assert "/" not in odd and " " not in odd and odd.startswith("my_model_")
    assert odd != version_file_stem("my model/../y")
    assert version_file_stem("x" * 300) != "x" * 300
    with pytest.raises(ValueError):
        version_file_stem("")


def test_version_file_joins_folder_stem_and_suffix(tmp_path: Path) -> None:
    assert version_file(tmp_path, "v3", ".json") == tmp_path / "v3.json"
    odd = version_file(tmp_path, "a/b", ".detections.npz")
    assert odd.parent == tmp_path and odd.name == version_file_stem("a/b") + ".detections.npz"


def test_remove_other_versions_deletes_only_other_versions_of_one_kind(tmp_path: Path) -> None:
    names = ["v1.json", "v2.json", "v1.detections.npz", ".lock", ".v2.json.ab12.tmp", "v10.json"]
    for name in names:
        (tmp_path / name).write_text("x")

    removed = remove_other_versions(tmp_path, ".json", "v2")

    assert removed == [tmp_path / "v1.json", tmp_path / "v10.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".lock", ".v2.json.ab12.tmp", "v1.detections.npz", "v2.json"]
    )


def test_remove_other_versions_without_a_folder_removes_nothing(tmp_path: Path) -> None:
    assert remove_other_versions(tmp_path / "missing", ".json", "v1") == []
    with pytest.raises(ValueError):
        remove_other_versions(tmp_path / "missing", ".json", "")
