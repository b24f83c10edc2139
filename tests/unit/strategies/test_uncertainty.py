"""Box and image uncertainty: inputs with a known right answer, exact assertions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies.uncertainty import (
    aggregate,
    binary_entropy,
    box_uncertainty,
    dcus_image_scores,
    dcus_weights,
    dua_image_scores,
    dua_weights,
    entropy,
    image_uncertainty,
    least_confidence,
    margin,
)


def h2(p: float) -> float:
    """Binary entropy in bits, written out independently of the code under test."""
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_least_confidence_is_one_minus_max() -> None:
    p = np.array([[0.9, 0.1], [0.6, 0.2], [0.0, 0.0]])
    np.testing.assert_allclose(least_confidence(p), [0.1, 0.4, 1.0])


def test_margin_ranks_close_top2_higher() -> None:
    p = np.array([[0.50, 0.45, 0.01], [0.90, 0.10, 0.30], [0.2, 0.9, 0.85]])
    u = margin(p)
    np.testing.assert_allclose(u, [0.95, 0.4, 0.95])
    assert u[0] > u[1]


def test_margin_single_class_uses_zero_runner_up() -> None:
    np.testing.assert_allclose(margin(np.array([[0.7], [0.2]])), [0.3, 0.8])


def test_entropy_ranks_fifty_fifty_above_ninety_nine_one() -> None:
    p = np.array([[0.99, 0.01], [0.5, 0.5]])
    for variant in ("binary", "normalized"):
        u = entropy(p, variant)  # type: ignore[arg-type]
        assert u[1] > u[0]
        np.testing.assert_allclose(u, [h2(0.01), 1.0], rtol=1e-9)


def test_binary_entropy_keeps_absolute_confidence_normalized_does_not() -> None:
    p = np.array([[0.3, 0.3], [0.9, 0.9], [0.3, 0.0]])
    binary = entropy(p, "binary")
    np.testing.assert_allclose(binary, [h2(0.3), h2(0.9), h2(0.3) / 2], rtol=1e-9)
    normalized = entropy(p, "normalized")
    np.testing.assert_allclose(normalized, [1.0, 1.0, 0.0], atol=1e-12)


def test_normalized_entropy_edge_cases() -> None:
    assert entropy(np.array([[0.0, 0.0]]), "normalized")[0] == pytest.approx(1.0)
    assert entropy(np.array([[0.4]]), "normalized")[0] == 0.0


def test_binary_entropy_bounds() -> None:
    values = binary_entropy(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(values, [0.0, 1.0, 0.0], atol=1e-9)


def test_unknown_variant_and_measure_raise() -> None:
    with pytest.raises(ValueError, match="binary, normalized"):
        entropy(np.array([[0.5]]), "shannon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="least_confidence, margin, entropy"):
        box_uncertainty(np.array([[0.5]]), "variance")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        least_confidence(np.array([0.5, 0.4]))
    with pytest.raises(TypeError):
        margin([[0.5, 0.4]])  # type: ignore[arg-type]


def test_aggregate_max_mean_sum_and_empty_images() -> None:
    values = np.array([0.2, 0.6, 0.5])
    image = np.array([0, 0, 2])
    np.testing.assert_allclose(aggregate(values, image, 3, "max", 1.0), [0.6, 1.0, 0.5])
    np.testing.assert_allclose(aggregate(values, image, 3, "mean", 0.7), [0.4, 0.7, 0.5])
    np.testing.assert_allclose(aggregate(values, image, 3, "sum", 0.0), [0.8, 0.0, 0.5])
    with pytest.raises(ValueError, match="max, mean, sum"):
        aggregate(values, image, 3, "median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image ids"):
        aggregate(values, np.array([0, 0, 3]), 3)


def test_nothing_detected_is_not_certain() -> None:
    # image 0: one confident box; image 1: one unsure box; image 2: no box;
    # image 3: only a box below the floor (noise) -> also "nothing detected".
    flat = np.array([[0.98, 0.01], [0.55, 0.40], [0.03, 0.02]])
    image = np.array([0, 1, 3])
    for measure in ("least_confidence", "margin", "entropy"):
        u = image_uncertainty(flat, image, 4, measure=measure)  # type: ignore[arg-type]
        assert u[2] == 1.0 and u[3] == 1.0
        assert u[0] < u[1] < u[2]
    silent = image_uncertainty(flat, image, 4, measure="margin", empty_score=0.0)
    assert silent[2] == 0.0 and silent[3] == 0.0


def test_floor_zero_keeps_low_boxes() -> None:
    flat = np.array([[0.03, 0.02]])
    u = image_uncertainty(flat, np.array([0]), 1, measure="least_confidence", floor=0.0)
    np.testing.assert_allclose(u, [0.97])


def test_dua_weights_formula_nan_and_degenerate() -> None:
    np.testing.assert_allclose(dua_weights(np.array([0.2, 0.8, 0.5]), 3), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(dua_weights(np.array([0.2, np.nan, 0.6]), 3), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(dua_weights(np.array([0.4, 0.4]), 2), [1.0, 1.0])
    np.testing.assert_allclose(dua_weights(np.array([np.nan, np.nan]), 2), [1.0, 1.0])
    np.testing.assert_allclose(dua_weights(None, 3), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        dua_weights(np.array([0.1, 0.2]), 3)


def test_dua_image_score_is_weighted_sum_of_class_means() -> None:
    # image 0: two class-0 boxes (conf 0.6, 0.8) and one class-1 box (conf 0.7)
    # image 1: one class-1 box (conf 0.9); image 2: nothing.
    flat = np.array([[0.6, 0.1], [0.8, 0.3], [0.2, 0.7], [0.1, 0.9]])
    image = np.array([0, 0, 0, 1])
    w = np.array([1.0, 0.5])
    scores = dua_image_scores(flat, image, 3, w, empty_score=1.0)
    np.testing.assert_allclose(scores, [1.0 * 0.3 + 0.5 * 0.3, 0.5 * 0.1, 1.0])


def test_dua_upweights_lowest_ap_class() -> None:
    # Two images with one identical-confidence box each; class 0 has the lowest AP.
    flat = np.array([[0.7, 0.1], [0.1, 0.7]])
    image = np.array([0, 1])
    w = dua_weights(np.array([0.3, 0.9]), 2)
    scores = dua_image_scores(flat, image, 2, w)
    assert scores[0] > scores[1]
    np.testing.assert_allclose(scores, [0.3, 0.0], atol=1e-12)


def test_dcus_weights_formula() -> None:
    a, z = 0.3, 0.2
    g = math.exp(1 / a) - 1
    q = np.array([1.0, 0.0, 0.5, np.nan])
    expected = [1.0, 1.0 + z, 1 + a * z * math.log(1 + g * 0.5), 1.0 + z]
    np.testing.assert_allclose(dcus_weights(q, 4), expected, rtol=1e-12)
    np.testing.assert_allclose(dcus_weights(None, 2), [1.2, 1.2])
    with pytest.raises(ValueError, match="alpha"):
        dcus_weights(q, 4, alpha=0.0)


def test_dcus_image_score_sums_weighted_entropy_above_floor() -> None:
    # image 0: boxes s=0.5 (class 0) and s=0.9 (class 1); a 0.04 box is below the 0.05 floor.
    flat = np.array([[0.5, 0.1], [0.2, 0.9], [0.04, 0.01]])
    image = np.array([0, 0, 1])
    w = np.array([1.2, 1.0])
    scores = dcus_image_scores(flat, image, 2, w, empty_score=0.7)
    np.testing.assert_allclose(scores, [1.2 * 1.0 + 1.0 * h2(0.9), 0.7], rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(0, 6), st.integers(1, 5)),
        elements=st.floats(0.0, 1.0),
    )
)
def test_box_measures_lie_in_unit_interval(p: np.ndarray) -> None:
    for values in (
        least_confidence(p),
        margin(p),
        entropy(p, "binary"),
        entropy(p, "normalized"),
    ):
        assert values.shape == (p.shape[0],)
        assert np.all((values >= 0.0) & (values <= 1.0))
