"""The stored ranking: the ranked predictions of the live model, which `/predict` answers from.

One JSON file per project and model version, in the project's ranking folder
(`backend.layout`: projects/<id>/ranking/<version>.json), written whole by `atomic_write` once
Label Studio serves the queue it describes:

    {"project_id": 4, "model_version": "v3", "queue_version": "v3.q2", "strategy": "hybrid",
     "created_at": <unix s>, "n_ranked": 2, "written": 2,
     "tasks": {"11": {"result": [<regions>], "score": 0.0, "rank": 0, "strategy_rank": 0,
                      "strategy_score": 0.93, "ref": "<image>"},
               ...}}

`queue_version` is the `model_version` the queue's predictions carry in Label Studio
(`backend.labelstudio.versions`), which `/setup` and `/predict` answer with while this file is
the project's ranking, so Label Studio shows and keeps what they return. `rank` is the task's
place in Label Studio's queue, `strategy_rank`/`strategy_score` the strategy's own order and
score, `ref` the image reference that was ranked (a task whose image changed since is not
answered from the file).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.files import atomic_write
from backend.layout import ModelDir
from backend.ranking.version_files import remove_other_versions, version_file

logger = logging.getLogger(__name__)

_SUFFIX = ".json"


def ranking_path(model_dir: Path, project_id: int, model_version: str) -> Path:
    """The stored ranking of `model_version`."""
    return version_file(
        ModelDir(Path(model_dir)).project(project_id).ranking, model_version, _SUFFIX
    )


def ranking_entry(
    *,
    result: list[dict[str, Any]],
    score: float,
    rank: int,
    strategy_rank: int,
    strategy_score: float,
    ref: str,
) -> dict[str, Any]:
    """One ranked task as the file stores it (see the module docstring)."""
    return {
        "result": result,
        "score": score,
        "rank": rank,
        "strategy_rank": strategy_rank,
        "strategy_score": strategy_score,
        "ref": ref,
    }


def ranking_document(
    *,
    project_id: int,
    model_version: str,
    queue_version: str,
    strategy: str,
    created_at: float,
    tasks: Mapping[str, dict[str, Any]],
    written: int,
) -> dict[str, Any]:
    """The whole file: `tasks` maps each ranked task id (a string) to its `ranking_entry`;
    `written` of them, the queue's first, are imported into Label Studio."""
    return {
        "project_id": project_id,
        "model_version": model_version,
        "queue_version": queue_version,
        "strategy": strategy,
        "created_at": created_at,
        "n_ranked": len(tasks),
        "written": written,
        "tasks": dict(tasks),
    }


def save_ranking(path: Path, ranking: Mapping[str, Any]) -> Path:
    """Write a ranking document atomically (temp file + os.replace)."""
    atomic_write(path, json.dumps(ranking, separators=(",", ":")).encode("utf-8"))
    return path


def load_ranking(model_dir: Path, project_id: int, model_version: str) -> dict[str, Any] | None:
    """The stored ranking of `model_version`, or None (missing or unreadable)."""
    path = ranking_path(model_dir, project_id, model_version)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _read_ranking(str(path), stat.st_mtime_ns, stat.st_size)


def stored_queue_version(model_dir: Path, project_id: int, model_version: str) -> str | None:
    """The version Label Studio's queue of `model_version` carries (the stored ranking's), or
    None when the project has no stored ranking of that model."""
    ranking = load_ranking(model_dir, project_id, model_version)
    if ranking is None or ranking.get("model_version") != model_version:
        return None
    version = ranking.get("queue_version")
    return version if isinstance(version, str) and version else None


def precomputed_prediction(
    model_dir: Path,
    project_id: int,
    task_id: int,
    model_version: str,
    *,
    image_ref: str | None = None,
) -> dict[str, Any] | None:
    """The ranked prediction of a task, for `/predict` to answer without the detector.

    Returns `{"result", "score", "model_version"}` (a fresh copy; `model_version` is the queue
    version the prediction carries in Label Studio) when the project's stored ranking is of
    `model_version` and holds the task, and (if `image_ref` is given) the task still points at
    the image that was ranked; else None. Reads are cached per file version, so a call is a
    dict lookup once the file has been read.
    """
    ranking = load_ranking(model_dir, project_id, model_version)
    queue = stored_queue_version(model_dir, project_id, model_version)
    if ranking is None or queue is None:
        return None
    entry = ranking.get("tasks", {}).get(str(int(task_id)))
    if not isinstance(entry, dict):
        return None
    if image_ref is not None and entry.get("ref") != image_ref:
        return None
    return {
        "result": copy.deepcopy(entry["result"]),
        "score": entry["score"],
        "model_version": queue,
    }


def newest_ranking(model_dir: Path, project_id: int) -> dict[str, Any] | None:
    """The project's most recently written ranking, whichever model made it, or None."""
    folder = ModelDir(Path(model_dir)).project(project_id).ranking
    if not folder.is_dir():
        return None
    files = [(p.stat(), p) for p in folder.iterdir() if p.name.endswith(_SUFFIX)]
    if not files:
        return None
    stat, path = max(files, key=lambda pair: pair[0].st_mtime_ns)
    return _read_ranking(str(path), stat.st_mtime_ns, stat.st_size)


def remove_other_rankings(model_dir: Path, project_id: int, keep_version: str) -> list[Path]:
    """Delete the project's stored rankings of every version but `keep_version`; returns them."""
    folder = ModelDir(Path(model_dir)).project(project_id).ranking
    removed = remove_other_versions(folder, _SUFFIX, keep_version)
    for path in removed:
        logger.debug("removed %s (older model version)", path)
    return removed


@functools.lru_cache(maxsize=8)
def _read_ranking(path: str, _mtime_ns: int, _size: int) -> dict[str, Any] | None:
    """Parse a ranking file; keyed by its mtime and size, so a rewrite is read afresh."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable ranking %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None
