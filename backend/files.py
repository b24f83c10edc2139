"""Crash-safe file writes, shared by the registry, the ranker, the index and the caches.

A reader (another gunicorn worker, a training child, a restart after a crash) must see a file
whole or not at all: write to a unique temporary name beside it, flush it to disk, then
`os.replace` it into place and flush the folder's entry.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> Path:
    """Replace `path` with `data` atomically and durably; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return path


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (what makes a rename durable), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
