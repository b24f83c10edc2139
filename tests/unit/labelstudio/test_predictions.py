"""The queue's Label Studio writer against a recording fake SDK: which calls a plan becomes,
in what order and chunks, and how Label Studio's failures are reported.

Against a real Label Studio: tests/e2e/test_queue.py.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.labelstudio.predictions import (
    BULK_CHUNK,
    QUEUE_VIEW_TITLE,
    UNCERTAINTY_SAMPLING,
    DesiredPrediction,
    ExistingPrediction,
    LabelStudioApiError,
    ProjectNotFound,
    WritePlan,
    apply_plan,
    ensure_queue_view,
    list_tasks,
    queue_view_data,
    read_project,
    set_queue_sampling,
    task_predictions,
)

REGION = [{"from_name": "label", "value": {"x": 1}}]


class Recorder:
    """A fake SDK: every call is recorded; `fail` maps a call name to what it raises."""

    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail or {}
        self.views: list[Any] = []
        self._lock = threading.Lock()
        self.sdk = SimpleNamespace(
            projects=SimpleNamespace(
                get=self._call("get_project"),
                update=self._call("update_project"),
                import_predictions=self._call("import"),
            ),
            tasks=SimpleNamespace(list=self._call("list_tasks")),
            predictions=SimpleNamespace(
                create=self._call("create"),
                update=self._call("update"),
                delete=self._call("delete"),
            ),
            views=SimpleNamespace(
                list=lambda **kw: self.views,
                create=self._call("create_view"),
                update=self._call("update_view"),
            ),
        )

    def _call(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls.append((name, args, kwargs))
            key = f"{name}:{args[0]}" if args else name
            error = self.fail.get(key) or self.fail.get(name)
            if error is not None:
                raise error
            return SimpleNamespace(id=5, label_config="<View/>")

        return call

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def plan(create: int = 0, update: tuple[int, ...] = (), delete: tuple[int, ...] = ()) -> WritePlan:
    return WritePlan(
        create=tuple((t, DesiredPrediction(REGION, t / 10, 3)) for t in range(create)),
        update=tuple((p, {"score": 0.5}) for p in update),
        delete=delete,
        unchanged=0,
    )


# --------------------------------------------------------------------------------- writes
def test_a_plan_becomes_deletes_updates_and_creates() -> None:
    ls: Any = Recorder()

    apply_plan(ls, 4, "v2", plan(create=2, update=(30,), delete=(40, 41)))

    assert sorted(ls.calls, key=repr) == sorted(
        [
            ("delete", (40,), {}),
            ("delete", (41,), {}),
            ("update", (30,), {"score": 0.5}),
            *[
                (
                    "create",
                    (),
                    {
                        "task": t,
                        "result": REGION,
                        "score": t / 10,
                        "cluster": 3,
                        "model_version": "v2",
                        "project": 4,
                    },
                )
                for t in (0, 1)
            ],
        ],
        key=repr,
    )


def test_without_clusters_creates_go_through_the_bulk_import_first_in_chunks() -> None:
    ls: Any = Recorder()

    apply_plan(ls, 4, "v2", plan(create=BULK_CHUNK + 2, delete=(9,)), clusters=False)

    assert ls.names() == ["import", "import", "delete"]
    first, second = (c[2] for c in ls.calls[:2])
    assert first["id"] == second["id"] == 4
    assert [len(first["request"]), len(second["request"])] == [BULK_CHUNK, 2]
    assert second["request"][1] == {
        "task": BULK_CHUNK + 1,
        "result": REGION,
        "score": (BULK_CHUNK + 1) / 10,
        "model_version": "v2",
    }  # no cluster: the bulk import would drop it


def test_an_empty_plan_makes_no_call() -> None:
    ls: Any = Recorder()
    apply_plan(ls, 4, "v2", plan(), clusters=False)
    apply_plan(ls, 4, "v2", plan())
    assert ls.calls == []


def test_progress_every_fifty_writes_and_after_the_last() -> None:
    heard: list[tuple[int, int]] = []
    ls: Any = Recorder()

    apply_plan(
        ls,
        4,
        "v2",
        plan(create=120),
        progress=lambda done, total, elapsed: heard.append((done, total)),
    )

    assert heard == [(50, 120), (100, 120), (120, 120)]


def test_an_already_deleted_prediction_is_fine_other_failures_are_collected() -> None:
    gone = ApiError(status_code=404, body={"detail": "Not found."})
    broken = ApiError(status_code=500, headers={"set-cookie": "secret"}, body="x" * 400)
    ls: Any = Recorder({"delete:40": gone, "update:30": broken, "update:31": broken})

    with pytest.raises(LabelStudioApiError) as caught:
        apply_plan(ls, 4, "v2", plan(create=1, update=(30, 31), delete=(40,)))

    message = str(caught.value)
    assert message.startswith("2 of 4 prediction writes failed; first: updating prediction 30")
    assert "HTTP 500: " + "x" * 300 + "..." in message and "secret" not in message
    assert sorted(ls.names()) == ["create", "delete", "update", "update"]  # all were tried
    assert caught.value.status == 502


def test_a_failed_bulk_import_stops_before_the_single_writes() -> None:
    ls: Any = Recorder({"import": httpx.ConnectError("refused")})

    with pytest.raises(LabelStudioApiError, match="importing 1 predictions failed: ConnectError"):
        apply_plan(ls, 4, "v2", plan(create=1, delete=(9,)), clusters=False)

    assert ls.names() == ["import"]


# -------------------------------------------------------------------- project and the tab
def test_reads_map_a_missing_project_and_other_failures() -> None:
    missing: Any = Recorder({"get_project": ApiError(status_code=404, body={"detail": "nope"})})
    with pytest.raises(ProjectNotFound, match="Label Studio has no project 4"):
        read_project(missing, 4)
    lost: Any = Recorder({"list_tasks": ApiError(status_code=404, body={"detail": "nope"})})
    with pytest.raises(LabelStudioApiError, match='listing tasks failed: HTTP 404: {"detail"'):
        list_tasks(lost, 4)
    assert read_project(Recorder(), 4).id == 5


def test_list_tasks_collects_every_page_as_dicts() -> None:
    ls: Any = Recorder()
    pages = [{"id": 1}, SimpleNamespace(model_dump=lambda: {"id": 2})]
    ls.sdk.tasks.list = lambda **kw: iter(pages)

    assert list_tasks(ls, 4) == [{"id": 1}, {"id": 2}]


def test_task_predictions_read_what_label_studio_lists() -> None:
    task = {
        "id": 7,
        "predictions": [
            {"id": 70, "model_version": "v2", "score": 1, "cluster": 4, "result": REGION},
            SimpleNamespace(
                model_dump=lambda: {"id": 71, "model_version": None, "score": "x", "cluster": 2.5}
            ),
        ],
    }

    assert task_predictions(task) == (
        ExistingPrediction(70, 7, "v2", 1.0, 4, REGION),
        ExistingPrediction(71, 7, "", None, None, []),
    )
    assert task_predictions({"id": 8}) == ()


def test_set_queue_sampling_changes_only_what_differs() -> None:
    ls: Any = Recorder()
    fresh = SimpleNamespace(model_version="v1", sampling="Sequential sampling")

    assert set_queue_sampling(ls, 4, fresh, "v2") == ["model_version", "sampling"]
    assert ls.calls == [
        ("update_project", (), {"id": 4, "model_version": "v2", "sampling": UNCERTAINTY_SAMPLING})
    ]
    ls.calls.clear()
    done = SimpleNamespace(model_version="v2", sampling=UNCERTAINTY_SAMPLING)
    assert set_queue_sampling(ls, 4, done, "v2") == []
    assert ls.calls == []


def test_the_queue_tab_is_created_once_then_kept_up_to_date() -> None:
    ls: Any = Recorder()
    assert ensure_queue_view(ls, 4) == 5
    assert ls.calls == [("create_view", (), {"project": 4, "data": queue_view_data()})]

    ls.calls.clear()
    other = SimpleNamespace(id=1, data={"title": "Default"})
    stale = SimpleNamespace(id=8, data={"title": QUEUE_VIEW_TITLE, "ordering": [], "hidden": 1})
    ls.views = [other, stale]
    assert ensure_queue_view(ls, 4) == 8
    assert ls.calls == [
        ("update_view", ("8",), {"data": {**queue_view_data(), "hidden": 1}, "project": 4})
    ]

    ls.calls.clear()
    ls.views = [SimpleNamespace(id=8, data={**queue_view_data(), "hidden": 1})]
    assert ensure_queue_view(ls, 4) == 8
    assert ls.calls == []


def test_the_queue_tab_sorts_unlabeled_tasks_by_ascending_score() -> None:
    assert queue_view_data() == {
        "title": "Active learning queue",
        "ordering": ["tasks:predictions_score"],
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                }
            ],
        },
    }
