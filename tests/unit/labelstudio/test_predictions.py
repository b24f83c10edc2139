"""The queue's Label Studio writer against a recording fake SDK: which calls an import, a
kept prediction and a removed version become, in what order and chunks, and how Label
Studio's failures are reported.

Against a real Label Studio: tests/e2e/test_queue.py.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from label_studio_sdk.core.api_error import ApiError

from backend.labelstudio import predictions
from backend.labelstudio.predictions import (
    BULK_CHUNK,
    QUEUE_VIEW_TITLE,
    SLOW_CALL_TIMEOUT_S,
    UNCERTAINTY_SAMPLING,
    DesiredPrediction,
    LabelStudioApiError,
    ProjectNotFound,
    delete_model_version,
    ensure_queue_view,
    import_queue,
    keep_annotated,
    list_model_versions,
    list_tasks,
    queue_view_data,
    read_project,
    set_queue_sampling,
)

REGION = [{"from_name": "label", "value": {"x": 1}}]


class Recorder:
    """A fake SDK: every call is recorded; `fail` maps a call name to what it raises."""

    def __init__(self, fail: dict[str, Exception] | None = None, answer: Any = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail or {}
        self.views: list[Any] = []
        self.answer = answer  # what `api` (LabelStudioClient.api) returns
        self._lock = threading.Lock()
        self._api = self._call("api")
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

    def api(self, *args: Any, **kwargs: Any) -> Any:
        self._api(*args, **kwargs)
        return self.answer

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def queue(n: int) -> list[tuple[int, DesiredPrediction]]:
    return [(t, DesiredPrediction(REGION, t / 10)) for t in range(n)]


# --------------------------------------------------------------------------------- writes
def test_the_queue_is_imported_in_chunks_then_counted() -> None:
    heard: list[tuple[int, int]] = []
    ls: Any = Recorder(answer={"v2.q1": BULK_CHUNK + 2, "v1.q3": 7})

    held = import_queue(
        ls, 4, "v2.q1", queue(BULK_CHUNK + 2), progress=lambda d, t, _: heard.append((d, t))
    )

    assert held == BULK_CHUNK + 2
    assert ls.names() == ["import", "import", "api"]
    first, second = (c[2] for c in ls.calls[:2])
    assert first["id"] == second["id"] == 4
    # never retried (a retried chunk could land twice), waited for as long as it may take
    timeout = SLOW_CALL_TIMEOUT_S + BULK_CHUNK / 50.0  # 20 ms a prediction
    assert first["request_options"] == {"max_retries": 0, "timeout": timeout}
    assert [len(first["request"]), len(second["request"])] == [BULK_CHUNK, 2]
    assert second["request"][1] == {
        "task": BULK_CHUNK + 1,
        "result": REGION,
        "score": (BULK_CHUNK + 1) / 10,
        "model_version": "v2.q1",
    }
    assert ls.calls[2][1:] == (("GET", "api/projects/4/model-versions"), {})
    assert heard == [(BULK_CHUNK, BULK_CHUNK + 2), (BULK_CHUNK + 2, BULK_CHUNK + 2)]


def test_import_requests_also_stay_under_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    one = len(json.dumps({"task": 1, "result": REGION, "score": 0.1, "model_version": "v2.q1"}))
    monkeypatch.setattr(predictions, "BULK_BYTES", 2 * one + 10)  # two predictions a request
    ls: Any = Recorder(answer={"v2.q1": 5})

    import_queue(ls, 4, "v2.q1", queue(5))

    assert [len(c[2]["request"]) for c in ls.calls if c[0] == "import"] == [2, 2, 1]


def test_an_import_label_studio_does_not_hold_exactly_fails() -> None:
    for held in ({"v2.q1": 4}, {"v2.q1": 6}, {}):  # a chunk lost, one stored twice, none
        with pytest.raises(LabelStudioApiError, match=r"holds \d+ predictions of v2.q1, not the 5"):
            import_queue(Recorder(answer=held), 4, "v2.q1", queue(5))  # type: ignore[arg-type]


def test_an_empty_queue_makes_no_call() -> None:
    ls: Any = Recorder()
    assert import_queue(ls, 4, "v2.q1", []) == 0
    assert ls.calls == []


def test_a_failed_chunk_stops_the_import() -> None:
    ls: Any = Recorder({"import": httpx.ConnectError("refused")})

    with pytest.raises(
        LabelStudioApiError, match=f"importing {BULK_CHUNK} predictions failed: ConnectE"
    ):
        import_queue(ls, 4, "v2.q1", queue(BULK_CHUNK + 2))

    assert ls.names() == ["import"]


def test_model_versions_are_read_with_their_counts() -> None:
    ls: Any = Recorder(answer={"v2.q1": 3, "v2": 0, "odd": "x"})
    assert list_model_versions(ls, 4) == {"v2.q1": 3, "v2": 0}
    missing: Any = Recorder({"api": ApiError(status_code=404, body={"detail": "Not found."})})
    with pytest.raises(ProjectNotFound):
        list_model_versions(missing, 4)
    with pytest.raises(LabelStudioApiError, match="answered"):
        list_model_versions(Recorder(answer=["v2"]), 4)  # type: ignore[arg-type]


def test_a_version_is_deleted_in_one_call_with_a_timeout_by_its_size() -> None:
    ls: Any = Recorder(answer={"deleted_predictions": 5000})

    assert delete_model_version(ls, 4, "v2.q1", expected=5000) == 5000

    assert ls.calls == [
        (
            "api",
            ("DELETE", "api/projects/4/model-versions"),
            {"json": {"model_version": "v2.q1"}, "timeout": SLOW_CALL_TIMEOUT_S + 100.0},
        )
    ]


def test_only_that_versions_predictions_on_annotated_tasks_are_kept() -> None:
    ls: Any = Recorder()
    listed: list[dict[str, Any]] = []
    tasks = [
        {"id": 1, "predictions": [{"id": 10, "model_version": "v2.q1"}]},
        {
            "id": 2,
            "predictions": [  # the filter matches substrings: v2.q10 is listed too
                {"id": 20, "model_version": "v2.q10"},
                SimpleNamespace(model_dump=lambda: {"id": 21, "model_version": "v2.q1"}),
            ],
        },
    ]

    def list_annotated(**params: Any) -> Any:
        listed.append(params)
        return iter(tasks if len(listed) == 1 else tasks[:1])  # skipped: task 1 again

    ls.sdk.tasks.list = list_annotated

    assert keep_annotated(ls, 4, "v2.q1", "v2") == 2

    assert sorted(ls.calls, key=repr) == [
        ("update", (10,), {"model_version": "v2"}),
        ("update", (21,), {"model_version": "v2"}),
    ]
    counters = []
    for params in listed:
        assert (params["project"], params["include"]) == (4, "id,predictions")
        version, counter = json.loads(params["query"])["filters"]["items"]
        assert version["filter"] == "filter:tasks:predictions_model_versions"
        assert (version["operator"], version["value"]) == ("contains", ["v2.q1"])
        assert (counter["operator"], counter["value"]) == ("greater", 0)
        counters.append(counter["filter"])
    assert counters == ["filter:tasks:total_annotations", "filter:tasks:cancelled_annotations"]


def test_failed_moves_are_collected_and_reported_together() -> None:
    broken = ApiError(status_code=500, headers={"set-cookie": "secret"}, body="x" * 400)
    ls: Any = Recorder({"update:10": broken, "update:11": broken})
    found = [{"id": 1, "predictions": [{"id": i, "model_version": "v"} for i in (10, 11, 12)]}]
    ls.sdk.tasks.list = lambda **_: iter(found)

    with pytest.raises(LabelStudioApiError) as caught:
        keep_annotated(ls, 4, "v", "w")

    message = str(caught.value)
    assert message.startswith("2 of 3 prediction writes failed; first: keeping prediction 10")
    assert "HTTP 500: " + "x" * 300 + "..." in message and "secret" not in message
    assert ls.names() == ["update"] * 3  # all were tried
    assert caught.value.status == 502


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
