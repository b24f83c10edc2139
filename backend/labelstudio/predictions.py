"""The active-learning queue's Label Studio side: read a project and its tasks, import a queue
version's predictions in bulk, point the project's uncertainty sampling at it, remove old queue
versions, and keep the "Active learning queue" Data Manager tab. Every SDK or transport error
becomes a `LabelStudioApiError` (or `ProjectNotFound`) carrying the status and Label Studio's
answer only.

Writing predictions (Label Studio 1.23.2, SQLite, 2 CPU cores): `POST
/api/projects/{id}/import/predictions` stores predictions in bulk, far faster than one
`POST /api/predictions/` each (~40/s), but returns no ids and drops `cluster`; `DELETE
/api/projects/{id}/model-versions` removes every prediction of one version in one call. So each
ranking imports its queue as a fresh version (`backend.labelstudio.versions`), switches the
project to it, and removes old versions whole (figures: benchmarks/results/queue-writes/).

Removing a version would also remove the predictions annotations started from: Label Studio
then sets their `parent_prediction` to null, and the annotation ledger could no longer say what
the annotator was shown. So before a version goes, the predictions it holds on annotated tasks
are moved to the detector's own version (`keep_annotated`: one PATCH each, a few per ranking)
and stay, with their ids, as long as their annotations.

The Data Manager tab sorts by `tasks:predictions_score` (the mean score of the predictions of
`project.model_version`: one per task here), ascending, and hides labeled tasks; "Label Tasks
As Displayed" serves it in that order.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
PAGE_SIZE = 1000  # tasks per listed page: Label Studio counts the whole project per page
BULK_CHUNK = 100_000  # predictions per import request: see import_queue
BULK_BYTES = 64 * 1024 * 1024  # JSON per import request (Label Studio refuses over 250 MiB)
WRITE_WORKERS = 4
SLOW_CALL_TIMEOUT_S = 60.0  # plus 20 ms per prediction: bulk imports and deletes
_TASK_FIELDS = "id,data,total_annotations"
_KEEP_FIELDS = "id,predictions"
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
class DesiredPrediction:
    """What a ranked task's prediction holds: its pre-annotation and queue score."""

    result: list[dict[str, Any]]
    score: float


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
    """Every task of the project with its data and annotation count, paginated."""
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
def list_model_versions(ls: LabelStudioClient, project_id: int) -> dict[str, int]:
    """The project's model versions and how many predictions each holds (`GET
    /api/projects/{id}/model-versions`; the project's own version is listed, with 0, even
    when it holds none)."""
    answer = _call(
        "listing model versions",
        functools.partial(ls.api, "GET", f"api/projects/{int(project_id)}/model-versions"),
        project_id=project_id,
        project_call=True,
    )
    if not isinstance(answer, dict):
        raise LabelStudioApiError(f"listing model versions answered {_short(answer)}")
    return {str(k): int(v) for k, v in answer.items() if isinstance(v, int)}


def import_queue(
    ls: LabelStudioClient,
    project_id: int,
    version: str,
    predictions: Sequence[tuple[int, DesiredPrediction]],
    *,
    progress: WriteProgress | None = None,
) -> int:
    """Import `predictions` (task id, prediction) as model version `version`, BULK_CHUNK per
    request, then check that Label Studio holds exactly that many of `version`; returns it.

    Large requests (BULK_CHUNK predictions, or BULK_BYTES of JSON if that comes first),
    because Label Studio 1.23 (its default import path) recounts the predictions of EVERY
    task of the project after each import request: with N tasks in chunks of c the import
    costs about N * N / c task updates, so 1,000-prediction chunks made a 10,000-task import
    4 to 7 times slower than one request, and at 100,000 tasks 10,000-prediction chunks took
    802 s where one request (60 MB) took 184-192 s.

    `version` must be new (`versions.next_queue_version`): the check fails, raising
    LabelStudioApiError, if it held predictions before or a chunk was stored twice. Requests are
    never retried (a retried chunk could be stored twice). `progress` is called after each
    chunk; what it raises stops the import, leaving the partial version for the next
    ranking to remove.
    """
    sdk = ls.sdk
    started = time.perf_counter()
    done = 0
    for items in _chunks(
        (
            {"task": task_id, "result": want.result, "score": want.score, "model_version": version}
            for task_id, want in predictions
        ),
        BULK_CHUNK,
        BULK_BYTES,
    ):
        _call(
            f"importing {len(items)} predictions",
            functools.partial(
                sdk.projects.import_predictions,
                id=project_id,
                request=items,
                request_options={"max_retries": 0, "timeout": _slow_call_timeout(len(items))},
            ),
            project_id=project_id,
            model_version=version,
        )
        done += len(items)
        if progress is not None:
            progress(done, len(predictions), time.perf_counter() - started)
    held = list_model_versions(ls, project_id).get(version, 0) if predictions else 0
    if held != len(predictions):
        raise LabelStudioApiError(
            f"project {project_id} holds {held} predictions of {version}, "
            f"not the {len(predictions)} imported"
        )
    return held


