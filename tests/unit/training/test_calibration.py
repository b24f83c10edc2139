"""The display threshold: the confidence from which a version's boxes cost annotators least."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.analytics.cost import ActionSeconds
from backend.analytics.matching import LabeledBox
from backend.models.detector import Box, ImageDetections, ModelSource
from backend.models.registry import ModelVersion
from backend.training.calibration import cheapest_threshold


def found(*boxes: tuple[float, float, float, float, float]) -> ImageDetections:
    return ImageDetections(
        boxes=tuple(Box(*b[:4], class_id=0, conf=b[4], class_scores=np.zeros(1)) for b in boxes),
        embedding=np.zeros(2, dtype=np.float32),
    )


TRUTH = [[LabeledBox(0, 0, 10, 10, "a"), LabeledBox(20, 20, 30, 30, "a")]]


def test_an_under_confident_model_is_shown_from_a_low_threshold() -> None:
    right = found((0, 0, 10, 10, 0.12), (20, 20, 30, 30, 0.08))  # both right, both unsure
    threshold, seconds = cheapest_threshold(
        [right], TRUTH, ["a"], ActionSeconds(), 0.25, (0.05, 0.25)
    )
    assert threshold == 0.05
    costs = ActionSeconds()
    assert seconds == {
        0.05: pytest.approx(costs.per_image + 2 * costs.accepted),
        0.25: pytest.approx(costs.per_image + 2 * costs.drawn),
    }


def test_noise_below_the_right_boxes_raises_the_threshold_ties_stay_near_the_default() -> None:
    noisy = found((0, 0, 10, 10, 0.9), (20, 20, 30, 30, 0.8), (50, 50, 60, 60, 0.1))
    grid = (0.05, 0.25, 0.5, 0.7)
    threshold, seconds = cheapest_threshold([noisy], TRUTH, ["a"], ActionSeconds(), 0.25, grid)
    assert seconds[0.05] > seconds[0.25] == seconds[0.5] == seconds[0.7]
    assert threshold == 0.25  # as cheap as 0.5 and 0.7: no reason to leave the default
    assert cheapest_threshold([noisy], TRUTH, ["a"], ActionSeconds(), 0.6, grid)[0] == 0.7


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="1 detections for 2 labeled images"):
        cheapest_threshold([found()], [[], []], ["a"], ActionSeconds(), 0.25)
    with pytest.raises(ValueError, match="grid is empty"):
        cheapest_threshold([found()], [[]], ["a"], ActionSeconds(), 0.25, ())


def test_the_label_config_then_the_version_then_the_default_decide() -> None:
    calibrated = ModelSource("v3", Path("w.pt"), kind="registry", display_threshold=0.1)
    plain = ModelSource("base", Path("w.pt"))
    assert calibrated.shown_from(0.6, 0.25) == 0.6  # the tag's model_score_threshold
    assert calibrated.shown_from(None, 0.25) == 0.1
    assert plain.shown_from(None, 0.25) == 0.25


@pytest.mark.parametrize(("meta", "expected"), [({"display_threshold": 0.15}, 0.15), ({}, None)])
def test_a_version_reads_its_threshold_from_its_meta(meta: dict, expected: float | None) -> None:
    version = ModelVersion(1, "v1", Path("."), Path("w.pt"), meta)
    assert version.display_threshold == expected
    broken = ModelVersion(1, "v1", Path("."), Path("w.pt"), {"display_threshold": "high"})
    assert broken.display_threshold is None
