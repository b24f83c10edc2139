"""The durable webhook event store: SQLite in WAL mode under MODEL_DIR.

The webhook handler appends and returns (Label Studio waits 1 s); the trainer drains events
later. Every gunicorn worker opens the same file; WAL lets readers and one writer overlap.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    project_id INTEGER NOT NULL,
    action TEXT NOT NULL,
    annotation_ids TEXT NOT NULL,
    payload TEXT NOT NULL,
    processed_at REAL
);
CREATE INDEX IF NOT EXISTS events_pending ON events (project_id, processed_at);
"""


@dataclass(frozen=True)
class Event:
    """One recorded webhook event."""

    id: int
    received_at: float
    project_id: int
    action: str
    annotation_ids: tuple[int, ...]
    payload: dict[str, Any]
    processed_at: float | None


class EventStore:
    """Append-only log of webhook events; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def append(
        self, project_id: int, action: str, annotation_ids: tuple[int, ...], payload: dict[str, Any]
    ) -> int:
        """Store one event durably (committed before returning); returns its id."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO events (received_at, project_id, action, annotation_ids, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    time.time(),
                    project_id,
                    action,
                    json.dumps(list(annotation_ids)),
                    json.dumps(payload, separators=(",", ":")),
                ),
            )
            return int(cursor.lastrowid or 0)

    def pending(self, project_id: int | None = None) -> list[Event]:
        """Unprocessed events, oldest first (all projects, or one)."""
        query = "SELECT * FROM events WHERE processed_at IS NULL"
        params: tuple[Any, ...] = ()
        if project_id is not None:
            query += " AND project_id = ?"
            params = (project_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return [_event(row) for row in rows]

    def pending_counts(self) -> dict[int, int]:
        """Unprocessed events per project."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project_id, COUNT(*) FROM events WHERE processed_at IS NULL"
                " GROUP BY project_id"
            ).fetchall()
        return {int(p): int(n) for p, n in rows}

    def mark_processed(self, event_ids: list[int]) -> None:
        """Mark events as consumed (by a finished training job)."""
        if not event_ids:
            return
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE events SET processed_at = ? WHERE id = ?",
                [(time.time(), i) for i in event_ids],
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _event(row: tuple[Any, ...]) -> Event:
    return Event(
        id=int(row[0]),
        received_at=float(row[1]),
        project_id=int(row[2]),
        action=str(row[3]),
        annotation_ids=tuple(json.loads(row[4])),
        payload=json.loads(row[5]),
        processed_at=row[6],
    )
