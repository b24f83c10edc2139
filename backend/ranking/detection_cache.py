"""Detections per task, as compact arrays, kept on disk between rankings of one model version.

Re-ranking with the same model then runs the detector only on new or changed tasks. One file
per project and model version, next to the stored ranking (`backend.layout`:
projects/<id>/ranking/<version>.detections.npz), holding every task's boxes concatenated:

    signature     the inference setup (model version, image size, confidence floor, classes)
                  as sorted JSON; a file written under another signature is ignored
    task_ids      (t,) int64, ascending
    refs          (t,) str, each task's image reference when it was predicted
    sizes         (t, 2) int64, width and height
    offsets       (t + 1,) int64: task i's boxes are rows offsets[i]:offsets[i + 1] of
    xyxy          (k, 4) float32 pixels
    class_ids     (k,) int64
    conf          (k,) float32
    class_scores  (k, n_classes) float32
    flip          (t,) float32 flip disagreement per task, NaN where not computed (files
                  written before it existed lack it: NaN for all)
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.labelstudio.images import LoadedImage
from backend.layout import ModelDir
from backend.models.detector import Box, ImageDetections
from backend.ranking.version_files import remove_other_versions, version_file

logger = logging.getLogger(__name__)

_SUFFIX = ".detections.npz"

Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def detection_cache_path(model_dir: Path, project_id: int, model_version: str) -> Path:
    """The stored detections of `model_version`."""
    return version_file(
        ModelDir(Path(model_dir)).project(project_id).ranking, model_version, _SUFFIX
    )


def remove_other_caches(model_dir: Path, project_id: int, keep_version: str) -> list[Path]:
    """Delete the project's detection caches of every version but `keep_version`."""
    folder = ModelDir(Path(model_dir)).project(project_id).ranking
    removed = remove_other_versions(folder, _SUFFIX, keep_version)
    for path in removed:
        logger.debug("removed %s (older model version)", path)
    return removed


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One task's detections as arrays: what ranking needs, cheap to store and reload."""

    ref: str  # the task's image reference when it was predicted
    width: int
    height: int
    xyxy: Float32Array  # (k, 4) pixels
    class_ids: IntArray  # (k,)
    conf: Float32Array  # (k,)
    class_scores: Float32Array  # (k, n_classes)
    # strategies.consistency.flip_disagreement, NaN until a ranking asks for it
    flip_disagreement: float = float("nan")

    @classmethod
    def from_detections(
        cls, ref: str, image: LoadedImage, found: ImageDetections, n_classes: int
    ) -> ImageRecord:
        boxes = found.boxes
        return cls(
            ref=ref,
            width=int(image.width),
            height=int(image.height),
            xyxy=np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float32).reshape(
                -1, 4
            ),
            class_ids=np.array([b.class_id for b in boxes], dtype=np.int64),
            conf=np.array([b.conf for b in boxes], dtype=np.float32),
            class_scores=(
                np.stack([np.asarray(b.class_scores, dtype=np.float32) for b in boxes])
                if boxes
                else np.zeros((0, n_classes), dtype=np.float32)
            ),
        )

    def boxes(self, min_conf: float = 0.0) -> tuple[Box, ...]:
        """The detections at or above `min_conf` as `Box`es (for Label Studio regions)."""
        boxes = []
        for i in np.flatnonzero(self.conf >= min_conf):
            x1, y1, x2, y2 = (float(v) for v in self.xyxy[i])
            cls, conf = int(self.class_ids[i]), float(self.conf[i])
            boxes.append(Box(x1, y1, x2, y2, cls, conf, self.class_scores[i]))
        return tuple(boxes)


class DetectionCache:
    """Detections per task id for one model version and inference setup, kept on disk.

    `signature` (model version, image size, confidence floor, ...) is stored with the data; a
    file written under another signature is ignored. Build with `DetectionCache.open(...)` for
    a project's cache, or `DetectionCache(path, signature)` for any file.
    """

    def __init__(self, path: Path, signature: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.signature = json.dumps(dict(signature), sort_keys=True)
        self._records: dict[int, ImageRecord] = {}
        self._dirty = False
        if self.path.is_file():
            self._load()

    @classmethod
    def open(
        cls,
        model_dir: Path,
        project_id: int,
        model_version: str,
        signature: Mapping[str, Any],
        *,
        prune_other_versions: bool = True,
    ) -> DetectionCache:
        """The project's cache of `model_version`; by default deletes other versions' files."""
        if prune_other_versions:
            remove_other_caches(model_dir, project_id, model_version)
        return cls(detection_cache_path(model_dir, project_id, model_version), signature)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, task_id: int, ref: str) -> ImageRecord | None:
        """The cached record of a task, or None when absent or its image reference changed."""
        record = self._records.get(int(task_id))
        return record if record is not None and record.ref == ref else None

    def put(self, task_id: int, record: ImageRecord) -> None:
        self._records[int(task_id)] = record
        self._dirty = True

    def retain(self, task_ids: set[int]) -> None:
        """Forget tasks that no longer exist in the project."""
        gone = [t for t in self._records if t not in task_ids]
        for task_id in gone:
            del self._records[task_id]
        self._dirty = self._dirty or bool(gone)

    def save(self) -> None:
        """Write atomically when something changed."""
        if not self._dirty:
            return
        ids = sorted(self._records)
        records = [self._records[t] for t in ids]
        n_classes = max((r.class_scores.shape[1] for r in records), default=0)
        counts = np.array([r.class_ids.shape[0] for r in records], dtype=np.int64)
        arrays: dict[str, Any] = {
            "signature": np.array(self.signature),
            "task_ids": np.array(ids, dtype=np.int64),
            "refs": np.array([r.ref for r in records], dtype=np.str_),
            "sizes": np.array([[r.width, r.height] for r in records], dtype=np.int64).reshape(
                -1, 2
            ),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "xyxy": _stack([r.xyxy for r in records], (0, 4), np.float32),
            "class_ids": _stack([r.class_ids for r in records], (0,), np.int64),
            "conf": _stack([r.conf for r in records], (0,), np.float32),
            "class_scores": _stack([r.class_scores for r in records], (0, n_classes), np.float32),
            "flip": np.array([r.flip_disagreement for r in records], dtype=np.float32),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp.npz")
        try:
            np.savez(temp, **arrays)
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)
        self._dirty = False

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["signature"]) != self.signature:
                    logger.info("detection cache %s is for another setup: ignored", self.path)
                    return
                offsets = data["offsets"]
                xyxy, class_ids = data["xyxy"], data["class_ids"]
                conf, scores = data["conf"], data["class_scores"]
                n = data["task_ids"].shape[0]
                flip = data["flip"] if "flip" in data.files else np.full(n, np.nan)
                for i, (task_id, ref, size) in enumerate(
                    zip(data["task_ids"], data["refs"], data["sizes"], strict=True)
                ):
                    lo, hi = int(offsets[i]), int(offsets[i + 1])
                    self._records[int(task_id)] = ImageRecord(
                        ref=str(ref),
                        width=int(size[0]),
                        height=int(size[1]),
                        xyxy=xyxy[lo:hi],
                        class_ids=class_ids[lo:hi],
                        conf=conf[lo:hi],
                        class_scores=scores[lo:hi],
                        flip_disagreement=float(flip[i]),
                    )
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("ignoring unreadable detection cache %s: %s", self.path, exc)
            self._records.clear()


def _stack(parts: list[npt.NDArray[Any]], empty: tuple[int, ...], dtype: type) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty, dtype=dtype)
