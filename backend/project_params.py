"""A project's extra params: the ML backend's "extra params" from Label Studio's model
settings (training recipe and queue keys), saved at /setup and read by the trainer and the
ranker, which run in other processes; and the training recipe they resolve to
(`TrainParams`), which both read (the ranker for the validation share, its audit slice)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.config import Settings
from backend.errors import BadRequest, storage_error
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


@dataclass(frozen=True)
class TrainParams:
    """The recipe of one run: settings, overridden per project by the ML backend's extra params."""

    epochs: int
    image_size: int
    batch: int
    val_percent: int
    min_images: int
    tolerance: float
    patience: int
    min_epochs: int
    time_limit: float
    warm_start: bool
    export_onnx: bool  # a promoted version also gets a checked model.onnx

    # extra_params key -> (field, type, lowest, highest)
    OVERRIDES = {  # noqa: RUF012  (a class constant, not a dataclass field)
        "train_epochs": ("epochs", int, 1, 1000),
        "train_patience": ("patience", int, 0, 1000),
        "train_min_epochs": ("min_epochs", int, 0, 1000),
        "train_time_limit": ("time_limit", float, 0.0, 86400.0),
        "train_warm_start": ("warm_start", bool, False, True),
        "train_image_size": ("image_size", int, 32, 4096),
        "train_batch": ("batch", int, 1, 1024),
        "train_val_percent": ("val_percent", int, 1, 90),
        "train_min_images": ("min_images", int, 2, 1_000_000),
        "promote_tolerance": ("tolerance", float, 0.0, 1.0),
        "export_onnx": ("export_onnx", bool, False, True),
    }

    @classmethod
    def resolve(cls, settings: Settings, overrides: Mapping[str, Any]) -> TrainParams:
        """Settings defaults with the project's overrides applied; BadRequest on bad values."""
        values: dict[str, Any] = {
            "epochs": settings.train_epochs,
            "image_size": settings.train_image_size,
            "batch": settings.train_batch,
            "val_percent": settings.train_val_percent,
            "min_images": settings.train_min_images,
            "tolerance": settings.promote_tolerance,
            "patience": settings.train_patience,
            "min_epochs": settings.train_min_epochs,
            "time_limit": settings.train_time_limit,
            "warm_start": settings.train_warm_start,
            "export_onnx": settings.export_onnx,
        }
        values.update(validate_overrides(overrides))
        return cls(**values)


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Training keys of an extra_params object, checked; unknown keys are left for others."""
    checked: dict[str, Any] = {}
    for key, (name, kind, lo, hi) in TrainParams.OVERRIDES.items():
        if key not in overrides:
            continue
        raw = overrides[key]
        try:
            if kind is bool:
                value = _boolean(raw)
            elif isinstance(raw, bool):
                raise ValueError
            else:
                value = kind(raw)
            if kind is int and float(raw) != value:
                raise ValueError
        except (TypeError, ValueError, OverflowError):  # Infinity, 10**400
            raise BadRequest(f"extra_params.{key} must be a {kind.__name__}, got {raw!r}") from None
        if not lo <= value <= hi:
            raise BadRequest(f"extra_params.{key} must be between {lo} and {hi}, got {value}")
        checked[name] = value
    return checked


def _boolean(raw: Any) -> bool:
    """true/false, also as the strings "true"/"false"/"1"/"0"; ValueError otherwise."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0"):
        return raw.strip().lower() in ("true", "1")
    raise ValueError(raw)
