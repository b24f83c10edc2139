"""The annotation analytics page (`GET /analytics/<project>`): the report's tables and two
plots, as one self-contained HTML document (the plots are PNGs inlined as data URIs, drawn
with matplotlib's object API: no pyplot state shared between request threads, no fonts
fetched).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from backend.analytics.report import NO_PREDICTION, Figures, ProjectReport, cells, render

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
"""


def analytics_html(report: ProjectReport) -> str:
    """The page of one project's report."""
    title = f"Project {report.project_id}: what the pre-annotations saved"
    summary = html.escape(render(report).split("\n\n")[0])
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<pre>{summary}</pre>",
    ]
    if report.overall.annotations:
        plots = _plots(report)
        parts.append(f"<img alt='figures over annotations and versions' src='{plots}'>")
    else:
        parts.append("<p>No annotations recorded yet.</p>")
    for heading, rows in report.sections():
        parts += [f"<h2>{heading}</h2>", _html_table(rows)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_table(rows: Sequence[Figures]) -> str:
    head, *body = cells(rows)
    lines = ["".join(f"<th>{html.escape(text)}</th>" for text in head)]
    lines += ["".join(f"<td>{html.escape(text)}</td>" for text in line) for line in body]
    return "<table>" + "".join(f"<tr>{line}</tr>" for line in lines) + "</table>"


def _plots(report: ProjectReport) -> str:
    """Cumulative minutes saved over annotations, and acceptance and seconds per version."""
    figure = Figure(figsize=(11, 3.8), dpi=90)
    saved_ax, version_ax = figure.subplots(1, 2)
    saved = report.saved_by_annotation
    saved_ax.plot(np.arange(1, saved.size + 1), np.cumsum(saved) / 60.0, color="#1f77b4")
    saved_ax.set(
        title="Minutes saved against drawing every box",
        xlabel="timed annotations, in order",
        ylabel="minutes (cumulative)",
    )
    versions = [f for f in report.by_version if f.group != NO_PREDICTION]
    names = [f.group for f in versions]
    version_ax.bar(names, [100 * (f.acceptance_rate or 0.0) for f in versions], color="#2ca02c")
    version_ax.set(title="Per model version", ylabel="boxes accepted as shown (%)")
    seconds_ax = version_ax.twinx()
    seconds_ax.plot(names, [f.seconds_per_task or 0.0 for f in versions], "o-", color="#d62728")
    seconds_ax.set_ylabel("seconds per task", color="#d62728")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
