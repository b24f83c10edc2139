"""Label-efficiency benchmark v2: metrics with known answers, the three pools' generators and
their known near-duplicates, the simulated annotator, the cold start on the product's encoder,
and (slow) the --quick run end to end, checking its outputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.analytics.cost import ActionSeconds
from backend.analytics.matching import LabeledBox
from backend.encoder.contrastive import reshot
from backend.labelstudio.images import LoadedImage
from backend.models.detector import Box, ImageDetections
from backend.training.calibration import shown_boxes
from benchmarks.label_efficiency.cli import _parser, config_from_args
from benchmarks.label_efficiency.coldstart import encode_pool, typiclust_batch
from benchmarks.label_efficiency.config import (
    LONG_TAIL_WEIGHTS,
    BenchConfig,
    CycleRow,
    ProductArm,
    all_strategies,
    scenario_data,
    strategy_arm,
)
from benchmarks.label_efficiency.digits_data import (
    BASE_CLASS,
    CLASS_WEIGHTS,
    CLASSES,
    DigitSample,
    DigitsConfig,
    generate,
    known_duplicates,
    load,
)
from benchmarks.label_efficiency.metrics import (
    aubc,
    batch_coverage,
    label_efficiency,
    pair_precision_recall,
    rare_classes,
    saving_vs_random,
    seed_mean,
    summarise,
    summary_json,
)
from benchmarks.label_efficiency.rendering import DigitBox
from benchmarks.label_efficiency.report import merge_runs, resummarise
from benchmarks.label_efficiency.simulation import Annotator, Prediction

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


def _row(arm: str, cycle: int, images: int, drawn: int, accepted: int, m: float) -> dict:
    edits = {"accepted": accepted, "adjusted": 0, "relabeled": 0, "deleted": 0, "drawn": drawn}
    return asdict(
        CycleRow("scenes", "product", arm, 0, cycle, images, drawn + accepted, edits, m, m / 2)
    )


def _result(rows: list[dict], full_pool: dict[str, dict[str, int]]) -> dict:
    config = asdict(BenchConfig(scenarios=("scenes",), seeds=(0,), n_pool=100, budgets=(10, 20)))
    return {
        "config": config,
        "references": {"scenes": {"map50": 1.0}},
        "pools": {"scenes": {"pool": {"images": 100}}},
        "rows": rows,
        "full_pool": {"scenes": {"0": {"product": full_pool}}},
    }


def test_summarise_prices_edits_and_measures_savings() -> None:
    costs = ActionSeconds()
    # random: 10 images / 20 boxes per cycle, all drawn; queue: the same images' boxes accepted
    rows = [_row("random", c, 10 * (c + 1), 20 * (c + 1), 0, m) for c, m in enumerate([0.5, 1.0])]
    rows += [_row("queue", c, 10 * (c + 1), 0, 20 * (c + 1), m) for c, m in enumerate([0.5, 1.0])]
    pool_edits = {"random": {"drawn": 200}, "queue": {"accepted": 200}}
    summary = summarise(_result(rows, pool_edits))["scenarios"]["scenes"]
    rand, queue = summary["arms"]["random"], summary["arms"]["queue"]
    drawn_s = lambda images, boxes: images * costs.per_image + boxes * costs.drawn  # noqa: E731
    accepted_s = lambda images, boxes: images * costs.per_image + boxes * costs.accepted  # noqa: E731
    # 95% of full = 0.95: linear between (budget at 0.5) and (budget at 1.0), 90% of the way
    assert rand["seconds_to_95"] == [pytest.approx(drawn_s(10, 20) + 0.9 * drawn_s(10, 20))]
    assert queue["seconds_to_95"] == [pytest.approx(accepted_s(19, 38))]
    assert rand["seconds_full_pool"] == [pytest.approx(drawn_s(100, 200))]
    assert queue["seconds_full_pool"] == [pytest.approx(accepted_s(100, 200))]
    assert rand["aubc_images"] == queue["aubc_images"] == [pytest.approx(0.75)]
    saving = queue["saving_vs"]["random"]["seconds_full_pool"]["mean"]
    assert saving == pytest.approx(1 - accepted_s(100, 200) / drawn_s(100, 200))
    # the common level is the lowest final mAP (1.0): both reach it at their last point
    assert queue["seconds_to_common"] == [pytest.approx(accepted_s(20, 40))]
    # the drawing-cost sensitivity changes random's seconds, not queue's
    half = summary["sensitivity"]["drawn_x0.5"]["queue"]["saving_vs"]["random"]
    assert half["seconds_full_pool"]["mean"] < saving
    shape = summary_json(summarise(_result(rows, pool_edits)))
    assert set(shape["scenarios"]["scenes"]) == {"full_map50", "arms"}
    assert set(shape["scenarios"]["scenes"]["arms"]["queue"]) == {
        "seeds",
        "aubc_seconds",
        "aubc_images",
        "seconds_to_95",
        "seconds_full_pool",
        "final_map50",
        "final_rare_ap50",
    }


def test_rare_class_ap_is_the_last_cycles_mean_over_the_rare_classes() -> None:
    rows = [_row("random", c, 10 * (c + 1), 20, 0, 0.5) for c in range(2)]
    rows[0]["class_ap50"] = {"a": 0.9, "b": 0.9, "c": 0.9}
    rows[1]["class_ap50"] = {"a": 0.8, "b": 0.2}  # c never predicted: counts as 0
    result = _result(rows, {})
    result["pools"]["scenes"]["pool"]["class_counts"] = {"a": 960, "b": 30, "c": 10}
    assert rare_classes(result, "scenes") == ["b", "c"]
    arm = summarise(result)["scenarios"]["scenes"]["arms"]["random"]
    assert arm["final_rare_ap50"] == [pytest.approx(0.1)]


# ------------------------------------------------------------------------- the cold start
def test_pair_precision_recall_counts_pairs_of_one_group() -> None:
    # predicted {0, 1, 2}: pairs 01 02 12; true {0, 1} and {2, 3}: pairs 01 23; shared: 01
    precision, recall = pair_precision_recall([0, 0, 0, 3, 4], [0, 0, 2, 2, 4])
    assert precision == pytest.approx(1 / 3) and recall == pytest.approx(1 / 2)
    assert pair_precision_recall([0, 0, 2], [0, 0, 2]) == (1.0, 1.0)
    assert pair_precision_recall([0, 1, 2], [0, 0, 2]) == (None, 0.0)  # nothing grouped
    assert pair_precision_recall([0, 0, 2], [0, 1, 2]) == (0.0, None)  # nothing to find
    with pytest.raises(ValueError):
        pair_precision_recall([0, 0], [0, 0, 0])


def test_batch_coverage_counts_classes_boxes_and_groups_picked_twice() -> None:
    labels = [["0"], ["0", "1"], [], ["2"], ["2"], ["1"]]
    groups = [0, 0, 2, 3, 3, 5]  # two groups: {0, 1} and {3, 4}
    assert batch_coverage([0, 1, 3], labels, groups) == {
        "classes": 3.0,
        "boxes": 4.0,
        "groups_hit_twice": 0.5,
    }
    assert batch_coverage([2, 5], labels, groups)["groups_hit_twice"] == 0.0
    assert batch_coverage([0], labels, [0, 1, 2, 3, 4, 5])["groups_hit_twice"] is None


def test_seed_mean_averages_nested_records_over_the_seeds_that_measured() -> None:
    records = [
        {"near": {"precision": 1.0, "recall": None}, "n": 2.0},
        {"near": {"precision": 0.5, "recall": 0.8}, "n": 4.0},
    ]
    assert seed_mean(records) == {"near": {"precision": 0.75, "recall": 0.8}, "n": 3.0}


def _frame(i: int, camera: int, *boxes: tuple[str, float]) -> DigitSample:
    return DigitSample(
        task_id=i + 1,
        split="pool",
        file=f"pool/{i}.png",
        width=96,
        height=96,
        boxes=tuple(DigitBox(label, x, 10.0, x + 20.0, 40.0) for label, x in boxes),
        camera=camera,
    )


def test_known_duplicates_of_streams_are_frames_with_the_same_objects() -> None:
    frames = [
        _frame(0, 0, ("1", 10.0)),
        _frame(1, 0, ("1", 11.0)),  # moved a pixel: the same
        _frame(2, 0, ("1", 12.0)),  # chained: two pixels from frame 0
        _frame(3, 0, ("1", 12.0), ("7", 50.0)),  # an object came
        _frame(4, 0, ("1", 12.0), ("7", 53.0)),  # moved three pixels: another object
        _frame(5, 0, ("1", 12.0)),  # it left again: frame 2 once more, though not next to it
        _frame(6, 1, ("1", 12.0), ("7", 53.0)),  # another camera
        _frame(7, 1, ("1", 12.0), ("4", 53.0)),  # another label
        _frame(8, 1),
        _frame(9, 1),  # empty views of one camera: nothing to label twice
    ]
    assert known_duplicates(frames).tolist() == [0, 0, 0, 3, 4, 0, 6, 7, 8, 8]


def test_known_duplicates_of_scenes_are_the_generated_copies(
    digits: tuple[Path, DigitsConfig],
) -> None:
    pool = load(digits[0]).splits["pool"]
    groups = known_duplicates(pool)
    index = {s.task_id: i for i, s in enumerate(pool)}
    copies = [(index[s.duplicate_of], i) for i, s in enumerate(pool) if s.duplicate_of]
    assert copies  # the fixture's pool has some
    assert all(groups[i] == groups[j] == min(groups[i], i, j) for i, j in copies)
    copied = {i for pair in copies for i in pair}
    assert all(groups[i] == i for i in range(len(pool)) if i not in copied)


def test_typiclust_batch_picks_one_image_of_each_cluster_without_boxes() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8, dtype=np.float32) * 10
    embeddings = np.concatenate([c + rng.normal(0, 0.1, (6, 8)) for c in centres])
    batch = typiclust_batch(embeddings.astype(np.float32), n_classes=5, size=3, seed=0)
    assert sorted(i // 6 for i in batch) == [0, 1, 2]


def test_encode_pool_finds_reshot_copies_with_the_products_encoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    scenes = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    pictures = np.concatenate([scenes, reshot(scenes, seed=2)])  # image i + 6 copies image i
    images = [LoadedImage(p[:, :, ::-1], 64, 64) for p in pictures]  # BGR, as the loader
    encoding = encode_pool(images, tmp_path, seconds=0.5, seed=0)
    truth = np.tile(np.arange(6), 2)
    record = encoding.record(truth)
    assert encoding.embeddings.shape == (12, 128)
    assert record["near_duplicates"]["precision"] == record["near_duplicates"]["recall"] == 1.0
    assert record["near_duplicates"]["true_pairs"] == 6
    assert record["encoder"]["steps"] >= 1 and record["encoder"]["images_per_s"] > 0


def test_summary_json_carries_the_cold_start_seed_means() -> None:
    rows = [_row("random", c, 10 * (c + 1), 20, 0, 0.5) for c in range(2)]
    result = _result(rows, {})
    near = {"precision": 1.0, "recall": 0.5}
    first = {"random": {"classes": 3.0, "map50": 0.2}, "encoder": {"classes": 5.0, "map50": None}}
    result["coldstart"] = {
        "scenes": {
            "0": {"near_duplicates": near, "encoder": {"steps": 3}, "first_batch": first},
            "1": {"near_duplicates": {**near, "recall": 1.0}, "encoder": {"steps": 5}},
        }
    }
    entry = summary_json(summarise(result))["scenarios"]["scenes"]
    assert entry["near_duplicates"] == {"precision": 1.0, "recall": 0.75}
    assert entry["encoder"] == {"steps": 4.0}
    assert entry["first_batch"] == first  # one seed measured it


# ----------------------------------------------------------------------------- annotator
def _detections(*boxes: tuple[float, float, float, float, int, float]) -> ImageDetections:
    return ImageDetections(
        boxes=tuple(Box(*b[:4], class_id=b[4], conf=b[5], class_scores=np.zeros(2)) for b in boxes),
        embedding=np.zeros(4, dtype=np.float32),
    )


def test_annotator_prices_what_is_shown_above_the_threshold() -> None:
    truth = [[LabeledBox(0, 0, 10, 10, "0"), LabeledBox(20, 20, 30, 30, "1")]]
    found = [
        _detections(
            (0, 0, 10, 10, 0, 0.9),  # accepted
            (20, 20, 30, 30, 0, 0.8),  # right place, wrong label: relabeled
            (50, 50, 60, 60, 1, 0.1),  # below the 0.25 threshold: never shown
        )
    ]
    assert len(shown_boxes(found[0], ["0", "1"], 0.25)) == 2
    annotator = Annotator(truth)
    edits = annotator.edits([0], Prediction(["0", "1"], found, 0.25))
    assert edits == {"accepted": 1, "relabeled": 1, "adjusted": 0, "deleted": 0, "drawn": 0}
    assert annotator.edits([0], None)["drawn"] == 2  # manual: nothing shown


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


def test_scene_pool_has_near_duplicates(tmp_path: Path) -> None:
    dataset = generate(
        tmp_path,
        DigitsConfig(n_pool=100, n_test=2, image_size=96, max_digit=32, duplicate_fraction=0.2),
    )
    duplicates = [s for s in dataset.splits["pool"] if s.duplicate_of is not None]
    assert 5 <= len(duplicates) <= 40
    ids = {s.task_id for s in dataset.splits["pool"]}
    assert all(s.duplicate_of in ids and s.duplicate_of < s.task_id for s in duplicates)


def test_long_tail_pool_has_classes_at_one_to_three_percent(tmp_path: Path) -> None:
    dataset = generate(tmp_path, scenario_data("long_tail", n_pool=600, n_test=2))
    counts = dataset.class_counts("pool")
    total = sum(counts.values())
    shares = {name: n / total for name, n in counts.items()}
    rare = [name for name, w in zip(CLASSES, LONG_TAIL_WEIGHTS, strict=True) if w <= 0.03]
    assert len(rare) == 2
    for name in rare:
        assert 0.005 <= shares[name] <= 0.04, shares
    assert math.isclose(sum(CLASS_WEIGHTS), 1.0) and math.isclose(sum(LONG_TAIL_WEIGHTS), 1.0)


def test_streams_are_slow_sequences_from_fixed_cameras(tmp_path: Path) -> None:
    config = scenario_data("streams", n_pool=60, n_test=12)
    dataset = generate(tmp_path, config)
    pool = dataset.splits["pool"]
    assert [s.camera for s in pool] == [c for c in range(12) for _ in range(10)]
    near, far = [], []
    for a, b in zip(pool, pool[1:], strict=False):
        first = np.asarray(Image.open(tmp_path / a.file), dtype=np.float64)
        second = np.asarray(Image.open(tmp_path / b.file), dtype=np.float64)
        (near if a.camera == b.camera else far).append(np.abs(first - second).mean())
    # consecutive frames of a camera differ by lighting and noise; two cameras differ in view
    assert max(near) < min(far)
    # objects move under a pixel per frame while they stay
    for a, b in zip(pool, pool[1:], strict=False):
        if a.camera == b.camera and len(a.boxes) == len(b.boxes) and a.boxes:
            moved = [
                abs(p.x1 - q.x1) + abs(p.y1 - q.y1) for p, q in zip(a.boxes, b.boxes, strict=True)
            ]
            assert min(moved) <= 2.0
    # the test split shows the same cameras (views), other objects
    test = dataset.splits["test"]
    assert {s.camera for s in test} == set(range(12))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DigitsConfig(min_objects=0)
    with pytest.raises(ValueError):
        DigitsConfig(image_size=64, max_digit=40)
    with pytest.raises(ValueError):
        DigitsConfig(class_weights=(1.0,))
    with pytest.raises(ValueError):
        BenchConfig(budgets=(16, 8))
    with pytest.raises(ValueError):
        BenchConfig(strategies=("hybrid",))  # no random control
    with pytest.raises(ValueError):
        BenchConfig(scenarios=("clouds",))
    assert BenchConfig().strategies == all_strategies()
    assert BenchConfig().arms[:3] == ("manual", "static", "random")
    assert "queue" in BenchConfig().arms and "hybrid" not in BenchConfig().arms
    assert all_strategies()[-1] == "coldstart"
    assert strategy_arm("coldstart") == ProductArm("coldstart", "hybrid", seed_set="encoder")
    assert strategy_arm("hybrid") == ProductArm("queue", "hybrid")
    only = BenchConfig(strategies=("random", "coldstart"), converged_strategies=("random",))
    assert only.arms[-1] == "coldstart"
    with pytest.raises(ValueError):
        BenchConfig(encoder_seconds=0)


# ------------------------------------------------------------------- the whole loop (slow)
@pytest.mark.slow
def test_quick_run_writes_every_output(tmp_path: Path) -> None:
    """`python -m benchmarks.label_efficiency --quick`, as CI runs it (numbers not checked)."""
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.label_efficiency",
            "--quick",
            "--jobs",
            "2",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            "--log-level",
            "WARNING",
        ],
        capture_output=True,
        text=True,
        timeout=480,  # about 190 s alone on 2 cores; more while other tests load them
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    config = BenchConfig.quick()
    assert set(summary["scenarios"]) == {"scenes", "streams", "long_tail"}
    for entry in summary["scenarios"].values():
        assert 0.0 <= entry["full_map50"] <= 1.0
        assert set(entry["arms"]) == {"manual", "static", "random", "queue", "coldstart"}
        assert set(entry["near_duplicates"]) >= {"precision", "recall"}
        assert entry["encoder"]["steps"] >= 1 and entry["encoder"]["images_per_s"] > 0
        assert set(entry["first_batch"]) == {"random", "encoder", "neck"}
        for arm in entry["arms"].values():
            assert arm["seeds"] == list(config.seeds)
            assert len(arm["seconds_full_pool"]) == len(config.seeds)
            assert all(s > 0 for s in arm["seconds_full_pool"])
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is True
    recipes = {(r["scenario"], r["recipe"], r["arm"]) for r in result["rows"]}
    assert ("streams", "converged", "queue") in recipes
    for row in result["rows"]:
        assert row["images"] in config.budgets
        assert sum(row["edits"].values()) >= row["boxes"]  # every true box is drawn or matched
    manual = [r for r in result["rows"] if r["arm"] == "manual"]
    assert all(r["edits"].get("drawn") == r["boxes"] for r in manual)
    markdown = (out / "results.md").read_text()
    assert "## streams" in markdown and "against **manual**" in markdown
    for name in ("scenes", "streams", "long_tail"):
        with Image.open(out / f"{name}.png") as image:
            image.verify()
    again = resummarise([out / "results.json"], tmp_path / "again")
    assert json.loads(json.dumps(summary_json(again))) == summary


def test_variants_are_queue_arms_with_their_own_extra_params() -> None:
    config = config_from_args(
        _parser().parse_args(
            ["--medium", "--param", "train_patience=5", "--variant", "no-audit:al_audit=false"]
        )
    )[0]
    assert config.extra_params == {"train_patience": 5}
    assert config.arms == ("manual", "static", "random", "queue", "no-audit")
    assert config.product_arms[-1] == ProductArm("no-audit", "hybrid", {"al_audit": False})
    with pytest.raises(ValueError, match="extra params must be among"):
        BenchConfig(variants={"x": {"al_strategy": "entropy"}})
    with pytest.raises(ValueError, match="variant names must differ"):
        BenchConfig(variants={"random": {}})


def test_runs_of_different_scenarios_merge_into_one_result() -> None:
    first = _result([_row("random", 0, 10, 20, 0, 0.5)], {"random": {"drawn": 200}})
    second = {**_result([], {}), "mode": "full", "wall_s": 5.0}
    second["config"] = {**second["config"], "scenarios": ["streams"]}
    second["rows"] = [{**_row("random", 0, 10, 20, 0, 0.4), "scenario": "streams"}]
    merged = merge_runs([{**first, "mode": "medium", "wall_s": 2.0}, second])
    assert merged["config"]["scenarios"] == ["scenes", "streams"]
    assert [r["scenario"] for r in merged["rows"]] == ["scenes", "streams"]
    assert merged["mode"] == "medium + full" and merged["wall_s"] == 7.0
    with pytest.raises(ValueError, match="different scenarios"):
        merge_runs([first, first])
