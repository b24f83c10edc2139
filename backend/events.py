"""The durable store of webhook events and training runs: SQLite in WAL mode under MODEL_DIR.

The webhook handler appends and returns (Label Studio waits 1 s); the trainer drains events
later and records each run. Every gunicorn worker opens the same file; WAL lets readers and
one writer overlap. An event is marked processed only by a finished run, so a crash at any
point leaves it pending and the next run picks it up.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from backend.errors import storage_error
from backend.files import open_database

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
CREATE TABLE IF NOT EXISTS training_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    max_event_id INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    version TEXT,
    promoted INTEGER,
    details TEXT NOT NULL DEFAULT '{}'
);
"""


class RunState(StrEnum):
    """A training run's state (stored as its value). Every state but RUNNING is final."""

    RUNNING = "running"
    PROMOTED = "promoted"
    REJECTED = "rejected"  # trained and registered, but the gate kept the live model
    SKIPPED = "skipped"  # too little data
    FAILED = "failed"  # events stay pending; retried with back-off
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its process died; events stay pending
    QUEUED = "queued"  # never stored: a launcher's answer while an RQ worker has the run


FINISHED_STATES = frozenset(RunState) - {RunState.RUNNING, RunState.QUEUED}
REQUESTED = "requested"  # the reason of a run someone asked for (START_TRAINING)
# Where Label Studio's webhook payloads carry the project's training switch, and how many of a
# project's newest events are searched for it (a bound: each is a JSON parse, every poll).
_SWITCH_PATH = "$.project.min_annotations_to_start_training"
_SWITCH_LOOKBACK = 50


@dataclass(frozen=True)
class Event:
    """One recorded webhook event."""

    id: int
    received_at: float
    project_id: int
    action: str
    annotation_ids: tuple[int, ...]
    payload: dict[str, Any] | None  # None from `pending`, which never reads payloads
    processed_at: float | None


