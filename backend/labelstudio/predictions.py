"""The active-learning queue's Label Studio side: read a project and its tasks' predictions,
apply a `WritePlan`, point the project's uncertainty sampling at the model version, and keep
the "Active learning queue" Data Manager tab. Every SDK or transport error becomes a
`LabelStudioApiError` (or `ProjectNotFound`) carrying the status and Label Studio's answer only.

The records the writes are planned with live here too (`ExistingPrediction`, `DesiredPrediction`,
`WritePlan`); the plan itself is computed purely by `backend.ranking.queue.plan_writes`.

Writing predictions (measured on Label Studio 1.23.2, SQLite, 2 CPU cores, idle machine): bulk
`POST /api/projects/{id}/import/predictions` is fast (~750/s) but drops `cluster` and returns no
ids, so each prediction would still need a `PATCH` (~35/s with 4 threads) after listing them
again; `POST /api/predictions/` keeps `cluster` at the same ~38/s with 4 threads. So new
predictions are created one by one (4 threads), an existing prediction of the same model
version is updated in place (`PATCH`, only the fields that changed; unchanged ones cost
nothing), and extra copies are deleted: re-ranking never duplicates. Without clusters, new
predictions go through the bulk import instead (same queue, no cluster ids).

The Data Manager tab sorts by `tasks:predictions_score` (the mean score of the predictions of
`project.model_version`: one per task here), ascending, and hides labeled tasks; "Label Tasks
As Displayed" serves it in that order.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from label_studio_sdk.core.api_error import ApiError

from backend.errors import BackendError
from backend.labelstudio.client import LabelStudioClient

logger = logging.getLogger(__name__)

QUEUE_VIEW_TITLE = "Active learning queue"
DUPLICATES_VIEW_TITLE = "Near-duplicates"
NEAR_DUPLICATE_FIELD = "near_duplicate_of"  # task data: the id of the task it nearly copies
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
QUEUE_ORDERING = ("tasks:predictions_score",)
PAGE_SIZE = 100
BULK_CHUNK = 500
WRITE_WORKERS = 4
_TASK_FIELDS = "id,data,total_annotations,predictions"
_PROGRESS_EVERY = 50  # writes between progress calls

WriteProgress = Callable[[int, int, float], None]  # (writes done, total, seconds so far)


class ProjectNotFound(BackendError):
    """Label Studio has no such project (or the API key cannot see it)."""

    status = 404
    code = "project_not_found"


class LabelStudioApiError(BackendError):
    """A Label Studio API call failed; the message holds the status and LS's answer only."""

    status = 502
    code = "label_studio_error"


# --------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ExistingPrediction:
    """A prediction already stored in Label Studio (as the task list reports it)."""

    id: int
    task: int
    model_version: str
    score: float | None
    cluster: int | None
    result: list[dict[str, Any]]


@dataclass(frozen=True)
class DesiredPrediction:
    """What a ranked task's prediction must hold."""

    result: list[dict[str, Any]]
    score: float
    cluster: int | None  # None when clusters are not written


@dataclass(frozen=True)
class WritePlan:
    """The Label Studio writes that turn the existing predictions into the desired ones."""

    create: tuple[tuple[int, DesiredPrediction], ...]  # (task id, prediction)
    update: tuple[tuple[int, dict[str, Any]], ...]  # (prediction id, changed fields)
    delete: tuple[int, ...]  # prediction ids
    unchanged: int

    @property
    def n_writes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


def task_predictions(task: Mapping[str, Any]) -> tuple[ExistingPrediction, ...]:
    """The predictions of a task as `list_tasks` returns it."""
    found = []
    for item in (_as_dict(p) for p in task.get("predictions") or []):
        score = item.get("score")
        cluster = item.get("cluster")
        found.append(
            ExistingPrediction(
                id=int(item["id"]),
                task=int(task["id"]),
                model_version=str(item.get("model_version") or ""),
                score=float(score) if isinstance(score, int | float) else None,
                cluster=int(cluster) if isinstance(cluster, int) else None,
                result=list(item.get("result") or []),
            )
        )
    return tuple(found)


# ----------------------------------------------------------------------------------- reads
def read_project(ls: LabelStudioClient, project_id: int) -> Any:
    """The project (the SDK's object); ProjectNotFound when Label Studio has none."""
    sdk = ls.sdk
    return _call(
        "reading the project",
        functools.partial(sdk.projects.get, id=project_id),
        project_id=project_id,
        project_call=True,
    )


def read_prediction(
    ls: LabelStudioClient, project_id: int, prediction_id: int
) -> dict[str, Any] | None:
    """One prediction's JSON, or None when Label Studio no longer has it."""
    sdk = ls.sdk

    def get() -> Any:
        try:
            return sdk.predictions.get(id=prediction_id)
        except ApiError as exc:
            if exc.status_code == 404:
                return None
            raise

    found = _call(f"reading prediction {prediction_id}", get, project_id=project_id)
    return None if found is None else _as_dict(found)


