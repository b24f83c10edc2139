"""A project's live model as a file to run elsewhere: its weights (.pt) or its checked ONNX
export (.onnx), with what a device needs to use it and to know it got the right one.

The HTTP route (`GET /models/{project_id}/live`, `.../live/meta`) and the CLI
(`ls-active-yolo models export`) hand out the same file with the same metadata. An ONNX
file is handed out only when its export passed its check (`ModelVersion.onnx`) and its bytes
still hash to the recorded SHA-256; nothing here exports (a web request does not run a
multi-second export: see `training.onnx_export`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import BadRequest, ModelError, NotFound
from backend.files import file_sha256
from backend.models.registry import DISPLAY_THRESHOLD, ONNX_EXPORT, ModelRegistry, ModelVersion

logger = logging.getLogger(__name__)

FORMATS = ("pt", "onnx")


@dataclass(frozen=True)
class LiveFile:
    """The file to send and its metadata (the JSON `GET .../live/meta` answers)."""

    path: Path
    metadata: dict[str, Any]

    @property
    def filename(self) -> str:
        return str(self.metadata["filename"])

    @property
    def sha256(self) -> str:
        return str(self.metadata["sha256"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])


def live_file(registry: ModelRegistry, project_id: int, fmt: str) -> LiveFile:
    """The project's live model in format `fmt` ("pt" or "onnx"). BadRequest for another
    format; NotFound when the project has no live model, or its live model no checked ONNX
    export; ModelError when the ONNX file no longer matches its record."""
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    live = registry.live(project_id)
    if live is None:
        raise NotFound(f"project {project_id} has no live model (nothing was promoted yet)")
    record = live.meta.get(ONNX_EXPORT)
    if fmt == "pt":
        path, size = live.weights, (live.meta.get("params") or {}).get("image_size")
    else:
        onnx = live.onnx
        if onnx is None or not isinstance(record, dict):
            raise NotFound(_no_onnx(live))
        path, size = onnx, record.get("image_size")
    digest = _sha256(path, *_stamp(path))
    if fmt == "onnx" and isinstance(record, dict) and digest != record.get("sha256"):
        logger.error(
            "project=%s version=%s model.onnx does not hash to its record", project_id, live.version
        )
        raise ModelError(f"project {project_id}'s {live.version} model.onnx no longer matches")
    metadata = {
        "project": int(project_id),
        "version": live.version,
        "format": fmt,
        "filename": f"project-{int(project_id)}-{live.version}.{fmt}",
        "bytes": path.stat().st_size,
        "sha256": digest,
        "classes": list(live.meta.get("classes") or []),
        "image_size": size if isinstance(size, int) else None,
        "display_threshold": live.meta.get(DISPLAY_THRESHOLD),
        "metrics": live.meta.get("metrics"),
        "created_at": live.meta.get("created_at"),
        "promoted_at": _promoted_at(registry, project_id, live.version),
        "onnx": record if fmt == "onnx" else None,
    }
    return LiveFile(path, metadata)


def _no_onnx(live: ModelVersion) -> str:
    record = live.meta.get(ONNX_EXPORT)
    where = f"project {live.project_id}'s live model {live.version}"
    if not isinstance(record, dict):
        return (
            f"{where} has no ONNX export (EXPORT_ONNX or the project's export_onnx param turns "
            "it on for the next promotion; `ls-active-yolo models export --format onnx` "
            "exports it now)"
        )
    return f"{where} has no checked ONNX export: {record.get('error') or 'file missing'}"


def _promoted_at(registry: ModelRegistry, project_id: int, name: str) -> float | None:
    times = [h.get("at") for h in registry.history(project_id) if h.get("version") == name]
    return times[-1] if times else None


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, _mtime_ns: int, _size: int) -> str:
    """A version's files never change; the stamp makes a changed file a new key anyway."""
    return file_sha256(path)
