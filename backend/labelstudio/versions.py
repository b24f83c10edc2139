"""Queue versions: the `model_version` strings the queue's predictions carry in Label Studio.

Each ranking writes its queue as a new version, `<model version>.q<n>` (`v3.q1` for the first
ranking of registry version v3, `v3.q2` when it is re-ranked without retraining), so the whole
queue can be imported in bulk, served by switching `project.model_version` once, and removed
with one `DELETE /api/projects/{id}/model-versions` per old version. A queue version never
equals a detector's own version: predictions Label Studio stored from `/predict` before the
first ranking (under the detector's version) never mix into an imported queue.

This module owns the format: building, parsing, the detector version behind a queue version,
and which of a project's versions are ours to remove. A string of another form (a detector
version, another backend's) is never treated as a queue version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_QUEUE_VERSION = re.compile(r"(?P<model>.+)\.q(?P<n>[1-9][0-9]{0,8})", re.DOTALL)


@dataclass(frozen=True)
class QueueVersion:
    """A parsed queue version: the detector version that ranked it and the ranking's number."""

    model_version: str
    number: int

    def __str__(self) -> str:
        return f"{self.model_version}.q{self.number}"


def parse_queue_version(text: object) -> QueueVersion | None:
    """The queue version `text` names, or None when it is not one."""
    if not isinstance(text, str):
        return None
    match = _QUEUE_VERSION.fullmatch(text)
    if match is None:
        return None
    return QueueVersion(match["model"], int(match["n"]))


def detector_version(text: str) -> str:
    """The detector version behind a prediction's `model_version`: the model that drew its
    boxes (`v3` for `v3.q2`; any other string is itself)."""
    parsed = parse_queue_version(text)
    return text if parsed is None else parsed.model_version


def next_queue_version(model_version: str, existing: Iterable[str]) -> QueueVersion:
    """The version a new ranking of `model_version` writes: one above every queue version of
    that model among `existing` (the project's versions), so it is always empty in Label
    Studio, even after a crashed ranking left a half-imported one behind."""
    if not isinstance(model_version, str) or not model_version:
        raise ValueError(f"model_version must be a non-empty string, got {model_version!r}")
    numbers = [
        parsed.number
        for parsed in map(parse_queue_version, existing)
        if parsed is not None and parsed.model_version == model_version
    ]
    return QueueVersion(model_version, 1 + max(numbers, default=0))


def retired_versions(existing: Iterable[str], current: str, grace: str | None) -> list[str]:
    """The queue versions among `existing` to remove: every one but `current` (the project's
    queue now) and `grace` (the queue it served until this ranking's switch: annotators may
    still have one of its tasks open, and Label Studio refuses an annotation whose
    `parent_prediction` is gone). Sorted; versions that are not queue versions never appear.
    """
    keep = {current, grace}
    return sorted(v for v in set(existing) if v not in keep and parse_queue_version(v) is not None)
