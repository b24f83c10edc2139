"""The model registry: immutable version folders and an atomically swapped live pointer.

Layout under MODEL_DIR:
    projects/<project_id>/versions/<vN>/weights.pt   the model
    projects/<project_id>/versions/<vN>/meta.json    parent, data counts, metrics, durations
    projects/<project_id>/LIVE                       the live version's name ("v7")
A version folder never changes once written; promotion rewrites LIVE with `os.replace`, so a
reader sees the old or the new version, never half of one.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class ModelVersion:
    """One stored model version of a project."""

    project_id: int
    version: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"


class ModelRegistry:
    """Reads (and, for the trainer, writes) versions under MODEL_DIR/projects."""

    def __init__(self, model_dir: Path) -> None:
        self.root = model_dir / "projects"

    def project_dir(self, project_id: int) -> Path:
        return self.root / str(int(project_id))

    def live(self, project_id: int) -> ModelVersion | None:
        """The project's live version, or None if nothing was promoted yet."""
        pointer = self.project_dir(project_id) / "LIVE"
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
        path = self.project_dir(project_id) / "versions" / name
        meta_file = path / "meta.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
        return ModelVersion(project_id=int(project_id), version=name, path=path, meta=meta)

    def projects(self) -> list[int]:
        """Project ids that have a registry folder."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())