def list_tasks(ls: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    """Every task of the project with its data, annotation count and predictions, paginated."""
    sdk = ls.sdk
    tasks: list[dict[str, Any]] = []

    def collect() -> None:
        pager: Iterable[Any] = sdk.tasks.list(
            project=project_id, fields="all", include=_TASK_FIELDS, page_size=PAGE_SIZE
        )
        tasks.extend(_as_dict(item) for item in pager)

    _call("listing tasks", collect, project_id=project_id)
    return tasks


# ---------------------------------------------------------------------------------- writes
def apply_plan(
    ls: LabelStudioClient,
    project_id: int,
    model_version: str,
    plan: WritePlan,
    *,
    clusters: bool = True,
    progress: WriteProgress | None = None,
) -> None:
    """Make Label Studio hold what `plan` says: deletes, updates and creates.

    With `clusters`, new predictions are created one request each (they keep `cluster`);
    without, through the bulk import first. The single requests run on WRITE_WORKERS threads;
    their failures are collected and raised together as one LabelStudioApiError once all have
    run. `progress` is called every 50 single writes and after the last; what it raises stops
    the rest (the writes already started still finish).
    """
    sdk = ls.sdk
    jobs: list[tuple[str, Callable[[], object]]] = []
    for prediction_id in plan.delete:
        jobs.append(
            (
                f"deleting prediction {prediction_id}",
                functools.partial(_delete_prediction, sdk, prediction_id),
            )
        )
    for prediction_id, fields in plan.update:
        jobs.append(
            (
                f"updating prediction {prediction_id}",
                functools.partial(sdk.predictions.update, prediction_id, **fields),
            )
        )
    for task_id, want in plan.create if clusters else ():
        jobs.append(
            (
                f"creating a prediction for task {task_id}",
                functools.partial(
                    sdk.predictions.create,
                    task=task_id,
                    result=want.result,
                    score=want.score,
                    cluster=want.cluster,
                    model_version=model_version,
                    project=project_id,
                ),
            )
        )
    if not clusters:
        _bulk_create(sdk, project_id, model_version, plan.create)
    if jobs:
        _run_writes(jobs, project_id, model_version, progress)


def set_queue_sampling(
    ls: LabelStudioClient, project_id: int, project: Any, model_version: str
) -> list[str]:
    """Point the project's queue at `model_version` with uncertainty sampling (`project` is
    what `read_project` returned); returns the fields that changed (none: no request)."""
    changes: dict[str, Any] = {}
    if project.model_version != model_version:
        changes["model_version"] = model_version
    if project.sampling != UNCERTAINTY_SAMPLING:
        changes["sampling"] = UNCERTAINTY_SAMPLING
    if changes:
        sdk = ls.sdk
        _call(
            "updating the project",
            functools.partial(sdk.projects.update, id=project_id, **changes),
            project_id=project_id,
            model_version=model_version,
        )
        logger.info("project=%s set %s", project_id, sorted(changes))
    return sorted(changes)


def queue_view_data() -> dict[str, Any]:
    """The Data Manager tab: unlabeled tasks by ascending prediction score (the queue)."""
    return {
        "title": QUEUE_VIEW_TITLE,
        "ordering": list(QUEUE_ORDERING),
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


def duplicates_view_data() -> dict[str, Any]:
    """The Data Manager tab of the unlabeled tasks moved behind a near-duplicate (their
    `near_duplicate_of` field is set), grouped by the task they copy: where a project manager
    sees them and can select them all at once."""
    return {
        "title": DUPLICATES_VIEW_TITLE,
        "ordering": [f"tasks:data.{NEAR_DUPLICATE_FIELD}"],
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": f"filter:tasks:data.{NEAR_DUPLICATE_FIELD}",
                    "operator": "empty",
                    "type": "Number",
                    "value": False,
                },
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "equal",
                    "type": "Number",
                    "value": 0,
                },
            ],
        },
    }


def ensure_queue_view(
    ls: LabelStudioClient, project_id: int, *, model_version: str = ""
) -> int | None:
    """Create or update the "Active learning queue" Data Manager tab; returns its id."""
    return ensure_view(ls, project_id, queue_view_data(), model_version=model_version)


