"""OS plumbing every process shares: crash-safe writes, file locks, parent-death signals, the
SQLite files under MODEL_DIR.

A reader (another gunicorn worker, a training child, a restart after a crash) must see a file
whole or not at all: `atomic_write` writes to a unique temporary name beside it, flushes it to
disk, then `os.replace`s it into place and flushes the folder's entry.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A SQLite file that every process opens (web workers, the trainer, the CLI): WAL, so
    readers and one writer overlap; waits up to 30 s for a lock; `schema` applied (it must
    be idempotent: CREATE ... IF NOT EXISTS). Callers serialise their threads' use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


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


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (what makes a rename durable), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(path: Path, wait: Callable[[], bool] | None = None) -> Iterator[bool]:
    """Hold an exclusive flock on `path` for the block; yields whether it was acquired.

    Without `wait`, one try. With it, `wait()` is called between tries (it sleeps, and
    returns False to give up). The lock goes with the process, so a killed holder frees it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait is None or not wait():
                    yield False
                    return
                continue
            yield True
            return
    finally:
        os.close(fd)  # releases the lock


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> None:
    """In a child process: have Linux send `sig` when the thread that started it ends, so a
    killed server leaves no orphan trainer, work horse or test server (no-op elsewhere)."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
