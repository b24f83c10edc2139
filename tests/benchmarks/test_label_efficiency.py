"""Label-efficiency benchmark: metric functions with known answers, the digits generator, and
(slow) one small run of the whole simulated annotation loop, checking the outputs' shape."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.config import Settings
from benchmarks.label_efficiency.config import STRATEGIES, BenchConfig, CycleRow
from benchmarks.label_efficiency.digits_data import (
    BASE_CLASS,
    CLASS_WEIGHTS,
    CLASSES,
    DigitsConfig,
    generate,
    load,
)
from benchmarks.label_efficiency.metrics import aubc, label_efficiency, saving_vs_random, summarise
from benchmarks.label_efficiency.report import resummarise
from benchmarks.label_efficiency.simulation import run_benchmark

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------- metrics
def test_aubc_of_a_straight_line_is_its_mean() -> None:
    assert aubc([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]) == pytest.approx(0.5)


def test_aubc_is_normalised_by_the_budget_range() -> None:
    # trapezoids: (0.2 + 0.4) / 2 * 10 + (0.4 + 0.4) / 2 * 10 = 3 + 4 = 7, over a range of 20
    assert aubc([10, 20, 30], [0.2, 0.4, 0.4]) == pytest.approx(0.35)


def test_aubc_on_a_sub_range_interpolates_the_ends() -> None:
    # y = x on [0, 4]; its mean over [1, 3] is 2
    assert aubc([0, 2, 4], [0, 2, 4], lo=1, hi=3) == pytest.approx(2.0)
    assert aubc([0, 2, 4], [0, 2, 4], lo=2, hi=2) == pytest.approx(2.0)
    assert aubc([5.0], [0.3]) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("budgets", "scores", "lo", "hi"),
    [
        ([0, 1], [0.1], None, None),  # shapes differ
        ([1, 1], [0.1, 0.2], None, None),  # not increasing
        ([0, 1], [0.1, math.nan], None, None),  # not finite
        ([0, 1], [0.1, 0.2], -1.0, None),  # range outside the curve
    ],
)
def test_aubc_rejects_bad_input(
    budgets: list[float], scores: list[float], lo: float | None, hi: float | None
) -> None:
    with pytest.raises(ValueError):
        aubc(budgets, scores, lo, hi)


def test_label_efficiency_interpolates_between_cycles() -> None:
    budgets, scores = [0.1, 0.2, 0.3, 0.4], [0.2, 0.4, 0.6, 0.8]
    assert label_efficiency(budgets, scores, 0.5) == pytest.approx(0.25)
    assert label_efficiency(budgets, scores, 0.6) == pytest.approx(0.3)  # exactly at a point
    assert label_efficiency(budgets, scores, 0.1) == pytest.approx(0.1)  # already at the start
    assert label_efficiency(budgets, scores, 0.9) is None  # never reached


def test_label_efficiency_takes_the_first_crossing() -> None:
    # reaches 0.5 at 0.2, dips, reaches it again later: the first crossing counts
    assert label_efficiency([0.1, 0.2, 0.3, 0.4], [0.4, 0.6, 0.3, 0.7], 0.5) == pytest.approx(0.15)


def test_saving_vs_random() -> None:
    assert saving_vs_random(0.2, 0.4) == pytest.approx(0.5)
    assert saving_vs_random(0.5, 0.4) == pytest.approx(-0.25)  # worse than random
    assert saving_vs_random(None, 0.4) is None
    assert saving_vs_random(0.2, None) is None


def _row(seed: int, strategy: str, cycle: int, images: int, boxes: int, m: float) -> CycleRow:
    return CycleRow(seed, strategy, cycle, images, images / 100, boxes, m, m / 2, "v1", True)


def test_summarise_measures_saving_and_aubc_wins() -> None:
    config = BenchConfig(
        data=DigitsConfig(n_pool=100),
        strategies=("random", "hybrid"),
        seeds=(0,),
        seed_size=10,
        batch_size=10,
        cycles=3,
    )
    random_maps, hybrid_maps = [0.1, 0.3, 0.5, 0.9], [0.1, 0.7, 0.9, 1.0]
    rows = [_row(0, "random", c, 10 + 10 * c, 30 + 30 * c, m) for c, m in enumerate(random_maps)]
    rows += [_row(0, "hybrid", c, 10 + 10 * c, 30 + 40 * c, m) for c, m in enumerate(hybrid_maps)]
    result = summarise(rows, {"map50": 1.0}, config, n_pool=100)
    assert len(result["curves"]) == 8
    hybrid, rand = result["summary"]["hybrid"], result["summary"]["random"]
    # 90% of 1.0: random reaches it at 0.40 of the pool, hybrid at 0.30
    assert rand["le90_mean_curve"] == pytest.approx(0.40)
    assert hybrid["le90_mean_curve"] == pytest.approx(0.30)
    assert hybrid["saving90_mean_curve"] == pytest.approx(0.25)
    assert hybrid["aubc_wins_vs_random"] == 1
    assert hybrid["aubc_images"]["mean"] > rand["aubc_images"]["mean"]
    assert result["target"]["passed"] is False  # 25% < 30%


# ----------------------------------------------------------------------------- generator
@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DigitsConfig]:
    config = DigitsConfig(
        n_pool=60, n_val=4, n_test=10, n_base=5, image_size=128, max_digit=40, seed=3
    )
    root = tmp_path_factory.mktemp("digits")
    generate(root, config)
    return root, config


def test_generator_is_deterministic(digits: tuple[Path, DigitsConfig], tmp_path: Path) -> None:
    root, config = digits
    again = generate(tmp_path, config)
    first = load(root)
    assert again.splits == first.splits  # files are stored relative to the root
    for sample in first.splits["pool"][:5]:
        assert (root / sample.file).read_bytes() == (tmp_path / sample.file).read_bytes()
    other = generate(tmp_path / "other", replace(config, seed=4))
    assert other.splits["pool"] != first.splits["pool"]


def test_boxes_lie_inside_their_images(digits: tuple[Path, DigitsConfig]) -> None:
    root, config = digits
    dataset = load(root)
    assert set(dataset.splits) == {"pool", "val", "test", "base"}
    for samples in dataset.splits.values():
        for sample in samples:
            with Image.open(root / sample.file) as image:
                assert image.size == (sample.width, sample.height) == (128, 128)
            assert 1 <= len(sample.boxes) <= config.max_objects
            for box in sample.boxes:
                assert 0 <= box.x1 < box.x2 <= sample.width
                assert 0 <= box.y1 < box.y2 <= sample.height
                assert box.label in CLASSES
    labeled = dataset.labeled("pool")
    for item in labeled:
        assert Path(item.image_ref).is_file()
        for b in item.boxes:
            assert 0 < b.w <= 1 and 0 < b.h <= 1 and 0 <= b.cx <= 1 and 0 <= b.cy <= 1
    agnostic = dataset.labeled("base", class_agnostic=True)
    assert {b.class_index for item in agnostic for b in item.boxes} == {0}
    assert BASE_CLASS == "digit"


def test_pool_has_near_duplicates(tmp_path: Path) -> None:
    dataset = generate(
        tmp_path,
        DigitsConfig(n_pool=100, n_test=2, image_size=96, max_digit=32, duplicate_fraction=0.2),
    )
    duplicates = [s for s in dataset.splits["pool"] if s.duplicate_of is not None]
    assert 5 <= len(duplicates) <= 40
    ids = {s.task_id for s in dataset.splits["pool"]}
    assert all(s.duplicate_of in ids and s.duplicate_of < s.task_id for s in duplicates)


def test_class_mix_is_long_tailed(tmp_path: Path) -> None:
    dataset = generate(tmp_path, DigitsConfig(n_pool=300, n_test=2, image_size=96, max_digit=32))
    counts = dataset.class_counts("pool")
    ordered = sorted(counts.values(), reverse=True)
    assert ordered[0] >= 3 * ordered[-1]  # head vs tail
    assert all(v > 0 for v in counts.values())  # yet every class occurs
    # the rare member of each confusable pair is rarer than its partner, as configured
    assert counts["7"] < counts["1"] and counts["8"] < counts["3"] and counts["6"] < counts["5"]
    assert math.isclose(sum(CLASS_WEIGHTS), 1.0)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DigitsConfig(min_objects=0)
    with pytest.raises(ValueError):
        DigitsConfig(image_size=64, max_digit=40)
    with pytest.raises(ValueError):
        BenchConfig(data=DigitsConfig(n_pool=50), seed_size=20, batch_size=20, cycles=2)
    with pytest.raises(ValueError):
        BenchConfig(data=DigitsConfig(), strategies=("hybrid",))  # no random control


# ------------------------------------------------------------------- the whole loop (slow)
@pytest.mark.slow
def test_quick_benchmark_outputs_have_the_right_shape(tmp_path: Path) -> None:
    """A run smaller than --quick through the same code path (the numbers are not checked)."""
    quick = BenchConfig.quick()
    config = replace(
        quick,
        data=replace(quick.data, n_pool=48, n_test=16, n_base=12),
        seed_size=8,
        batch_size=8,
        cycles=2,
        epochs=1,
        full_epochs=1,
        base_epochs=1,
    )
    settings = Settings(model_dir=tmp_path / "unused", training_enabled=False, predict_batch=16)
    out = tmp_path / "out"
    result = run_benchmark(
        config, settings, out, workdir=tmp_path / "work", mode="test", progress=False
    )

    data = json.loads((out / "results.json").read_text())
    assert {
        "mode",
        "config",
        "dataset",
        "full_data",
        "base_model",
        "curves",
        "summary",
        "target",
        "rows",
        "complete",
        "wall_s",
    } <= set(data)
    assert data["complete"] is True
    assert data == json.loads(json.dumps(result, default=str))
    # a row per strategy per cycle (cycle 0 = the shared seed set)
    points = {(c["strategy"], c["cycle"]) for c in data["curves"]}
    assert points == {(s, c) for s in STRATEGIES for c in range(config.cycles + 1)}
    assert len(data["rows"]) == len(STRATEGIES) * (config.cycles + 1) * len(config.seeds)
    for row in data["rows"]:
        assert row["images"] == config.seed_size + row["cycle"] * config.batch_size
        assert row["boxes"] >= row["images"]  # every generated image holds a digit
        assert 0.0 <= row["map50"] <= 1.0 and 0.0 <= row["map50_95"] <= 1.0
    for curve in data["curves"]:
        assert {"images", "fraction", "boxes", "map50", "map50_95"} <= set(curve)
    assert set(data["summary"]) == set(STRATEGIES)
    for stats in data["summary"].values():
        assert np.isfinite(stats["aubc_images"]["mean"])
        assert {"le90", "le95", "saving90", "saving95", "aubc_boxes"} <= set(stats)
    assert data["target"]["strategy"] == "hybrid"
    assert 0.0 <= data["full_data"]["map50"] <= 1.0
    markdown = (out / "results.md").read_text()
    assert "| hybrid |" in markdown and "Full-data reference" in markdown
    for name in ("map_vs_images.png", "map_vs_boxes.png"):
        blob = (out / name).read_bytes()
        assert blob.startswith(PNG_MAGIC)
        with Image.open(out / name) as image:
            image.verify()
    # the report can be rebuilt from the JSON alone (as for a run cut short)
    again = resummarise(out / "results.json", tmp_path / "again")
    assert json.loads(json.dumps(again["summary"])) == data["summary"]
    assert (tmp_path / "again" / "map_vs_boxes.png").read_bytes().startswith(PNG_MAGIC)
