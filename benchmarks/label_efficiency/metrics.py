"""The benchmark's numbers: metrics on one learning curve, and the summary over arms and seeds.

Pure functions over budgets and scores (plain numpy, no I/O): `aubc` (area under the budget
curve, normalised), `label_efficiency` (the smallest budget reaching a target),
`saving_vs_random` (labels saved against the control), and `summarise`, which turns the
simulation's `CycleRow`s into per-cycle curves (mean and spread over seeds), per-arm AUBC,
label efficiency at 90% / 95% of the full-data mAP@0.5, the saving vs random, and the check
of the default strategy's target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.label_efficiency.config import (
    CONTROL,
    DEFAULT_STRATEGY,
    TARGETS,
    BenchConfig,
    CycleRow,
)

FloatArray = npt.NDArray[np.float64]


# ------------------------------------------------------------------------------- one curve
def _curve(budgets: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(budgets, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError("budgets and scores must be 1-D arrays of the same non-zero length")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("budgets and scores must be finite")
    if np.any(np.diff(x) <= 0):
        raise ValueError("budgets must be strictly increasing")
    return x, y


def aubc(
    budgets: npt.ArrayLike,
    scores: npt.ArrayLike,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    """Area under the budget curve over [lo, hi], divided by hi - lo: the curve's mean score.

    Normalised so arms with different budget ranges (e.g. in boxes) stay comparable when
    given a common range; the curve is linear between measured points and must cover
    [lo, hi] (defaults: its first and last budget). A single point gives its score.
    """
    x, y = _curve(budgets, scores)
    lo = float(x[0]) if lo is None else float(lo)
    hi = float(x[-1]) if hi is None else float(hi)
    if lo < x[0] - 1e-9 or hi > x[-1] + 1e-9 or hi < lo:
        raise ValueError(f"[{lo}, {hi}] must lie inside the measured budgets [{x[0]}, {x[-1]}]")
    if hi == lo:
        return float(np.interp(lo, x, y))
    inside = x[(x > lo) & (x < hi)]
    grid = np.concatenate([[lo], inside, [hi]])
    values = np.interp(grid, x, y)
    return float(np.sum((values[1:] + values[:-1]) / 2.0 * np.diff(grid)) / (hi - lo))


def label_efficiency(budgets: npt.ArrayLike, scores: npt.ArrayLike, target: float) -> float | None:
    """The smallest budget at which the curve first reaches `target`, or None if it never does.

    Linear between measured points (cycles are coarse; a step function would round every
    arm up to its next cycle).
    """
    x, y = _curve(budgets, scores)
    reached = np.flatnonzero(y >= target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


def saving_vs_random(budget: float | None, random_budget: float | None) -> float | None:
    """Labels saved vs the random control at the same target: 1 - b_AL / b_random.

    None when either arm never reached the target (the saving is then not measured).
    """
    if budget is None or random_budget is None or random_budget <= 0:
        return None
    return 1.0 - budget / random_budget


def _mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return {
        "mean": float(np.mean(known)) if known else None,
        "std": float(np.std(known)) if known else None,
        "n": len(known),
        "of": len(values),
    }


# --------------------------------------------------------------------- over arms and seeds
def summarise(
    rows: Sequence[CycleRow], full: dict[str, Any], config: BenchConfig, n_pool: int
) -> dict[str, Any]:
    """Curves (mean and spread per cycle), per-arm AUBC / label efficiency / saving, target."""
    by_arm: dict[tuple[str, int], list[CycleRow]] = {}
    for row in rows:
        by_arm.setdefault((row.strategy, row.seed), []).append(row)
    for arm_rows in by_arm.values():
        arm_rows.sort(key=lambda r: r.cycle)
    seeds = sorted({row.seed for row in rows})
    full_map = float(full["map50"])
    # AUBC in boxes over the range every arm of a seed covers, so arms stay comparable.
    box_range = {
        seed: (
            max(by_arm[(s, seed)][0].boxes for s in config.strategies if (s, seed) in by_arm),
            min(by_arm[(s, seed)][-1].boxes for s in config.strategies if (s, seed) in by_arm),
        )
        for seed in seeds
    }
    curves: list[dict[str, Any]] = []
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for strategy in config.strategies:
        arms = [by_arm[(strategy, seed)] for seed in seeds if (strategy, seed) in by_arm]
        if not arms:
            continue
        for cycle in range(min(len(a) for a in arms)):
            points = [a[cycle] for a in arms]
            curves.append(
                {
                    "strategy": strategy,
                    "cycle": cycle,
                    "images": points[0].images,
                    "fraction": points[0].fraction,
                    "boxes": _mean_std([float(p.boxes) for p in points]),
                    "map50": _mean_std([p.map50 for p in points]),
                    "map50_95": _mean_std([p.map50_95 for p in points]),
                }
            )
        per_seed[strategy] = {}
        for seed in seeds:
            arm = by_arm.get((strategy, seed))
            if not arm:
                continue
            fractions = [r.fraction for r in arm]
            maps = [r.map50 for r in arm]
            lo, hi = box_range[seed]
            entry: dict[str, Any] = {
                "aubc_images": aubc(fractions, maps),
                "aubc_images_map50_95": aubc(fractions, [r.map50_95 for r in arm]),
                "aubc_boxes": (
                    aubc([r.boxes for r in arm], maps, lo, hi)
                    if hi > lo and _increasing([r.boxes for r in arm])
                    else None
                ),
            }
            for target in TARGETS:
                reached = _le(fractions, maps, target * full_map)
                entry[f"le{round(target * 100)}"] = reached
                entry[f"le{round(target * 100)}_boxes"] = _boxes_at(arm, reached)
            per_seed[strategy][seed] = entry
    summary_rows: dict[str, dict[str, Any]] = {}
    for strategy, entries in per_seed.items():
        mean_curve = [c for c in curves if c["strategy"] == strategy]
        mean_fracs = [c["fraction"] for c in mean_curve]
        mean_maps = [c["map50"]["mean"] for c in mean_curve]
        result: dict[str, Any] = {
            "aubc_images": _mean_std([e["aubc_images"] for e in entries.values()]),
            "aubc_images_map50_95": _mean_std(
                [e["aubc_images_map50_95"] for e in entries.values()]
            ),
            "aubc_boxes": _mean_std([e["aubc_boxes"] for e in entries.values()]),
            "per_seed": {str(k): v for k, v in entries.items()},
        }
        for target in TARGETS:
            key = f"le{round(target * 100)}"
            random_entries = per_seed.get(CONTROL, {})
            result[key] = _mean_std([e[key] for e in entries.values()])
            result[f"{key}_mean_curve"] = _le(mean_fracs, mean_maps, target * full_map)
            result[f"{key}_boxes"] = _mean_std([e[f"{key}_boxes"] for e in entries.values()])
            result[f"saving{round(target * 100)}"] = _mean_std(
                [
                    saving_vs_random(e[key], random_entries.get(seed, {}).get(key))
                    for seed, e in entries.items()
                ]
            )
            random_curve = [c for c in curves if c["strategy"] == CONTROL]
            result[f"saving{round(target * 100)}_mean_curve"] = saving_vs_random(
                result[f"{key}_mean_curve"],
                _le(
                    [c["fraction"] for c in random_curve],
                    [c["map50"]["mean"] for c in random_curve],
                    target * full_map,
                ),
            )
        result["final_map50_vs_full"] = mean_maps[-1] / full_map if full_map > 0 else None
        # Where no arm reaches the full-data targets, the usual fallback: the images an arm
        # needs to match the mAP@0.5 that random ends with (seed-mean curves).
        random_curve = [c for c in curves if c["strategy"] == CONTROL]
        result["saving_at_random_final"] = None
        if random_curve and random_curve[-1]["map50"]["mean"] > 0:
            level = random_curve[-1]["map50"]["mean"]
            result["saving_at_random_final"] = saving_vs_random(
                label_efficiency(mean_fracs, mean_maps, level),
                label_efficiency(
                    [c["fraction"] for c in random_curve],
                    [c["map50"]["mean"] for c in random_curve],
                    level,
                ),
            )
        arm_rows = [r for r in rows if r.strategy == strategy and r.cycle > 0]
        result["gate_rejections"] = sum(not r.promoted for r in arm_rows)
        result["trainings"] = len(arm_rows)
        compared = [seed for seed in entries if seed in per_seed.get(CONTROL, {})]
        result["aubc_wins_vs_random"] = sum(
            entries[seed]["aubc_images"] > per_seed[CONTROL][seed]["aubc_images"]
            for seed in compared
        )
        result["aubc_seeds_compared"] = len(compared)
        summary_rows[strategy] = result
    default = summary_rows.get(DEFAULT_STRATEGY)
    target_check = None
    if default is not None and DEFAULT_STRATEGY != CONTROL:
        saving = default["saving90_mean_curve"]
        wins = default["aubc_wins_vs_random"]
        target_check = {
            "strategy": DEFAULT_STRATEGY,
            "saving90_mean_curve": saving,
            "saving90_required": 0.30,
            "aubc_wins_vs_random": wins,
            "seeds": default["aubc_seeds_compared"],
            "passed": bool(
                saving is not None
                and saving >= 0.30
                and wins == default["aubc_seeds_compared"] == len(config.seeds)
            ),
        }
    return {"curves": curves, "summary": summary_rows, "target": target_check}


def _le(fractions: Sequence[float], maps: Sequence[float], target: float) -> float | None:
    """Label efficiency, undefined (None) when the reference itself learned nothing."""
    return label_efficiency(fractions, maps, target) if target > 0 else None


def _increasing(values: Sequence[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def _boxes_at(arm: Sequence[CycleRow], fraction: float | None) -> float | None:
    """Boxes labeled when the arm reached `fraction` of the pool (linear between cycles)."""
    if fraction is None:
        return None
    return float(np.interp(fraction, [r.fraction for r in arm], [r.boxes for r in arm]))
