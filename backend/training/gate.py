"""The promotion gate: may a trained candidate replace the live model?

Pure: the figures come from `trainer.evaluate` on the run's validation split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from backend.training.classes import ClassChange


def gate_noise(candidate: float, live: float, val_boxes: int) -> float:
    """One standard error of the difference of two mAP@0.5 figures measured on `val_boxes`
    boxes (binomial approximation, sqrt(2 m (1 - m) / n) at their mean m).

    The gate rejects a candidate only when it is worse by more than this: on a handful of
    validation boxes a difference of 0.0001 is noise, and rejecting on it froze models.
    """
    if val_boxes <= 0:
        return 1.0
    mean = min(max((candidate + live) / 2.0, 0.0), 1.0)
    return math.sqrt(2.0 * mean * (1.0 - mean) / val_boxes)


def gate_decision(
    metrics: Mapping[str, Any],
    live_metrics: Mapping[str, Any] | None,
    change: ClassChange | None,
    tolerance: float,
    val_boxes: int,
) -> dict[str, Any]:
    """Whether the candidate may replace the live model, why, and on which classes.

    Same classes: mAP@0.5 against mAP@0.5. Changed classes: the mean AP@0.5 over the classes
    both models know (`change.shared`, each live class under its new name) that have
    validation boxes; the candidate's added classes are reported apart (`added_ap50`), as
    the live model has nothing to compare them with. A candidate passes unless it is worse
    by more than the margin (`tolerance`, or the noise of `val_boxes` boxes if larger), and
    always when no comparison exists (no live model, or no shared class with boxes).
    """
    gate: dict[str, Any] = {}
    if change is not None and not change.unchanged:
        added = metrics.get("per_class_ap50", {})
        gate["classes"] = change.as_dict()
        gate["added_ap50"] = {name: added.get(name) for name in change.added}
    if live_metrics is None or change is None:
        why = "no live model" if change is None else "no class in common with the live model"
        return {"passed": True, "reason": why, **gate}
    if change.unchanged:
        candidate, live, scope = metrics["map50"], live_metrics["map50"], "mAP50"
    else:
        ours, theirs = metrics["per_class_ap50"], live_metrics["per_class_ap50"]
        pairs = [
            (ours[new], theirs[change.old[old]])
            for new, old in zip(change.new, change.source, strict=True)
            if old is not None and new in ours and change.old[old] in theirs
        ]
        if not pairs:
            return {"passed": True, "reason": "no validation boxes of a shared class", **gate}
        candidate = sum(p[0] for p in pairs) / len(pairs)
        live = sum(p[1] for p in pairs) / len(pairs)
        scope = f"mAP50 on {len(pairs)} shared classes"
        gate["shared_map50"] = {"candidate": candidate, "live": live}
    margin = max(tolerance, gate_noise(candidate, live, val_boxes))
    why = (
        f"candidate {scope} {candidate:.4f} vs live {live:.4f} (margin {margin:.4f}: "
        f"tolerance {tolerance}, noise of {val_boxes} validation boxes)"
    )
    return {"passed": candidate >= live - margin, "reason": why, **gate}
