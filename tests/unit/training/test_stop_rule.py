"""The end-of-epoch rule over ultralytics' stop decision: a minimum number of epochs before an
early stop counts, and a time limit that always stops."""

from __future__ import annotations

import time
from dataclasses import replace
from types import SimpleNamespace

from backend.config import Settings
from backend.project_params import TrainParams
from backend.training.trainer import stop_rule

PARAMS = replace(TrainParams.resolve(Settings(), {}), min_epochs=5, time_limit=0.0)


def after_epoch(rule: object, epoch: int, stop: bool, epochs: int = 200) -> bool:
    trainer = SimpleNamespace(epoch=epoch - 1, epochs=epochs, stop=stop)
    rule(trainer)  # type: ignore[operator]
    return bool(trainer.stop)


def test_no_early_stop_before_the_minimum() -> None:
    rule = stop_rule(PARAMS, time.monotonic(), "test")
    assert after_epoch(rule, 3, stop=True) is False  # patience ran out too early: ignored
    assert after_epoch(rule, 5, stop=True) is True  # from the minimum on, it counts
    assert after_epoch(rule, 3, stop=True, epochs=3) is True  # the cap wins over the minimum
    assert after_epoch(rule, 7, stop=False) is False


def test_the_time_limit_stops_even_before_the_minimum() -> None:
    rule = stop_rule(replace(PARAMS, time_limit=10.0), time.monotonic() - 11.0, "test")
    assert after_epoch(rule, 2, stop=False) is True
    unlimited = stop_rule(PARAMS, time.monotonic() - 1e6, "test")
    assert after_epoch(unlimited, 9, stop=False) is False
