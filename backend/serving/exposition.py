"""/metrics as Prometheus text, through `prometheus_client`: the JSON status's per-project
figures as gauges, plus the client's usual process and platform metrics.

A fresh registry per scrape: the figures come from the event store, the registry and the
annotation ledger (shared by every worker process), not from counters kept in one process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "ls_active_yolo_"


class _StatusCollector(Collector):
    """The gauges of one /metrics JSON answer."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(PREFIX + name, text, labels=["project", *labels])

        queued = gauge("queued_events", "Webhook events not yet consumed by training.")
        live = gauge(
            "live_model", "Live model version per project (value is always 1).", ("version",)
        )
        duration = gauge("last_training_duration_seconds", "Duration of the latest training run.")
        map50 = gauge("last_training_map50", "Validation mAP50 of the latest trained candidate.")
        state = gauge(
            "last_training_state",
            "State of the latest training run (value is always 1).",
            ("state",),
        )
        annotations = gauge("annotations", "Annotations in the ledger.")
        accepted = gauge(
            "boxes_accepted_ratio",
            "Shown (predicted) boxes annotators kept unchanged, of all shown boxes, per model "
            "version of the prediction.",
            ("version",),
        )
        saved = gauge(
            "seconds_saved",
            "Annotator seconds saved against drawing every box, over timed annotations.",
        )
        for project, info in self._data["projects"].items():
            queued.add_metric([project], info["queued_events"])
            if info["live_version"]:
                live.add_metric([project, info["live_version"]], 1)
            last = info.get("last_training")
            if last:
                duration.add_metric([project], last["duration_s"])
                state.add_metric([project, str(last["state"])], 1)
                if last.get("metrics"):
                    map50.add_metric([project], last["metrics"]["map50"])
            report = info.get("annotations")
            if report:
                annotations.add_metric([project], report["overall"]["annotations"])
                if report["overall"]["seconds_saved"] is not None:
                    saved.add_metric([project], report["overall"]["seconds_saved"])
                for figures in report["by_version"]:
                    if figures["acceptance_rate"] is not None:
                        accepted.add_metric([project, figures["group"]], figures["acceptance_rate"])
        yield from (queued, live, duration, map50, state, annotations, accepted, saved)


def prometheus_text(data: Mapping[str, Any]) -> tuple[bytes, str]:
    """The exposition of a /metrics JSON answer, and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(data))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
