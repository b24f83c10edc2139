"""Coalescing: when a project trains, and that a storm of events yields one run."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from backend.config import Settings
from backend.events import Event, EventStore
from backend.jobs.launchers import ChildProcessLauncher
from backend.jobs.scheduler import TrainingScheduler, due_projects


def _event(i: int, project: int, action: str, ids: tuple[int, ...], at: float) -> Event:
    return Event(i, at, project, action, ids, {}, None)


def test_due_rules() -> None:
    pending = [
        _event(1, 1, "ANNOTATION_CREATED", (10,), at=100.0),
        _event(2, 1, "ANNOTATION_UPDATED", (10,), at=101.0),  # same annotation: one change
        _event(3, 2, "START_TRAINING", (), at=102.0),
        _event(4, 3, "ANNOTATION_CREATED", (30,), at=0.0),  # quiet for long enough
        *[_event(10 + i, 4, "ANNOTATION_CREATED", (400 + i,), at=103.0) for i in range(3)],
    ]
    due = due_projects(pending, now=110.0, train_every=3, quiet_seconds=60.0)
    assert [(d.project_id, d.max_event_id) for d in due] == [(2, 3), (3, 4), (4, 12)]
    assert due[0].reason == "requested"
    assert due[1].reason.startswith("quiet")
    assert due[2].reason == "3 annotations changed"
    later = due_projects(pending, now=200.0, train_every=3, quiet_seconds=60.0)
    assert 1 in {d.project_id for d in later}


def test_storm_of_events_yields_one_run(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path, train_every=10, train_quiet_seconds=3600)
    events = EventStore(tmp_path / "events.sqlite3")
    for i in range(200):
        events.append(7, "ANNOTATION_CREATED", (i,), {"annotation": {"id": i}})
    launched: list[tuple[int, int]] = []

    def launcher(project_id: int, run_id: int) -> str:
        launched.append((project_id, run_id))
        events.finish_run(run_id, "promoted", {}, version="v1")
        return "promoted"

    scheduler = TrainingScheduler(settings, events, launcher)
    assert scheduler.run_once() == [(7, "promoted")]
    assert len(launched) == 1
    assert events.pending(7) == []
    assert scheduler.run_once() == []  # nothing left


def test_a_failing_ledger_sync_does_not_hold_training_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_dir=tmp_path, train_every=1, train_quiet_seconds=3600)
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(1, "ANNOTATION_CREATED", (1,), {})
    calls: list[str] = []

    def sync() -> None:
        calls.append("sync")
        raise ConnectionError("Label Studio is down")

    def launcher(project_id: int, run_id: int) -> str:
        calls.append("train")
        events.finish_run(run_id, "promoted", {}, version="v1")
        return "promoted"

    with caplog.at_level(logging.ERROR):
        result = TrainingScheduler(settings, events, launcher, before_runs=sync).run_once()
    assert result == [(1, "promoted")] and calls == ["sync", "train"]
    assert "annotation ledger sync failed" in caplog.text


def test_events_arriving_during_a_run_stay_pending(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path, train_every=1, train_quiet_seconds=3600)
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(1, "ANNOTATION_CREATED", (1,), {})

    def launcher(project_id: int, run_id: int) -> str:
        events.append(1, "ANNOTATION_CREATED", (2,), {})  # arrives mid-run
        events.finish_run(run_id, "promoted", {}, version="v1")
        return "promoted"

    TrainingScheduler(settings, events, launcher).run_once()
    assert [e.annotation_ids for e in events.pending(1)] == [(2,)]


def test_failure_keeps_events_and_backs_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        model_dir=tmp_path, train_every=1, train_quiet_seconds=3600, train_retry_seconds=60
    )
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(1, "START_TRAINING", (), {})
    calls: list[int] = []

    def launcher(project_id: int, run_id: int) -> str:
        calls.append(run_id)
        events.finish_run(run_id, "failed", {"error": "boom"}, consume_events=False)
        return "failed"

    scheduler = TrainingScheduler(settings, events, launcher)
    scheduler.run_once()
    scheduler.run_once()  # within the back-off: not retried
    assert len(calls) == 1
    assert len(events.pending(1)) == 1
    assert events.runs(1)[0]["state"] == "failed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("run=1 failed: boom" in w for w in warnings), warnings


@pytest.mark.slow
def test_run_failing_in_its_child_is_logged_at_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Label Studio unreachable: the child's traceback goes to the run's log file, and the
    server's own log says so at WARNING (it said nothing above INFO before)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        model_dir=tmp_path,
        label_studio_url=f"http://127.0.0.1:{port}",
        label_studio_api_key="token",
        train_every=1,
    )
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(4, "START_TRAINING", (), {})
    launcher = ChildProcessLauncher(settings, events)
    assert TrainingScheduler(settings, events, launcher).run_once() == [(4, "failed")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("project=4 run=1 failed: " in w and "Connect" in w for w in warnings), warnings


def test_stale_running_runs_are_marked_interrupted(tmp_path: Path) -> None:
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(3, "START_TRAINING", (), {})
    run = events.start_run(3, "requested", 1)
    reopened = EventStore(tmp_path / "events.sqlite3")  # as after a crash and restart
    assert reopened.interrupt_stale_runs() == 1
    assert reopened.runs(3)[0]["id"] == run and reopened.runs(3)[0]["state"] == "interrupted"
    assert len(reopened.pending(3)) == 1  # the event survives for the next run


def test_label_studio_driven_projects_wait_for_start_training() -> None:
    pending = [
        *[_event(1 + i, 1, "ANNOTATION_CREATED", (10 + i,), at=0.0) for i in range(5)],
        _event(6, 2, "ANNOTATION_CREATED", (20,), at=0.0),
        _event(7, 2, "START_TRAINING", (), at=1.0),
    ]
    # TRAIN_EVERY (3) reached and quiet long since: due, unless Label Studio drives training
    assert [d.project_id for d in due_projects(pending, 1000.0, 3, 60.0)] == [1, 2]
    due = due_projects(pending, 1000.0, 3, 60.0, label_studio_driven={1, 2})
    assert [(d.project_id, d.reason, d.max_event_id) for d in due] == [(2, "requested", 7)]


def _annotation(project: int, annotation: int, trains_every: object) -> dict[str, object]:
    """An ANNOTATION_CREATED payload as Label Studio sends it: the project object included."""
    return {
        "action": "ANNOTATION_CREATED",
        "annotation": {"id": annotation},
        "project": {"id": project, "min_annotations_to_start_training": trains_every},
    }


def test_the_switch_is_read_from_the_newest_event_carrying_it(tmp_path: Path) -> None:
    events = EventStore(tmp_path / "events.sqlite3")
    assert events.label_studio_trains_every(1) is None
    events.append(1, "ANNOTATION_CREATED", (1,), _annotation(1, 1, 3))
    events.append(2, "ANNOTATION_CREATED", (2,), _annotation(2, 2, 0))
    assert events.label_studio_trains_every(1) == 3
    assert events.label_studio_trains_every(2) == 0
    events.append(1, "START_TRAINING", (), {"source": "cli"})  # carries no project object
    events.append(1, "ANNOTATION_CREATED", (3,), _annotation(1, 3, True))  # not an int
    assert events.label_studio_trains_every(1) == 3
    events.append(1, "ANNOTATION_UPDATED", (1,), _annotation(1, 1, 0))  # switched off
    assert events.label_studio_trains_every(1) == 0


def test_the_switch_is_looked_for_among_the_newest_events_only(tmp_path: Path) -> None:
    events = EventStore(tmp_path / "events.sqlite3")
    events.append(1, "ANNOTATION_CREATED", (1,), _annotation(1, 1, 3))
    for i in range(50):
        events.append(1, "START_TRAINING", (), {"source": "cli", "n": i})
    assert events.label_studio_trains_every(1) is None


def test_with_the_switch_on_only_start_training_trains(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path, train_every=2, train_quiet_seconds=0)
    events = EventStore(tmp_path / "events.sqlite3")
    runs: list[str] = []

    def launcher(project_id: int, run_id: int) -> str:
        runs.append(str(events.runs(project_id, limit=1)[0]["reason"]))
        events.finish_run(run_id, "skipped", {})
        return "skipped"

    scheduler = TrainingScheduler(settings, events, launcher)
    for annotation in (1, 2, 3):  # past TRAIN_EVERY, and quiet at once
        events.append(4, "ANNOTATION_CREATED", (annotation,), _annotation(4, annotation, 3))
    assert scheduler.run_once() == [] and len(events.pending(4)) == 3  # kept for the run

    start = {
        "action": "START_TRAINING",
        "project": {"id": 4, "min_annotations_to_start_training": 3},
    }
    events.append(4, "START_TRAINING", (), start)
    assert scheduler.run_once() == [(4, "skipped")]
    assert runs == ["requested"] and events.pending(4) == []

    # Switched off: the next annotations say so, and TRAIN_EVERY applies again
    for annotation in (4, 5):
        events.append(4, "ANNOTATION_CREATED", (annotation,), _annotation(4, annotation, 0))
    assert scheduler.run_once() == [(4, "skipped")]
    assert runs == ["requested", "2 annotations changed"]
