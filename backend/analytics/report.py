"""What the pre-annotations saved, read from the ledger: per project, per model version of
the parent prediction and per annotator. Pure: records in, figures and text out.

- acceptance rate: shown boxes kept as they were, of all shown boxes;
- precision / recall at IoU 0.5 of the shown boxes against what annotators submitted (kept or
  adjusted boxes are hits; relabeled ones are not);
- seconds per task: the mean of Label Studio's lead_time over timed annotations;
- seconds saved: for each timed annotation, what drawing its submitted boxes by hand would
  have cost (per-image overhead + boxes x seconds per drawn box, from the project's fitted
  time model) minus its lead_time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from backend.analytics.cost import FittedSeconds, fit_action_seconds
from backend.analytics.ledger import AnnotationRecord
from backend.analytics.matching import Edit

NO_PREDICTION = "(none)"  # the version label of annotations drawn without a prediction


@dataclass(frozen=True)
class Figures:
    """The figures of one group of annotations."""

    group: str
    annotations: int
    cancelled: int
    shown: int
    submitted: int
    accepted: int
    adjusted: int
    relabeled: int
    deleted: int
    drawn: int
    acceptance_rate: float | None
    precision: float | None
    recall: float | None
    boxes_per_task: float | None
    seconds_per_task: float | None
    seconds_saved: float | None


@dataclass(frozen=True)
class ProjectReport:
    project_id: int
    time_model: FittedSeconds
    overall: Figures
    by_version: list[Figures]
    by_annotator: list[Figures]

    def as_dict(self) -> dict[str, Any]:
        model = self.time_model
        return {
            "project_id": self.project_id,
            "time_model": {
                "seconds": asdict(model.seconds),
                "annotations": model.annotations,
                "fitted": list(model.fitted),
            },
            "overall": asdict(self.overall),
            "by_version": [asdict(f) for f in self.by_version],
            "by_annotator": [asdict(f) for f in self.by_annotator],
        }


def project_report(project_id: int, records: Sequence[AnnotationRecord]) -> ProjectReport:
    """Every figure of a project's ledger rows, priced with its own fitted time model."""
    timed = [r for r in records if r.lead_time is not None and not r.cancelled]
    model = fit_action_seconds([r.edits for r in timed], [float(r.lead_time or 0) for r in timed])
    return ProjectReport(
        project_id=project_id,
        time_model=model,
        overall=group_figures("all", records, model),
        by_version=_grouped(records, lambda r: r.model_version or NO_PREDICTION, model),
        by_annotator=_grouped(records, lambda r: r.annotator or "(unknown)", model),
    )


def group_figures(group: str, records: Sequence[AnnotationRecord], model: FittedSeconds) -> Figures:
    """The figures of `records` (see the module docstring)."""
    kept = [r for r in records if not r.cancelled]
    total = {e.value: sum(r.edits[e.value] for r in kept) for e in Edit}
    shown = sum(r.shown for r in kept)
    submitted = sum(r.submitted for r in kept)
    hits = total[Edit.ACCEPTED] + total[Edit.ADJUSTED]
    timed = [r for r in kept if r.lead_time is not None]
    costs = model.seconds
    saved = [costs.per_image + costs.drawn * r.submitted - (r.lead_time or 0.0) for r in timed]
    return Figures(
        group=group,
        annotations=len(records),
        cancelled=len(records) - len(kept),
        shown=shown,
        submitted=submitted,
        **{e.value: total[e.value] for e in Edit},
        acceptance_rate=_ratio(total[Edit.ACCEPTED], shown),
        precision=_ratio(hits, shown),
        recall=_ratio(hits, submitted),
        boxes_per_task=_ratio(submitted, len(kept)),
        seconds_per_task=_ratio(sum(r.lead_time or 0.0 for r in timed), len(timed)),
        seconds_saved=sum(saved) if timed else None,
    )


def render(report: ProjectReport) -> str:
    """A plain-text report for a terminal."""
    model = report.time_model
    basis = (
        f"fitted on {model.annotations} timed annotations ({', '.join(model.fitted)})"
        if model.fitted
        else f"published defaults ({model.annotations} timed annotations; the fit needs more)"
    )
    seconds = ", ".join(f"{k} {v:.1f}" for k, v in asdict(model.seconds).items())
    lines = [
        f"Project {report.project_id}: {report.overall.annotations} annotations",
        f"Seconds per action: {seconds} ({basis})",
        "",
    ]
    for title, rows in (
        ("By model version", [report.overall, *report.by_version]),
        ("By annotator", report.by_annotator),
    ):
        lines += [title, _table(rows), ""]
    return "\n".join(lines).rstrip() + "\n"


_COLUMNS = (
    ("group", "group", "{}"),
    ("annotations", "tasks", "{}"),
    ("shown", "shown", "{}"),
    ("submitted", "submitted", "{}"),
    ("accepted", "accepted", "{}"),
    ("adjusted", "adjusted", "{}"),
    ("relabeled", "relabeled", "{}"),
    ("deleted", "deleted", "{}"),
    ("drawn", "drawn", "{}"),
    ("acceptance_rate", "accept %", "{:.0%}"),
    ("precision", "precision", "{:.2f}"),
    ("recall", "recall", "{:.2f}"),
    ("seconds_per_task", "s/task", "{:.1f}"),
    ("seconds_saved", "saved min", "{:.1f}"),
)


def _table(rows: Sequence[Figures]) -> str:
    def cell(figures: Figures, key: str, form: str) -> str:
        value = getattr(figures, key)
        if value is None:
            return "-"
        return form.format(value / 60.0 if key == "seconds_saved" else value)

    body = [[title for _, title, _ in _COLUMNS]]
    body += [[cell(f, key, form) for key, _, form in _COLUMNS] for f in rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(_COLUMNS))]
    lines = []
    for row in body:
        pairs = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [text.rjust(width) for text, width in pairs]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _grouped(
    records: Sequence[AnnotationRecord],
    key: Callable[[AnnotationRecord], str],
    model: FittedSeconds,
) -> list[Figures]:
    groups: dict[str, list[AnnotationRecord]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    return [group_figures(name, rows, model) for name, rows in sorted(groups.items())]


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None