def keep_annotated(ls: LabelStudioClient, project_id: int, version: str, keep_as: str) -> int:
    """Move the predictions of `version` on annotated (or skipped) tasks to `keep_as`, so
    removing `version` keeps them and their annotations' `parent_prediction`; returns how
    many moved. Only those tasks are listed (a Data Manager filter), one PATCH each."""
    sdk = ls.sdk
    found: dict[int, None] = {}

    def collect() -> None:
        for counter in ("total_annotations", "cancelled_annotations"):
            pager: Iterable[Any] = sdk.tasks.list(
                project=project_id,
                fields="all",
                include=_KEEP_FIELDS,
                query=json.dumps(_annotated_with(version, counter)),
                page_size=PAGE_SIZE,
            )
            for task in pager:
                for prediction in (_as_dict(p) for p in _as_dict(task).get("predictions") or []):
                    if prediction.get("model_version") == version:  # the filter matches substrings
                        found[int(prediction["id"])] = None

    _call(
        f"listing annotated tasks with predictions of {version}",
        collect,
        project_id=project_id,
        model_version=version,
    )
    jobs: list[tuple[str, Callable[[], object]]] = [
        (
            f"keeping prediction {prediction_id} as {keep_as}",
            functools.partial(sdk.predictions.update, prediction_id, model_version=keep_as),
        )
        for prediction_id in found
    ]
    _run_writes(jobs, project_id, version, None)
    if jobs:
        logger.info(
            "project=%s kept %d predictions of annotated tasks as %s",
            project_id,
            len(jobs),
            keep_as,
        )
    return len(jobs)


def delete_model_version(
    ls: LabelStudioClient, project_id: int, version: str, *, expected: int = 0
) -> int:
    """Delete every prediction of `version` in one call; returns how many went.

    Label Studio deletes them in one transaction but updates each one's task on the way
    (about 100-250 per second on 2 cores), so the request may take long: `expected` (how many
    the version holds) sets the timeout. Never pass the project's own version: Label Studio
    would then clear `project.model_version`.
    """
    answer = _call(
        f"deleting model version {version}",
        functools.partial(
            ls.api,
            "DELETE",
            f"api/projects/{int(project_id)}/model-versions",
            json={"model_version": version},
            timeout=_slow_call_timeout(expected),
        ),
        project_id=project_id,
        model_version=version,
    )
    deleted = answer.get("deleted_predictions") if isinstance(answer, dict) else None
    return int(deleted) if isinstance(deleted, int) else 0


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
def _chunks(
    items: Iterable[dict[str, Any]], max_items: int, max_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    """`items` in lists of at most `max_items` and about `max_bytes` of JSON (one item larger
    than that goes alone)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":")))
        if chunk and (len(chunk) == max_items or size + item_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def _slow_call_timeout(predictions: int) -> float:
    """Seconds to wait for an import or delete of that many predictions."""
    return SLOW_CALL_TIMEOUT_S + predictions / 50.0


def _annotated_with(version: str, counter: str) -> dict[str, Any]:
    """A Data Manager query: tasks with a prediction whose version contains `version` and a
    `counter` (total_annotations or cancelled_annotations) above 0."""
    return {
        "filters": {
            "conjunction": "and",
            "items": [
                {
                    "filter": "filter:tasks:predictions_model_versions",
                    "operator": "contains",
                    "type": "List",
                    "value": [version],
                },
                {
                    "filter": f"filter:tasks:{counter}",
                    "operator": "greater",
                    "type": "Number",
                    "value": 0,
                },
            ],
        }
    }


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


def _guarded(
    what: str, call: Callable[[], object], project_id: int, model_version: str
) -> str | None:
    """Run one write; return its error message instead of raising (collected above)."""
    try:
        _call(what, call, project_id=project_id, model_version=model_version)
    except LabelStudioApiError as exc:
        return str(exc)
    return None


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
