"""Progress reports of a ranking."""

from __future__ import annotations

from backend.ranking.progress import RankProgress, RankRun


def test_progress_rate_and_eta() -> None:
    report = RankProgress(1, "v1", "predict", done=30, total=90, elapsed_s=10.0)
    assert report.rate == 3.0
    assert report.eta_s == 20.0
    assert RankProgress(1, "v1", "predict", 0, 10, 0.0).eta_s is None


def test_a_run_reports_to_its_callback_only_when_it_has_one() -> None:
    heard: list[RankProgress] = []
    run = RankRun(4, "v2", heard.append)

    report = run.report("write", 5, 10, 2.0)
    run.notify(report)
    RankRun(4, "v2").notify(report)  # no callback: nothing happens

    assert report == RankProgress(4, "v2", "write", 5, 10, 2.0)
    assert heard == [report]