class EventStore:
    """Append-only log of webhook events; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA)

    def append(
        self, project_id: int, action: str, annotation_ids: tuple[int, ...], payload: dict[str, Any]
    ) -> int:
        """Store one event durably (committed before returning); returns its id.

        Raises StorageError (StorageFull on a full disk) when it cannot be stored."""
        row = (
            time.time(),
            project_id,
            action,
            json.dumps(list(annotation_ids)),
            json.dumps(payload, separators=(",", ":")),
        )
        try:
            with self._lock, self._db:
                cursor = self._db.execute(
                    "INSERT INTO events (received_at, project_id, action, annotation_ids,"
                    " payload) VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                return int(cursor.lastrowid or 0)
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, "storing the webhook event") from exc

    def pending(self, project_id: int | None = None) -> list[Event]:
        """Unprocessed events, oldest first (all projects, or one), without their payloads:
        the scheduler polls this every few seconds and needs only ids and actions."""
        return self._select("processed_at IS NULL", project_id, with_payload=False)

    def since(self, after_id: int, limit: int) -> list[Event]:
        """Up to `limit` events (all projects, processed or not) after `after_id`, oldest
        first, with their payloads: for readers that keep their own place in the log."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_at, project_id, action, annotation_ids, payload,"
                " processed_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (int(after_id), int(limit)),
            ).fetchall()
        return [_event(row) for row in rows]

    def history(self, project_id: int) -> list[Event]:
        """Every event of a project, processed or not, oldest first."""
        return self._select("1 = 1", project_id, with_payload=True)

    def _select(self, condition: str, project_id: int | None, with_payload: bool) -> list[Event]:
        payload = "payload" if with_payload else "NULL"
        query = (
            "SELECT id, received_at, project_id, action, annotation_ids, "
            f"{payload}, processed_at FROM events WHERE {condition}"
        )
        params: tuple[Any, ...] = ()
        if project_id is not None:
            query += " AND project_id = ?"
            params = (project_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return [_event(row) for row in rows]

    def label_studio_trains_every(self, project_id: int) -> int | None:
        """Label Studio's training switch for the project, as its newest event that carries it
        says: the project's `min_annotations_to_start_training` (0: off; N: LS itself sends
        START_TRAINING at every N-th annotation), or None when none of the project's last
        `_SWITCH_LOOKBACK` events carries it. Every annotation event and LS's START_TRAINING
        carry the project object, so the switch is read where it arrives, free of API calls.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT json_extract(payload, ?) FROM (SELECT payload FROM events"
                " WHERE project_id = ? ORDER BY id DESC LIMIT ?)"
                " WHERE json_type(payload, ?) = 'integer' LIMIT 1",
                (_SWITCH_PATH, project_id, _SWITCH_LOOKBACK, _SWITCH_PATH),
            ).fetchone()
        return None if row is None else max(0, int(row[0]))

    def annotations_created_since(self, project_id: int, since: float) -> int:
        """How many distinct annotations the project's events received after `since` (unix
        seconds) created."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(DISTINCT created.value) FROM events, json_each(events.annotation_ids)"
                " AS created WHERE project_id = ? AND received_at > ?"
                " AND action IN ('ANNOTATION_CREATED', 'ANNOTATIONS_CREATED')",
                (project_id, since),
            ).fetchone()
        return int(row[0])

    def pending_counts(self) -> dict[int, int]:
        """Unprocessed events per project."""
        with self._lock:
            rows = self._db.execute(
                "SELECT project_id, COUNT(*) FROM events WHERE processed_at IS NULL"
                " GROUP BY project_id"
            ).fetchall()
        return {int(p): int(n) for p, n in rows}

    def start_run(self, project_id: int, reason: str, max_event_id: int) -> int:
        """Record a training run as running; returns its id."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO training_runs (project_id, reason, state, max_event_id, started_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (project_id, reason, RunState.RUNNING.value, max_event_id, time.time()),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        state: RunState,
        details: dict[str, Any],
        version: str | None = None,
        consume_events: bool = True,
    ) -> None:
        """Close a run; when `consume_events`, its events (id <= max_event_id) are processed."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state!r} is not a finished run state")
        state = RunState(state)
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT project_id, max_event_id FROM training_runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no training run {run_id}")
            now = time.time()
            self._db.execute(
                "UPDATE training_runs SET state = ?, finished_at = ?, version = ?, promoted = ?,"
                " details = ? WHERE id = ?",
                (
                    state.value,
                    now,
                    version,
                    int(state == RunState.PROMOTED),
                    json.dumps(details),
                    run_id,
                ),
            )
            if consume_events:
                self._db.execute(
                    "UPDATE events SET processed_at = ? WHERE project_id = ? AND id <= ?"
                    " AND processed_at IS NULL",
                    (now, row[0], row[1]),
                )

    def interrupt_stale_runs(self) -> int:
        """Runs still 'running' after a restart died with their process: mark them."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "UPDATE training_runs SET state = ?, finished_at = ? WHERE state = ?",
                (RunState.INTERRUPTED.value, time.time(), RunState.RUNNING.value),
            )
            return cursor.rowcount

    def runs(self, project_id: int, limit: int = 20) -> list[dict[str, Any]]:
        """The project's latest runs, newest first."""
        return self._runs("project_id = ? ORDER BY id DESC LIMIT ?", (project_id, limit))

    def run(self, project_id: int, run_id: int) -> dict[str, Any] | None:
        """One run of the project, as `runs` gives it, or None."""
        found = self._runs("project_id = ? AND id = ?", (project_id, run_id))
        return found[0] if found else None

    def _runs(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, project_id, reason, state, max_event_id, started_at, finished_at,"
                f" version, promoted, details FROM training_runs WHERE {where}",
                params,
            ).fetchall()
        keys = ("id", "project_id", "reason", "state", "max_event_id", "started_at")
        keys += ("finished_at", "version", "promoted")
        return [
            {
                **dict(zip(keys, row[:9], strict=True)),
                "state": RunState(row[3]),
                "details": json.loads(row[9]),
            }
            for row in rows
        ]

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
        payload=None if row[5] is None else json.loads(row[5]),
        processed_at=row[6],
    )
