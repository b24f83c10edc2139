"""The project's own seconds per action, fitted to Label Studio's lead times."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backend.analytics.cost import ActionSeconds, fit_action_seconds
from backend.analytics.ledger import EDITS, AnnotationLedger, AnnotationRecord, LedgerBox
from backend.analytics.report import average_precision, group_figures, read_report, render

TRUE = ActionSeconds(
    accepted=2.0, adjusted=6.0, relabeled=4.0, deleted=1.5, drawn=18.0, per_image=5.0
)


def synthetic(n: int, seed: int, drop: str | None = None) -> tuple[np.ndarray, list[float]]:
    """Annotations with 0-5 edits of each kind and lead times = the true seconds + noise."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, size=(n, len(EDITS)))
    if drop:
        counts[:, EDITS.index(drop)] = 0
    times = [
        TRUE.seconds(dict(zip(EDITS, row.tolist(), strict=True)), 1) + float(rng.normal(0.0, 1.0))
        for row in counts
    ]
    return counts, times


def test_known_seconds_are_recovered_within_ten_percent() -> None:
    fitted = fit_action_seconds(*synthetic(400, seed=1))
    assert fitted.annotations == 400 and set(fitted.fitted) == {*EDITS, "per_image"}
    for name, truth in vars(TRUE).items():
        assert getattr(fitted.seconds, name) == pytest.approx(truth, rel=0.10), name


def test_an_action_never_seen_keeps_its_published_seconds() -> None:
    fitted = fit_action_seconds(*synthetic(200, seed=2, drop="relabeled"))
    assert "relabeled" not in fitted.fitted
    assert fitted.seconds.relabeled == ActionSeconds().relabeled
    assert fitted.seconds.drawn == pytest.approx(TRUE.drawn, rel=0.10)


def test_too_few_annotations_keep_every_published_figure() -> None:
    fitted = fit_action_seconds(*synthetic(29, seed=3))
    assert fitted.published and fitted.seconds == ActionSeconds()


def test_bad_lead_times_are_errors() -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        fit_action_seconds([[0, 0, 0, 0, 1]], [0.0])
    with pytest.raises(ValueError, match="lead times"):
        fit_action_seconds([[0, 0, 0, 0, 1]], [])


def row(
    annotation_id: int, version: str | None, annotator: str, lead: float | None, **edits: int
) -> AnnotationRecord:
    return AnnotationRecord(
        annotation_id=annotation_id,
        project_id=1,
        task_id=annotation_id,
        annotator=annotator,
        prediction_id=None if version is None else 50 + annotation_id,
        model_version=version,
        edits={e: 0 for e in EDITS} | edits,
        lead_time=lead,
    )


def test_the_report_counts_rates_and_seconds_saved(tmp_path: Path) -> None:
    rows = [
        row(1, "v1", "a", 20.0, accepted=3, adjusted=1, deleted=1, drawn=1),
        row(2, "v1", "b", 10.0, accepted=1, relabeled=1),
        row(3, None, "a", 60.0, drawn=2),
        row(4, "v1", "b", None, accepted=2),  # not timed: counted, not priced
    ]
    ledger = AnnotationLedger(tmp_path / "a.sqlite3")
    ledger.record(rows)
    report = read_report(ledger, 1)
    assert report.time_model.published  # 3 timed annotations: published seconds
    v1 = next(f for f in report.by_version if f.group == "v1")
    # shown: 3+1+1 + 1+1 + 2 = 9; kept as shown: 3+1+2 = 6; hits (kept or adjusted): 7
    assert (v1.annotations, v1.shown, v1.accepted) == (3, 9, 6)
    assert v1.acceptance_rate == pytest.approx(6 / 9)
    assert v1.precision == pytest.approx(7 / 9)
    assert v1.recall == pytest.approx(7 / 9)  # submitted: 5 + 2 + 2
    # by hand: 3 s + 25 s per submitted box; saved = that - lead_time, over timed tasks
    assert v1.seconds_saved == pytest.approx((3 + 25 * 5 - 20) + (3 + 25 * 2 - 10))
    assert v1.seconds_per_task == pytest.approx(15.0)
    none = next(f for f in report.by_version if f.group == "(none)")
    assert none.acceptance_rate is None and none.seconds_saved == pytest.approx(3 + 50 - 60)
    assert [f.group for f in report.by_annotator] == ["a", "b"]
    text = render(report)
    assert "By model version" in text and "67%" in text
    nothing = np.zeros(4, dtype=bool)
    assert group_figures("x", ledger.table(1), nothing, report.time_model).boxes_per_task is None
    assert read_report(ledger, 2).overall.annotations == 0


def test_average_precision_counts_missed_objects() -> None:
    one = np.ones(3, dtype=np.int64)
    # ranked: hit, miss, hit; 3 objects: precision 1 to recall 1/3, then 2/3 to recall 2/3
    ap = average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), one, 3)
    assert ap == pytest.approx(1 / 3 + (1 / 3) * (2 / 3))
    # equal confidence enters together: 2 boxes at 0.9, 1 kept: precision 1/2 at recall 1/2
    assert average_precision(np.array([0.9]), np.array([1]), np.array([2]), 2) == 0.25
    unscored = average_precision(np.array([np.nan, 0.5]), np.array([0, 1]), one[:2], 1)
    assert unscored == pytest.approx(1.0)  # a box without a score ranks last
    empty = np.zeros(0, dtype=np.int64)
    assert average_precision(np.zeros(0), empty, empty, 2) == 0.0
    with pytest.raises(ValueError, match="at least one object"):
        average_precision(np.zeros(0), empty, empty, 0)


def test_map50_per_version_from_the_ledgers_boxes(tmp_path: Path) -> None:
    shown_kept = LedgerBox("shown", "Car", 0.9, True)
    shown_wrong = LedgerBox("shown", "Car", 0.95, False)
    truth = LedgerBox("submitted", "Car")
    person = LedgerBox("submitted", "Person")
    rows = [
        replace(row(1, "v1", "a", 5.0, accepted=1), boxes=(shown_kept, truth)),
        replace(row(2, "v2", "a", 5.0, deleted=1, drawn=2), boxes=(shown_wrong, truth, person)),
    ]
    ledger = AnnotationLedger(tmp_path / "a.sqlite3")
    ledger.record(rows)
    assert ledger.records(1)[1].boxes == (shown_wrong, truth, person)
    report = read_report(ledger, 1)
    v1, v2 = report.by_version
    assert (v1.map50, v2.map50) == (1.0, 0.0)
    # together, Car: the wrong box ranks first (precision 1/2 at recall 1/2), Person: 0
    assert report.overall.map50 == pytest.approx((0.25 + 0.0) / 2)