def ensure_view(
    ls: LabelStudioClient, project_id: int, data: Mapping[str, Any], *, model_version: str = ""
) -> int | None:
    """Create or update the Data Manager tab titled `data["title"]`; returns its id.
    (`model_version` only names the ranking in error logs.)"""
    sdk = ls.sdk
    title = data["title"]
    views = _call(
        "listing Data Manager tabs",
        functools.partial(sdk.views.list, project=project_id),
        project_id=project_id,
        model_version=model_version,
    )
    for view in views:
        current = view.data if isinstance(view.data, dict) else {}
        if current.get("title") != title:
            continue
        wanted = {**current, **data}
        if wanted != current:
            _call(
                f"updating the {title!r} tab",
                functools.partial(sdk.views.update, str(view.id), data=wanted, project=project_id),
                project_id=project_id,
                model_version=model_version,
            )
        return int(view.id) if view.id is not None else None
    created = _call(
        f"creating the {title!r} tab",
        functools.partial(sdk.views.create, project=project_id, data=dict(data)),
        project_id=project_id,
        model_version=model_version,
    )
    logger.info("project=%s created Data Manager tab %r", project_id, title)
    return int(created.id) if created.id is not None else None


def mark_near_duplicates(
    ls: LabelStudioClient,
    project_id: int,
    task_data: Mapping[int, Mapping[str, Any]],
    marks: Mapping[int, int],
    *,
    model_version: str = "",
) -> int:
    """Set each task's `near_duplicate_of` data field to its mark (the task it nearly copies)
    and remove the field from the tasks of `task_data` without one; only tasks whose field
    changes are written. Returns how many were."""
    sdk = ls.sdk
    jobs: list[tuple[str, Callable[[], object]]] = []
    for task_id, data in task_data.items():
        want = marks.get(task_id)
        if data.get(NEAR_DUPLICATE_FIELD) == want:
            continue
        new = {k: v for k, v in data.items() if k != NEAR_DUPLICATE_FIELD}
        if want is not None:
            new[NEAR_DUPLICATE_FIELD] = want
        jobs.append(
            (
                f"marking task {task_id}'s near-duplicate",
                functools.partial(sdk.tasks.update, str(task_id), data=new),
            )
        )
    _run_writes(jobs, project_id, model_version, None)
    return len(jobs)


# --------------------------------------------------------------------------------- helpers
def _run_writes(
    jobs: Sequence[tuple[str, Callable[[], object]]],
    project_id: int,
    model_version: str,
    progress: WriteProgress | None,
) -> None:
    errors: list[str] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="rank-write") as writers:
        futures: list[Future[str | None]] = [
            writers.submit(_guarded, what, call, project_id, model_version) for what, call in jobs
        ]
        for done, future in enumerate(futures, start=1):
            error = future.result()
            if error is not None:
                errors.append(error)
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == len(futures)):
                progress(done, len(futures), time.perf_counter() - started)
    if errors:
        raise LabelStudioApiError(
            f"{len(errors)} of {len(jobs)} prediction writes failed; first: {errors[0]}"
        )


def _bulk_create(
    sdk: Any,
    project_id: int,
    model_version: str,
    creates: Sequence[tuple[int, DesiredPrediction]],
) -> None:
    """Create predictions without clusters through the bulk import, in chunks."""
    for start in range(0, len(creates), BULK_CHUNK):
        items = [
            {
                "task": task_id,
                "result": want.result,
                "score": want.score,
                "model_version": model_version,
            }
            for task_id, want in creates[start : start + BULK_CHUNK]
        ]
        _call(
            f"importing {len(items)} predictions",
            functools.partial(sdk.projects.import_predictions, id=project_id, request=items),
            project_id=project_id,
            model_version=model_version,
        )


def _guarded(
    what: str, call: Callable[[], object], project_id: int, model_version: str
) -> str | None:
    """Run one write; return its error message instead of raising (collected above)."""
    try:
        _call(what, call, project_id=project_id, model_version=model_version)
    except LabelStudioApiError as exc:
        return str(exc)
    return None


def _delete_prediction(sdk: Any, prediction_id: int) -> None:
    try:
        sdk.predictions.delete(prediction_id)
    except ApiError as exc:
        if exc.status_code != 404:  # already gone is what we wanted
            raise


def _call(
    what: str,
    call: Callable[[], Any],
    *,
    project_id: int,
    model_version: str = "",
    project_call: bool = False,
) -> Any:
    """Run one Label Studio call, turning SDK and transport errors into LabelStudioApiError.

    `project_call`: a 404 means the project itself is missing (ProjectNotFound).
    """
    try:
        return call()
    except ApiError as exc:
        if exc.status_code == 404 and project_call:
            raise ProjectNotFound(f"Label Studio has no project {project_id}") from None
        message = f"{what} failed: HTTP {exc.status_code}: {_short(exc.body)}"
    except httpx.HTTPError as exc:
        message = f"{what} failed: {type(exc).__name__}"
    logger.error("project=%s model_version=%s %s", project_id, model_version or "-", message)
    raise LabelStudioApiError(message)


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return dict(item.model_dump())
    return dict(item.dict())


def _short(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
