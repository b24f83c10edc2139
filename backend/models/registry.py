"""The model registry: immutable version folders and an atomically swapped live pointer.

Per project (paths in backend.layout): `versions/<vN>/` holds weights.pt and meta.json
(parent, data counts, metrics, durations); `LIVE` names the live version ("v7"). A version
folder never changes once written; promotion rewrites LIVE with `os.replace`, so a reader
sees the old or the new version, never half of one. The one addition: after a promotion,
the version's ONNX export (`record_onnx`): model.onnx moved in whole, then meta.json's
`onnx_export` record rewritten whole; its weights and every other meta key stay as written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.files import atomic_write, fsync_path
from backend.layout import ModelDir, ProjectPaths, VersionPaths

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)$")
DISPLAY_THRESHOLD = "display_threshold"  # meta key: the version's calibrated display threshold
ONNX_EXPORT = "onnx_export"  # meta key: the ONNX export's record (training/onnx_export.py)
_PROJECT_DIR = re.compile(r"^[0-9]{1,19}$")
MAX_PROJECT_ID = 2**63 - 1  # Label Studio's ids are positive 64-bit signed integers (SQLite's)


@dataclass(frozen=True)
class ModelVersion:
    """One stored model version of a project."""

    project_id: int
    version: str
    path: Path
    weights: Path
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def display_threshold(self) -> float | None:
        """The confidence from which its boxes are shown, calibrated when it was trained
        (`training.calibration`); None for a version trained before calibration existed."""
        value = self.meta.get(DISPLAY_THRESHOLD)
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
            return float(value)
        return None

    @property
    def onnx(self) -> Path | None:
        """The version's ONNX export, only when its record says it passed its check."""
        record = self.meta.get(ONNX_EXPORT)
        path = VersionPaths(self.path).onnx
        if isinstance(record, dict) and record.get("passed") is True and path.is_file():
            return path
        return None


class ModelRegistry:
    """Reads (and, for the trainer, writes) versions under MODEL_DIR/projects."""

    def __init__(self, model_dir: Path) -> None:
        self._paths = ModelDir(model_dir)

    def _project(self, project_id: int) -> ProjectPaths:
        return self._paths.project(project_id)

    def live(self, project_id: int) -> ModelVersion | None:
        """The project's live version, or None if nothing was promoted yet."""
        pointer = self._project(project_id).live_pointer
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        version = self.get(project_id, name)
        if not version.weights.is_file():
            logger.error("project=%s LIVE names %s but its weights are missing", project_id, name)
            return None
        return version

    def get(self, project_id: int, name: str) -> ModelVersion:
        """A version by name (without checking that it exists)."""
        if not _VERSION.match(name):
            raise ValueError(f"invalid version name {name!r} (expected v<number>)")
        folder = self._project(project_id).version(name)
        meta = json.loads(folder.meta.read_text(encoding="utf-8")) if folder.meta.is_file() else {}
        return ModelVersion(
            project_id=int(project_id),
            version=name,
            path=folder.root,
            weights=folder.weights,
            meta=meta,
        )

    def versions(self, project_id: int) -> list[ModelVersion]:
        """Every stored version of the project, oldest first."""
        folder = self._project(project_id).versions
        if not folder.is_dir():
            return []
        names = sorted(
            (p.name for p in folder.iterdir() if _VERSION.match(p.name)),
            key=lambda n: int(n[1:]),
        )
        return [self.get(project_id, n) for n in names]

    def create_version(self, project_id: int, weights: Path, meta: dict[str, Any]) -> ModelVersion:
        """Store `weights` and `meta` as the next version (v1, v2, ...), atomically.

        The folder is written under a temporary name and renamed into place, so a crash
        never leaves a half-written version; concurrent writers get distinct numbers.
        """
        paths = self._project(project_id)
        paths.versions.mkdir(parents=True, exist_ok=True)
        staging = paths.staging(uuid.uuid4().hex)
        staging.root.mkdir()
        try:
            shutil.copyfile(weights, staging.weights)
            fsync_path(staging.weights)
            number = 1 + max((int(v.version[1:]) for v in self.versions(project_id)), default=0)
            while True:
                name = f"v{number}"
                _write_json(staging.meta, {**meta, "version": name})
                try:
                    os.rename(staging.root, paths.version(name).root)
                except OSError:  # taken by a concurrent writer
                    if not paths.version(name).root.exists():
                        raise
                    number += 1
                    continue
                fsync_path(paths.versions)
                return self.get(project_id, name)
        finally:
            if staging.root.exists():
                shutil.rmtree(staging.root, ignore_errors=True)

    def promote(
        self, project_id: int, name: str, reason: str, rolled_back: str | None = None
    ) -> ModelVersion:
        """Make `name` the live version: one atomic `os.replace` of the LIVE pointer."""
        version = self.get(project_id, name)
        if not version.weights.is_file():
            raise FileNotFoundError(f"project {project_id} has no version {name}")
        paths = self._project(project_id)
        atomic_write(paths.live_pointer, f"{name}\n".encode())
        with paths.promotion_history.open("a", encoding="utf-8") as history:
            entry = {"version": name, "at": time.time(), "reason": reason}
            if rolled_back:
                entry["rolled_back"] = rolled_back
            history.write(json.dumps(entry) + "\n")
        logger.info("project=%s promoted %s (%s)", project_id, name, reason)
        return version

    def record_onnx(
        self, project_id: int, name: str, record: dict[str, Any], onnx: Path | None
    ) -> ModelVersion:
        """Add a version's ONNX export after the fact: `onnx` (a finished file on the same disk,
        or None when the export failed) is moved in as model.onnx, then `record` is written as
        meta.json's ONNX_EXPORT key. Each step replaces a whole file, so a crash between them
        leaves a file without a passing record, which `ModelVersion.onnx` ignores."""
        folder = self._project(project_id).version(name)
        if not folder.meta.is_file():
            raise FileNotFoundError(f"project {project_id} has no version {name}")
        if onnx is None:
            folder.onnx.unlink(missing_ok=True)
        else:
            os.replace(onnx, folder.onnx)
        fsync_path(folder.root)
        meta = json.loads(folder.meta.read_text(encoding="utf-8"))
        meta[ONNX_EXPORT] = record
        atomic_write(folder.meta, json.dumps(meta, indent=2, sort_keys=True).encode())
        return self.get(project_id, name)

    def history(self, project_id: int) -> list[dict[str, Any]]:
        """Promotions, oldest first."""
        path = self._project(project_id).promotion_history
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def rollback(self, project_id: int) -> ModelVersion:
        """Promote the version that was live before the current one."""
        live = self.live(project_id)
        if live is None:
            raise LookupError(f"project {project_id} has no live version to roll back")
        history = self.history(project_id)
        skipped = {live.version} | {h["rolled_back"] for h in history if "rolled_back" in h}
        earlier = [h["version"] for h in history if h["version"] not in skipped]
        if not earlier:
            raise LookupError(f"project {project_id} has no earlier promoted version")
        return self.promote(
            project_id,
            earlier[-1],
            reason=f"rollback from {live.version}",
            rolled_back=live.version,
        )

    def projects(self) -> list[int]:
        """Project ids that have a registry folder (other names there are ignored)."""
        root = self._paths.projects
        if not root.is_dir():
            return []
        ids = (int(p.name) for p in root.iterdir() if _PROJECT_DIR.match(p.name))
        return sorted(i for i in ids if 1 <= i <= MAX_PROJECT_ID)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    fsync_path(path)
