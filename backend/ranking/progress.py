"""What a ranking tells its caller while it runs: a report per detector chunk and write batch,
to a callback that may stop the ranking by raising `RankingCancelled`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RankProgress:
    """What a progress callback receives: one stage's count so far."""

    project_id: int
    model_version: str
    stage: str  # "predict" or "write"
    done: int
    total: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (None before the first item)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None


ProgressCallback = Callable[[RankProgress], None]


@dataclass(frozen=True)
class RankRun:
    """Which project is ranked with which model, and who hears about progress: what every
    stage logs and reports with."""

    project_id: int
    model_version: str
    progress: ProgressCallback | None = None

    def report(self, stage: str, done: int, total: int, elapsed_s: float) -> RankProgress:
        return RankProgress(self.project_id, self.model_version, stage, done, total, elapsed_s)

    def notify(self, report: RankProgress) -> None:
        """Pass a report to the callback, which may raise RankingCancelled."""
        if self.progress is not None:
            self.progress(report)
