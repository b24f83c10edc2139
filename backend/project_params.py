"""A project's extra params: the ML backend's "extra params" from Label Studio's model
settings (training recipe and queue keys), saved at /setup and read by the trainer and the
ranker, which run in other processes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backend.errors import storage_error
from backend.files import atomic_write
from backend.layout import ModelDir


def load_project_params(paths: ModelDir, project_id: int) -> dict[str, Any]:
    """The project's saved extra params, or {}."""
    path = paths.project(project_id).params
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def save_project_params(paths: ModelDir, project_id: int, params: Mapping[str, Any]) -> bool:
    """Store the params when they changed; returns whether they did. StorageError if the
    disk refuses."""
    if load_project_params(paths, project_id) == dict(params):
        return False
    try:
        atomic_write(
            paths.project(project_id).params, json.dumps(dict(params), sort_keys=True).encode()
        )
    except OSError as exc:
        raise storage_error(exc, "saving the project's extra params") from exc
    return True
