"""The annotation ledger: one row per annotation id, replaced on update, kept in a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.analytics.ledger import EDITS, AnnotationLedger, AnnotationRecord


def record(
    annotation_id: int, project: int = 1, drawn: int = 0, **fields: object
) -> AnnotationRecord:
    edits = {e: 0 for e in EDITS} | {"drawn": drawn}
    values: dict = dict(
        annotation_id=annotation_id,
        project_id=project,
        task_id=100 + annotation_id,
        annotator="7",
        prediction_id=None,
        model_version=None,
        edits=edits,
        lead_time=12.5,
        recorded_at=1.0,
    )
    return AnnotationRecord(**(values | fields))  # type: ignore[arg-type]


def test_recording_again_replaces_and_rows_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "annotations.sqlite3"
    ledger = AnnotationLedger(path)
    assert ledger.record([record(1, drawn=2), record(2), record(3, project=2)]) == 3
    ledger.record([record(1, drawn=5, model_version="v2", queue_position=4, cancelled=False)])
    ledger.close()

    again = AnnotationLedger(path)
    rows = again.records(1)
    assert [r.annotation_id for r in rows] == [1, 2]
    assert rows[0] == record(1, drawn=5, model_version="v2", queue_position=4)
    assert [r.annotation_id for r in again.records(2)] == [3]


def test_events_move_the_cursor_with_their_rows(tmp_path: Path) -> None:
    ledger = AnnotationLedger(tmp_path / "a.sqlite3")
    assert ledger.event_cursor() == 0
    ledger.record([record(1), record(2)])
    assert ledger.record_events([record(3)], forgotten=[1, 99], cursor=17) == 1
    assert ledger.event_cursor() == 17
    assert [r.annotation_id for r in ledger.records(1)] == [2, 3]


def test_edit_counts_must_be_complete_and_non_negative() -> None:
    with pytest.raises(ValueError, match="each of"):
        record(1, edits={"accepted": 1})
    with pytest.raises(ValueError, match="each of"):
        record(1, drawn=-1)
