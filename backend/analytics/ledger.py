"""The annotation ledger: per annotation, what the annotator did to the prediction it
started from, and how long it took. SQLite in WAL mode under MODEL_DIR (`layout`), one row
per Label Studio annotation id, so recording an annotation again (an update, a backfill after
the webhook) replaces its row instead of counting it twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.analytics.matching import Edit
from backend.errors import storage_error
from backend.files import open_database

EDITS: tuple[str, ...] = tuple(e.value for e in Edit)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS annotations (
    annotation_id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    annotator TEXT,
    prediction_id INTEGER,
    model_version TEXT,
    {", ".join(f"{edit} INTEGER NOT NULL" for edit in EDITS)},
    lead_time REAL,
    queue_position INTEGER,
    cancelled INTEGER NOT NULL,
    annotated_at REAL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_project ON annotations (project_id, annotation_id);
CREATE TABLE IF NOT EXISTS boxes (
    annotation_id INTEGER NOT NULL,
    project_id INTEGER NOT NULL,
    model_version TEXT NOT NULL,
    side TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    hit INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS boxes_annotation ON boxes (annotation_id);
CREATE INDEX IF NOT EXISTS boxes_report
    ON boxes (project_id, side, model_version, label, score, hit);
CREATE TABLE IF NOT EXISTS sync_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COLUMNS = (
    "annotation_id",
    "project_id",
    "task_id",
    "annotator",
    "prediction_id",
    "model_version",
    *EDITS,
    "lead_time",
    "queue_position",
    "cancelled",
    "annotated_at",
    "recorded_at",
)


SHOWN, SUBMITTED = "shown", "submitted"
NO_SCORE = -1.0  # stored for a shown box whose prediction gave it no confidence


@dataclass(frozen=True)
class LedgerBox:
    """One box of an annotation's comparison: a shown (predicted) box with its confidence and
    whether the annotator kept it, or a submitted box (what a precision-recall curve counts
    as the truth)."""

    side: str  # SHOWN or SUBMITTED
    label: str
    score: float | None = None  # shown boxes: the prediction's confidence, if it had one
    hit: bool = False  # shown boxes: kept with its label (accepted or adjusted)


@dataclass(frozen=True)
class AnnotationRecord:
    """One annotation's row. `model_version`/`prediction_id` are None when the annotation
    did not start from a prediction (every box then counts as drawn); `cancelled` is a
    skipped task (no boxes, its lead_time still spent)."""

    annotation_id: int
    project_id: int
    task_id: int
    annotator: str | None
    prediction_id: int | None
    model_version: str | None
    edits: Mapping[str, int]  # Edit value -> count, every kind present
    lead_time: float | None
    queue_position: int | None = None
    cancelled: bool = False
    annotated_at: float | None = None
    recorded_at: float = field(default_factory=time.time)
    boxes: tuple[LedgerBox, ...] = ()

    def __post_init__(self) -> None:
        if set(self.edits) != set(EDITS) or any(n < 0 for n in self.edits.values()):
            raise ValueError(f"edits must count each of {', '.join(EDITS)} (>= 0)")


class AnnotationLedger:
    """The ledger file; safe across threads and processes (WAL, one writer at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_database(path, _SCHEMA)

    def record(self, records: Iterable[AnnotationRecord]) -> int:
        """Store records, each replacing an earlier row of its annotation; returns how many.

        Raises StorageError (StorageFull on a full disk) when they cannot be stored."""
        return self._write(records, (), None)

    def records(self, project_id: int) -> list[AnnotationRecord]:
        """The project's rows, oldest annotation id first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM annotations WHERE project_id = ?"
                " ORDER BY annotation_id",
                (int(project_id),),
            ).fetchall()
            box_rows = self._db.execute(
                "SELECT annotation_id, side, label, score, hit FROM boxes WHERE project_id = ?"
                " ORDER BY rowid",
                (int(project_id),),
            ).fetchall()
        boxes: dict[int, list[LedgerBox]] = {}
        for annotation_id, side, label, score, hit in box_rows:
            kept = None if score == NO_SCORE else score
            boxes.setdefault(annotation_id, []).append(LedgerBox(side, label, kept, bool(hit)))
        return [replace(_record(row), boxes=tuple(boxes.get(row[0], ()))) for row in rows]

    def box_table(self, project_id: int) -> dict[str, npt.NDArray[Any]]:
        """The project's boxes, for precision-recall curves, counted by SQLite (so 100k
        annotations read in a few thousand rows): the shown boxes per model version of their
        prediction ("" where none), label and confidence rounded to 0.001 (NaN where none),
        with how many of them annotators kept (`hits`) of how many (`boxes`); and the
        submitted boxes per model version and label (`truth_version`, `truth_label`,
        `truth_count`)."""
        with self._lock:
            shown = self._db.execute(
                "SELECT model_version, label, ROUND(score, 3), SUM(hit), COUNT(*) FROM boxes"
                " WHERE project_id = ? AND side = ? GROUP BY 1, 2, 3",
                (int(project_id), SHOWN),
            ).fetchall()
            truth = self._db.execute(
                "SELECT model_version, label, COUNT(*) FROM boxes"
                " WHERE project_id = ? AND side = ? GROUP BY 1, 2",
                (int(project_id), SUBMITTED),
            ).fetchall()
        bins = np.array(shown, dtype=object).reshape(-1, 5)
        counts = np.array(truth, dtype=object).reshape(-1, 3)
        scores = bins[:, 2].astype(np.float64)
        return {
            "model_version": bins[:, 0].astype(str),
            "label": bins[:, 1].astype(str),
            "score": np.where(scores == NO_SCORE, np.nan, scores),
            "hits": bins[:, 3].astype(np.int64),
            "boxes": bins[:, 4].astype(np.int64),
            "truth_version": counts[:, 0].astype(str),
            "truth_label": counts[:, 1].astype(str),
            "truth_count": counts[:, 2].astype(np.int64),
        }

    def table(self, project_id: int) -> dict[str, npt.NDArray[Any]]:
        """The columns the report reads, for the project's rows (oldest annotation id first),
        one numpy array each: annotator and model_version ("" where unknown or none, as in
        `box_table`), the edit counts, lead_time (NaN where unknown) and cancelled. Fast for
        100k rows."""
        names = ("annotator", "model_version", *EDITS, "lead_time", "cancelled")
        with self._lock:
            rows = self._db.execute(
                "SELECT COALESCE(annotator, ''), COALESCE(model_version, ''),"
                f" {', '.join(EDITS)}, COALESCE(lead_time, -1.0), cancelled"
                " FROM annotations WHERE project_id = ? ORDER BY annotation_id",
                (int(project_id),),
            ).fetchall()
        rows_array = np.array(rows, dtype=object).reshape(-1, len(names))
        table: dict[str, npt.NDArray[Any]] = {
            "annotator": rows_array[:, 0].astype(str),
            "model_version": rows_array[:, 1].astype(str),
        }
        for i, edit in enumerate(EDITS, start=2):
            table[edit] = rows_array[:, i].astype(np.int64)
        lead = rows_array[:, -2].astype(np.float64)
        table["lead_time"] = np.where(lead < 0, np.nan, lead)
        table["cancelled"] = rows_array[:, -1].astype(bool)
        return table

    def projects(self) -> list[int]:
        """The projects with rows."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT project_id FROM annotations").fetchall()
        return sorted(int(row[0]) for row in rows)

    def event_cursor(self) -> int:
        """The id of the last webhook event the ledger has taken in (0: none)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM sync_state WHERE name = 'event_cursor'"
            ).fetchone()
        return 0 if row is None else int(row[0])

    def record_events(
        self, records: Iterable[AnnotationRecord], forgotten: Iterable[int], cursor: int
    ) -> int:
        """Store `records`, drop the `forgotten` (deleted) annotation ids and move the event
        cursor to `cursor`, in one transaction: after a crash the events are taken in again.
        Returns how many records were stored."""
        return self._write(records, forgotten, cursor)

    def _write(
        self, records: Iterable[AnnotationRecord], forgotten: Iterable[int], cursor: int | None
    ) -> int:
        written = list(records)
        rows = [_row(r) for r in written]
        marks = ", ".join("?" for _ in _COLUMNS)
        try:
            with self._lock, self._db:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO annotations ({', '.join(_COLUMNS)}) VALUES ({marks})",
                    rows,
                )
                gone = [(r.annotation_id,) for r in written] + [(int(i),) for i in forgotten]
                self._db.executemany("DELETE FROM boxes WHERE annotation_id = ?", gone)
                self._db.executemany(
                    "DELETE FROM annotations WHERE annotation_id = ?",
                    [(int(i),) for i in forgotten],
                )
                # project and version copied in, so the report reads boxes without a join
                self._db.executemany(
                    "INSERT INTO boxes (annotation_id, project_id, model_version, side, label,"
                    " score, hit) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.annotation_id,
                            r.project_id,
                            r.model_version or "",
                            b.side,
                            b.label,
                            NO_SCORE if b.score is None else b.score,
                            int(b.hit),
                        )
                        for r in written
                        for b in r.boxes
                    ],
                )
                if cursor is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO sync_state (name, value)"
                        " VALUES ('event_cursor', ?)",
                        (int(cursor),),
                    )
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc, "recording annotations") from exc
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(record: AnnotationRecord) -> tuple[Any, ...]:
    return (
        record.annotation_id,
        record.project_id,
        record.task_id,
        record.annotator,
        record.prediction_id,
        record.model_version,
        *(int(record.edits[e]) for e in EDITS),
        record.lead_time,
        record.queue_position,
        int(record.cancelled),
        record.annotated_at,
        record.recorded_at,
    )


def _record(row: tuple[Any, ...]) -> AnnotationRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    return AnnotationRecord(
        annotation_id=values["annotation_id"],
        project_id=values["project_id"],
        task_id=values["task_id"],
        annotator=values["annotator"],
        prediction_id=values["prediction_id"],
        model_version=values["model_version"],
        edits={e: int(values[e]) for e in EDITS},
        lead_time=values["lead_time"],
        queue_position=values["queue_position"],
        cancelled=bool(values["cancelled"]),
        annotated_at=values["annotated_at"],
        recorded_at=values["recorded_at"],
    )
