"""The audit slice: which of a project's tasks measure its models.

Every task has a stable random key in [0, 1), the hash of its id. The tasks whose key falls
below the validation share (TRAIN_VAL_PERCENT) form the audit slice: the queue serves them at
that rate in key order, outside the strategy's ranking (`strategies.Strategy.audit_share`),
and training validates on the labeled tasks with the lowest keys, so the validation split,
the promotion gate and the quality figure rest on an unbiased sample of the project rather
than on the queue's hardest picks.
"""

from __future__ import annotations

import hashlib


def split_key(task_id: int) -> float:
    """A task's stable place in [0, 1): its id's hash (never its position or import order)."""
    digest = hashlib.sha256(f"task-{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
