"""Annotator seconds for the edits of one image (`analytics.matching`).

Seconds per action, from published measurements:
- drawing a box: about 7 s with extreme clicking (Papadopoulos et al., ICCV 2017), 25-35 s
  the traditional way (Su, Deng & Fei-Fei 2012: 25.5 s to draw plus quality checks); the
  default is the traditional figure's low end, as Label Studio's rectangle tool is drawn
  corner to corner;
- verifying (accepting) a box: about 1.6 s (Papadopoulos et al., CVPR 2016);
- adjusting a box: about 5 s, relabeling about 3 s and deleting about 2 s (assisted-labeling
  edit-cost models; no single study measured all of them: treat them as estimates and use
  `scaled` for a sensitivity run);
- a per-image overhead for opening, looking over and submitting a task.
A project's real figures replace these once it has enough timed annotations: Label Studio
records each annotation's `lead_time`, and `fit_action_seconds` fits the seconds to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.optimize import nnls

from backend.analytics.matching import Edit


@dataclass(frozen=True)
class ActionSeconds:
    """Seconds per edit, plus per image."""

    accepted: float = 1.6
    adjusted: float = 5.0
    relabeled: float = 3.0
    deleted: float = 2.0
    drawn: float = 25.0
    per_image: float = 3.0

    def scaled(self, drawn_factor: float) -> ActionSeconds:
        """The same costs with drawing `drawn_factor` times as expensive (a sensitivity run)."""
        if drawn_factor <= 0:
            raise ValueError(f"drawn_factor must be > 0, got {drawn_factor}")
        return replace(self, drawn=self.drawn * drawn_factor)

    def image_seconds(self, counts: Mapping[Edit, int]) -> float:
        """Seconds to turn one image's pre-annotation into its submitted annotation."""
        return self.seconds(counts, images=1)

    def seconds(self, counts: Mapping[str, int], images: int) -> float:
        """Seconds for `images` images whose edits add up to `counts`."""
        per_edit = {
            Edit.ACCEPTED: self.accepted,
            Edit.ADJUSTED: self.adjusted,
            Edit.RELABELED: self.relabeled,
            Edit.DELETED: self.deleted,
            Edit.DRAWN: self.drawn,
        }
        return self.per_image * images + sum(per_edit[Edit(e)] * n for e, n in counts.items())

    def expected(self, shown: npt.ArrayLike, hidden: npt.ArrayLike) -> float:
        """Predicted seconds for one image before anyone has looked at it, from the model's
        confidences: a box shown with confidence c is adjusted with probability c and deleted
        otherwise; a box kept but not shown (below the display threshold) is a missed object,
        drawn, with probability c; plus the per-image overhead. What the queue divides
        information by when it ranks per second.
        """
        shown_c = np.asarray(shown, dtype=np.float64)
        hidden_c = np.asarray(hidden, dtype=np.float64)
        return float(
            self.per_image
            + np.sum(shown_c * self.adjusted + (1.0 - shown_c) * self.deleted)
            + np.sum(hidden_c * self.drawn)
        )


MIN_FIT_ANNOTATIONS = 30  # fewer timed annotations keep the published seconds


@dataclass(frozen=True)
class FittedSeconds:
    """A project's seconds per action, and what they rest on."""

    seconds: ActionSeconds
    annotations: int  # timed annotations the fit used
    fitted: tuple[str, ...]  # the actions (and "per_image") measured; the rest are published

    @property
    def published(self) -> bool:
        """Whether every figure is still the published default."""
        return not self.fitted


def fit_action_seconds(
    counts: npt.ArrayLike,
    lead_times: npt.ArrayLike,
    minimum: int = MIN_FIT_ANNOTATIONS,
    default: ActionSeconds | None = None,
) -> FittedSeconds:
    """Seconds per accepted, adjusted, relabeled, deleted and drawn box plus a per-image
    overhead that best explain the annotations' lead times (non-negative least squares,
    `scipy.optimize.nnls`). An action no annotation contains keeps its published figure;
    with fewer than `minimum` annotations every figure does.

    Args:
        counts: (n, 5) edits per annotation, columns in `Edit` order.
        lead_times: (n,) the seconds Label Studio measured per annotation (> 0).
    """
    default = default or ActionSeconds()
    edits = np.asarray(counts, dtype=np.float64).reshape(-1, len(Edit))
    times = np.asarray(lead_times, dtype=np.float64).reshape(-1)
    if edits.shape[0] != times.shape[0]:
        raise ValueError(f"{edits.shape[0]} edit counts for {times.shape[0]} lead times")
    if times.size and (not np.isfinite(times).all() or (times <= 0).any()):
        raise ValueError("lead times must be finite and > 0")
    if times.size < max(minimum, 1):
        return FittedSeconds(default, int(times.size), ())
    design = np.column_stack([edits, np.ones(times.size)])
    names = [edit.value for edit in Edit] + ["per_image"]
    seen = [bool(column.any()) for column in design.T]
    solution, _ = nnls(design[:, seen], times)
    fitted = tuple(name for name, present in zip(names, seen, strict=True) if present)
    values = {name: float(getattr(default, name)) for name in names}
    values.update({name: float(x) for name, x in zip(fitted, solution, strict=True)})
    return FittedSeconds(ActionSeconds(**values), int(times.size), fitted)
