"""The queue's writes into Label Studio, as a ranking makes them: publish a new queue version
(bulk import, then one switch of the project), then remove the old ones.

Crash safety: the project points at the old, complete queue until the new one is wholly
imported and counted, so a crash at any point leaves a queue Label Studio serves; a partly
imported version is never served, and the next ranking removes it with every other queue
version of ours but the current one and the one served until its switch (kept one ranking
longer for annotators who have one of its tasks open: Label Studio refuses an annotation whose
`parent_prediction` is gone). Before a version goes, its predictions on annotated tasks move
to the detector's version (`predictions.keep_annotated`), so no annotation loses the
prediction it started from and the annotation ledger can always read it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.predictions import (
    DesiredPrediction,
    WriteProgress,
    delete_model_version,
    import_queue,
    keep_annotated,
    list_model_versions,
    read_project,
    set_queue_sampling,
)
from backend.labelstudio.versions import detector_version, next_queue_version, retired_versions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """What `publish_queue` did."""

    version: str  # the queue version the project now serves
    imported: int
    before: Mapping[str, int]  # the project's model versions (and counts) before the import
    import_s: float  # seconds of the import (the rest of the call is the switch)


def publish_queue(
    ls: LabelStudioClient,
    project_id: int,
    project: Any,
    model_version: str,
    predictions: Sequence[tuple[int, DesiredPrediction]],
    *,
    progress: WriteProgress | None = None,
) -> Published:
    """Import `predictions` (task id, prediction; queue order) as the next queue version of
    `model_version` and switch the project (`project`: as read at the start) to it, with
    uncertainty sampling. A failure or a `progress` that raises before the switch leaves the
    project on its old queue."""
    before = list_model_versions(ls, project_id)
    target = str(next_queue_version(model_version, before))
    started = time.perf_counter()
    imported = import_queue(ls, project_id, target, predictions, progress=progress)
    import_s = time.perf_counter() - started
    set_queue_sampling(ls, project_id, project, target)
    return Published(target, imported, before, import_s)


@dataclass(frozen=True)
class Removed:
    """What `remove_old_versions` did."""

    versions: tuple[str, ...] = ()
    predictions: int = 0
    kept: int = 0


def remove_old_versions(
    ls: LabelStudioClient,
    project_id: int,
    versions: Mapping[str, int],
    current: str,
    before: Any,
) -> Removed:
    """Delete the queue versions among `versions` (the project's, listed before the import)
    but `current` and the one the project served before the switch (`before`: the project as
    read at the start), keeping their predictions on annotated tasks as the detector's
    version (`predictions.keep_annotated`).

    Nothing is deleted unless the project still points at `current` (someone may have
    switched it since; deleting the project's own version would also clear it)."""
    now = read_project(ls, project_id).model_version
    if now != current:
        logger.warning(
            "project=%s now serves model_version %r, not %r: old queue versions left in place",
            project_id,
            now,
            current,
        )
        return Removed()
    grace = str(before.model_version or "") or None
    gone: list[str] = []
    deleted = kept = 0
    for version in retired_versions(versions, current, grace):
        kept += keep_annotated(ls, project_id, version, detector_version(version))
        deleted += delete_model_version(ls, project_id, version, expected=versions[version])
        gone.append(version)
        logger.info("project=%s removed queue version %s", project_id, version)
    return Removed(tuple(gone), deleted, kept)
