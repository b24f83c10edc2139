"""The promotion gate: its noise margin (one standard error of an mAP difference) and what it
compares when the classes changed."""

from __future__ import annotations

import math

import pytest

from backend.training.classes import class_change
from backend.training.gate import gate_decision, gate_noise


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


def _metrics(map50: float, **per_class: float) -> dict[str, object]:
    return {"map50": map50, "per_class_ap50": per_class}


def test_same_classes_compare_map50() -> None:
    change = class_change(["Car", "Person"], ["Car", "Person"])
    gate = gate_decision(_metrics(0.70), _metrics(0.80), change, 0.05, 10_000)
    assert not gate["passed"]
    assert gate["reason"].startswith("candidate mAP50 0.7000 vs live 0.8000")
    assert "classes" not in gate
    assert gate_decision(_metrics(0.76), _metrics(0.80), change, 0.05, 10_000)["passed"]


def test_changed_classes_compare_on_the_classes_both_know() -> None:
    # Person renamed Pedestrian through predicted_values, Van added, Bike removed
    change = class_change(
        ["Car", "Person", "Bike"], ["Van", "Car", "Pedestrian"], {"person": "Pedestrian"}
    )
    candidate = _metrics(0.40, Van=0.0, Car=0.9, Pedestrian=0.6)
    live = _metrics(0.70, Car=0.9, Person=0.8, Bike=0.4)
    gate = gate_decision(candidate, live, change, 0.0, 10_000)
    # shared: Car (0.9 vs 0.9) and Pedestrian/Person (0.6 vs 0.8); the new Van's 0.0 and the
    # live model's Bike count for neither side
    assert gate["shared_map50"] == {"candidate": pytest.approx(0.75), "live": pytest.approx(0.85)}
    assert not gate["passed"]
    assert "on 2 shared classes" in gate["reason"]
    assert gate["added_ap50"] == {"Van": 0.0}
    assert gate["classes"] == {
        "shared": ["Car", "Pedestrian"],
        "added": ["Van"],
        "removed": ["Bike"],
        "renamed": {"Person": "Pedestrian"},
    }
    better = _metrics(0.5, Van=0.1, Car=0.95, Pedestrian=0.8)
    assert gate_decision(better, live, change, 0.0, 10_000)["passed"]


def test_without_a_comparison_the_candidate_passes_and_says_why() -> None:
    disjoint = class_change(["Bike"], ["Van"])
    gate = gate_decision(_metrics(0.1, Van=0.1), None, disjoint, 0.0, 10)
    assert gate["passed"] and gate["reason"] == "no class in common with the live model"
    assert gate_decision(_metrics(0.1), None, None, 0.0, 10) == {
        "passed": True,
        "reason": "no live model",
    }
    # shared classes without validation boxes: nothing to compare either
    change = class_change(["Car"], ["Car", "Van"])
    gate = gate_decision(_metrics(0.2, Van=0.2), _metrics(0.0), change, 0.0, 10)
    assert gate["passed"] and gate["reason"] == "no validation boxes of a shared class"
