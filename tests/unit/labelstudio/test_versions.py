"""Queue versions: the format, the next version after a crash, and which versions a ranking
removes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.labelstudio.versions import (
    QueueVersion,
    detector_version,
    next_queue_version,
    parse_queue_version,
    retired_versions,
)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("v3.q1", QueueVersion("v3", 1)),
        ("v3.q12", QueueVersion("v3", 12)),
        ("shapes-1a2b3c4d.q2", QueueVersion("shapes-1a2b3c4d", 2)),
        ("a.q1.q2", QueueVersion("a.q1", 2)),
    ],
)
def test_queue_versions_parse_into_model_and_number(text: str, parsed: QueueVersion) -> None:
    assert parse_queue_version(text) == parsed
    assert str(parsed) == text
    assert detector_version(text) == parsed.model_version


@pytest.mark.parametrize(
    "text", ["v3", "", ".q1", "v3.q0", "v3.q01", "v3.q", "v3.qx", "v3.q1 ", "ls-active-yolo", None]
)
def test_other_strings_are_not_queue_versions(text: str | None) -> None:
    assert parse_queue_version(text) is None
    if isinstance(text, str):
        assert detector_version(text) == text


@given(st.text(min_size=1), st.integers(1, 10**8))
def test_format_and_parse_round_trip(model: str, number: int) -> None:
    assert parse_queue_version(str(QueueVersion(model, number))) == QueueVersion(model, number)


def test_the_next_version_is_above_every_one_of_the_same_model() -> None:
    assert next_queue_version("v3", {}) == QueueVersion("v3", 1)
    assert next_queue_version("v3", ["v3", "ls-active-yolo"]) == QueueVersion("v3", 1)
    # an orphan of a crashed ranking (v3.q4) is skipped, other models do not count
    assert next_queue_version("v3", ["v3.q2", "v3.q4", "v4.q9", "v33.q7"]) == QueueVersion("v3", 5)
    assert str(next_queue_version("v4", ["v3.q2"])) == "v4.q1"
    with pytest.raises(ValueError, match="non-empty string"):
        next_queue_version("", [])


def test_every_queue_version_but_the_current_and_the_grace_one_is_retired() -> None:
    listed = ["v3.q1", "v3.q2", "v3.q3", "v2.q7", "v3", "user-import", "v4.q1"]
    assert retired_versions(listed, "v4.q1", "v3.q2") == ["v2.q7", "v3.q1", "v3.q3"]
    assert retired_versions(listed, "v4.q1", None) == ["v2.q7", "v3.q1", "v3.q2", "v3.q3"]
    assert retired_versions(["v4.q1"], "v4.q1", "ls-active-yolo") == []
