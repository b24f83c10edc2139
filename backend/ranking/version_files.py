"""File names per model version for the ranking's stores (embedding index, detection cache,
stored ranking).

Each store keeps one file per project and model version in a folder `backend.layout` names;
data of two models is never comparable, so opening the live version's file removes the
others of the same kind.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def version_file_stem(model_version: str) -> str:
    """A file-name-safe stem for a model version: the version itself when it is safe.

    Other strings (spaces, slashes, very long) become a sanitised prefix plus a short hash, so
    two different versions never share a file.
    """
    if not isinstance(model_version, str) or not model_version:
        raise ValueError(f"model_version must be a non-empty string, got {model_version!r}")
    if _SAFE_NAME.fullmatch(model_version) and not model_version.endswith("."):
        return model_version
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version).strip("._-")[:60] or "version"
    digest = hashlib.sha256(model_version.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned}-{digest}"


def version_file(folder: Path, model_version: str, suffix: str) -> Path:
    """`folder/<stem><suffix>`: the file of one kind (`suffix`) for `model_version`."""
    return Path(folder) / f"{version_file_stem(model_version)}{suffix}"


def remove_other_versions(folder: Path, suffix: str, keep_version: str) -> list[Path]:
    """Delete the files of kind `suffix` in `folder` but `keep_version`'s; returns them, sorted."""
    keep = version_file(folder, keep_version, suffix)
    if not keep.parent.is_dir():
        return []
    removed = []
    for path in sorted(keep.parent.iterdir()):
        if path.name.endswith(suffix) and path.name != keep.name:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
