"""Small thumbnails of a project's images, kept on disk between rankings.

Why: the encoder trains and embeds on THUMB_SIZE px thumbnails and the near-duplicate check
compares them pixel by pixel; loading and decoding every image again for each ranking would
cost more than both. One compressed file per project, keyed by task id and image reference
(a task whose image changed gets a new thumbnail), replaced atomically.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from backend.encoder.contrastive import THUMB_SIZE, U8Array
from backend.files import atomic_write

logger = logging.getLogger(__name__)


def thumbnail(pixels: np.ndarray, *, bgr: bool = True) -> U8Array:
    """(THUMB_SIZE, THUMB_SIZE, 3) uint8 RGB of a whole (h, w, 3) uint8 picture (squashed to
    a square: the near-duplicate check compares whole pictures, aspect included)."""
    rgb = pixels[:, :, ::-1] if bgr else pixels
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    return np.asarray(image.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR))


class ThumbnailCache:
    """Thumbnails by task id, each valid for the image reference it was made from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[int, tuple[str, U8Array]] = {}
        self._dirty = False
        if path.is_file():
            self._load()

    def get(self, task_id: int, ref: str) -> U8Array | None:
        entry = self._entries.get(task_id)
        return entry[1] if entry is not None and entry[0] == ref else None

    def put(self, task_id: int, ref: str, thumb: U8Array) -> None:
        self._entries[task_id] = (ref, thumb)
        self._dirty = True

    def retain(self, refs: Mapping[int, str]) -> None:
        """Forget tasks that are gone or whose image reference changed."""
        stale = [t for t, (ref, _) in self._entries.items() if refs.get(t) != ref]
        for task_id in stale:
            del self._entries[task_id]
        self._dirty = self._dirty or bool(stale)

    def save(self) -> None:
        if not self._dirty:
            return
        ids = sorted(self._entries)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            ids=np.array(ids, dtype=np.int64),
            refs=np.array([self._entries[i][0] for i in ids], dtype=str),
            pixels=np.stack([self._entries[i][1] for i in ids])
            if ids
            else np.zeros((0, THUMB_SIZE, THUMB_SIZE, 3), np.uint8),
        )
        atomic_write(self.path, buffer.getvalue())
        self._dirty = False

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as stored:
                ids, refs, pixels = stored["ids"], stored["refs"], stored["pixels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            logger.warning("thumbnail cache %s unreadable (%s); rebuilding it", self.path, exc)
            return
        if pixels.shape[1:] != (THUMB_SIZE, THUMB_SIZE, 3):
            return
        self._entries = {int(i): (str(r), p) for i, r, p in zip(ids, refs, pixels, strict=True)}
