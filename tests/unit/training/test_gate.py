"""The promotion gate's noise margin: one standard error of an mAP difference."""

from __future__ import annotations

import math

import pytest

from backend.training.gate import gate_noise


def test_tiny_differences_on_few_boxes_are_noise() -> None:
    # the case that froze a model: 0.0001 vs 0.0002 mAP on a handful of boxes
    assert gate_noise(0.0001, 0.0002, 10) > 0.0001
    # at mAP 0.5 on 10 boxes one standard error is sqrt(2 * 0.25 / 10)
    assert gate_noise(0.5, 0.5, 10) == pytest.approx(math.sqrt(0.05))


def test_the_margin_shrinks_with_more_validation_boxes() -> None:
    margins = [gate_noise(0.6, 0.5, n) for n in (10, 100, 1000)]
    assert margins[0] > margins[1] > margins[2] > 0
    assert margins[1] / margins[2] == pytest.approx(math.sqrt(10))


def test_no_boxes_means_no_evidence() -> None:
    assert gate_noise(0.3, 0.9, 0) == 1.0
    assert gate_noise(0.0, 0.0, 50) == 0.0  # both models find nothing: no spread to allow
