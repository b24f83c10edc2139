"""The benchmark's numbers: metrics on one learning curve, and the summary over arms and seeds.

Pure functions (plain numpy, no I/O): `aubc` (area under the budget curve, normalised),
`label_efficiency` (the smallest budget reaching a target), `saving_vs_random` (budget saved
against a baseline arm), and `summarise`, which turns a run's rows into, per scenario, recipe
and arm: the curves against images, boxes and annotator seconds, AUBC, the images, boxes and
seconds to 90% / 95% of the full-data mAP@0.5, the seconds to label the whole pool, savings
against random, static and manual, and the same at half and double drawing cost. For the
cold start: `pair_precision_recall` (near-duplicate groups against the known ones) and
`batch_coverage` (what a first batch covers), their seed means under each scenario.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.analytics.cost import ActionSeconds
from benchmarks.label_efficiency.config import (
    DRAWN_FACTORS,
    MANUAL,
    PRODUCT,
    QUEUE,
    RANDOM,
    RARE_SHARE,
    STATIC,
    TARGETS,
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
    """Budget saved vs a baseline arm at the same target: 1 - b_arm / b_baseline.

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


# ------------------------------------------------------------------------- the cold start
def linked_pairs(*groupings: npt.NDArray[np.int64]) -> int:
    """How many pairs of items share a group in every one of `groupings`."""
    _, counts = np.unique(np.stack(groupings, axis=1), axis=0, return_counts=True)
    return int(np.sum(counts * (counts - 1) // 2))


def pair_precision_recall(
    predicted: npt.ArrayLike, truth: npt.ArrayLike
) -> tuple[float | None, float | None]:
    """Pair-level precision and recall of near-duplicate groups: of the pairs of images put in
    one group, the share truly in one; of the pairs truly in one, the share put in one.

    Pairs, not groups, because a pair is what an annotator labels twice. Both arguments are
    (n,) group ids (equal ids: one group); None where there is no pair to measure.
    """
    p = np.asarray(predicted, dtype=np.int64)
    t = np.asarray(truth, dtype=np.int64)
    if p.ndim != 1 or p.shape != t.shape:
        raise ValueError("predicted and truth must be 1-D group ids of the same length")
    both, found, true = linked_pairs(p, t), linked_pairs(p), linked_pairs(t)
    return (both / found if found else None, both / true if true else None)


def batch_coverage(
    batch: Sequence[int], labels: Sequence[Sequence[str]], groups: npt.ArrayLike
) -> dict[str, float | None]:
    """What a first batch covers: its distinct classes and boxes (`labels`: each pool image's
    box labels), and the share of the pool's near-duplicate groups (`groups`, (n,) ids) it
    picks twice or more, labels an annotator spends twice (None: the pool has no group)."""
    ids = np.asarray(groups, dtype=np.int64)
    _, sizes = np.unique(ids, return_counts=True)
    _, picked = np.unique(ids[np.asarray(batch, dtype=np.int64)], return_counts=True)
    twice, real = int(np.sum(picked >= 2)), int(np.sum(sizes >= 2))
    return {
        "classes": float(len({label for i in batch for label in labels[i]})),
        "boxes": float(sum(len(labels[i]) for i in batch)),
        "groups_hit_twice": twice / real if real else None,
    }


def seed_mean(records: Sequence[Any]) -> Any:
    """Per-seed records (nested dicts of numbers) as one: each number's mean over the seeds
    that measured it (None where none did)."""
    dicts = [r for r in records if isinstance(r, dict)]
    if dicts:
        keys = dict.fromkeys(key for r in dicts for key in r)
        return {key: seed_mean([r.get(key) for r in dicts]) for key in keys}
    return _mean_std(records)["mean"]


# --------------------------------------------------------------------- over arms and seeds
BASELINES: tuple[str, ...] = (RANDOM, STATIC, MANUAL)


def _costs(result: dict[str, Any], factor: float = 1.0) -> ActionSeconds:
    return ActionSeconds(**result["config"]["costs"]).scaled(factor)


def _pct(target: float) -> int:
    return round(target * 100)


def arm_curves(
    result: dict[str, Any], scenario: str, recipe: str, factor: float = 1.0
) -> dict[str, dict[int, dict[str, list[float]]]]:
    """arm -> seed -> the curve's columns (images, boxes, seconds, map50, map50_95)."""
    costs = _costs(result, factor)
    out: dict[str, dict[int, dict[str, list[float]]]] = {}
    rows = [r for r in result["rows"] if r["scenario"] == scenario and r["recipe"] == recipe]
    for row in sorted(rows, key=lambda r: (r["arm"], r["seed"], r["cycle"])):
        curve = out.setdefault(row["arm"], {}).setdefault(
            row["seed"], {k: [] for k in ("images", "boxes", "seconds", "map50", "map50_95")}
        )
        curve["images"].append(float(row["images"]))
        curve["boxes"].append(float(row["boxes"]))
        curve["seconds"].append(costs.seconds(row["edits"], row["images"]))
        curve["map50"].append(float(row["map50"]))
        curve["map50_95"].append(float(row["map50_95"]))
    return out


def _seed_metrics(
    curve: dict[str, list[float]],
    full_map: float,
    ranges: dict[str, tuple[float, float] | None],
    level: float,
) -> dict[str, Any]:
    maps = curve["map50"]
    entry: dict[str, Any] = {
        "aubc_images": aubc(curve["images"], maps),
        "aubc_images_map50_95": aubc(curve["images"], curve["map50_95"]),
        **{
            f"aubc_{axis}": (
                aubc(curve[axis], maps, *span)
                if span is not None and _increasing(curve[axis])
                else None
            )
            for axis, span in ranges.items()
        },
        "final_map50": maps[-1],
        "final_map50_95": curve["map50_95"][-1],
        "seconds_to_common": _reach(curve, "seconds", level),
    }
    for target in TARGETS:
        for axis in ("images", "boxes", "seconds"):
            entry[f"{axis}_to_{_pct(target)}"] = _reach(curve, axis, target * full_map)
    return entry


def _reach(curve: dict[str, list[float]], axis: str, level: float) -> float | None:
    """The budget on `axis` at which mAP@0.5 first reaches `level` (None: never, or no
    reference)."""
    if level <= 0 or not _increasing(curve[axis]):
        return None
    return label_efficiency(curve[axis], curve["map50"], level)


def _increasing(values: Sequence[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def rare_classes(result: dict[str, Any], scenario: str) -> list[str]:
    """The classes holding less than RARE_SHARE of the scenario pool's boxes."""
    counts = result["pools"][scenario]["pool"].get("class_counts", {})
    total = sum(counts.values())
    return sorted(name for name, n in counts.items() if total and n < RARE_SHARE * total)


def _rare_ap(row: dict[str, Any], rare: Sequence[str]) -> float | None:
    """Mean test AP@0.5 of the rare classes in a row (None: no rare class, or not recorded)."""
    per_class = row.get("class_ap50") or {}
    if not rare or not per_class:
        return None
    return float(np.mean([per_class.get(name, 0.0) for name in rare]))


def summarise_recipe(
    result: dict[str, Any], scenario: str, recipe: str, factor: float = 1.0
) -> dict[str, Any]:
    """Per arm: per-seed metrics (lists in seed order), their mean and spread, and savings."""
    full_map = float(result["references"].get(scenario, {}).get("map50", 0.0))
    curves = arm_curves(result, scenario, recipe, factor)
    costs = _costs(result, factor)
    n_pool = int(result["pools"][scenario]["pool"]["images"])
    seeds = sorted({seed for by_seed in curves.values() for seed in by_seed})
    rare = rare_classes(result, scenario)
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for row in result["rows"]:
        if row["scenario"] == scenario and row["recipe"] == recipe:
            key = (row["arm"], row["seed"])
            if key not in last or row["cycle"] > last[key]["cycle"]:
                last[key] = row
    arms: dict[str, Any] = {}
    per_seed: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in curves}
    for seed in seeds:
        present = [arm for arm in curves if seed in curves[arm]]
        # boxes and seconds differ by arm: AUBC over the range every arm of the seed covers
        ranges: dict[str, tuple[float, float] | None] = {}
        for axis in ("boxes", "seconds"):
            lo = max(curves[a][seed][axis][0] for a in present)
            hi = min(curves[a][seed][axis][-1] for a in present)
            ranges[axis] = (lo, hi) if hi > lo else None
        # the quality every arm of this seed reaches: their lowest final mAP@0.5
        level = min(curves[a][seed]["map50"][-1] for a in present)
        for arm in present:
            entry = _seed_metrics(curves[arm][seed], full_map, ranges, level)
            edits = (
                result.get("full_pool", {}).get(scenario, {}).get(str(seed), {}).get(recipe, {})
            ).get(arm)
            entry["seconds_full_pool"] = costs.seconds(edits, n_pool) if edits is not None else None
            entry["final_rare_ap50"] = _rare_ap(last[arm, seed], rare)
            per_seed[arm][seed] = entry
    for arm, entries in per_seed.items():
        order = sorted(entries)
        listed = {key: [entries[s][key] for s in order] for key in entries[order[0]]}
        summary: dict[str, Any] = {"seeds": order, **listed}
        summary["mean"] = {key: _mean_std(values) for key, values in listed.items()}
        for baseline in BASELINES:
            if baseline == arm or baseline not in per_seed:
                continue
            for key in ("seconds_to_common", "seconds_to_95", "seconds_full_pool"):
                summary.setdefault("saving_vs", {}).setdefault(baseline, {})[key] = _mean_std(
                    [
                        saving_vs_random(entries[s][key], per_seed[baseline].get(s, {}).get(key))
                        for s in order
                    ]
                )
        summary["gate_rejections"] = sum(
            not r["promoted"]
            for r in result["rows"]
            if r["scenario"] == scenario
            and r["recipe"] == recipe
            and r["arm"] == arm
            and r["cycle"] > 0
        )
        arms[arm] = summary
    return {"full_map50": full_map, "arms": arms, "curves": _mean_curves(curves)}


def _mean_curves(
    curves: dict[str, dict[int, dict[str, list[float]]]],
) -> dict[str, dict[str, list[Any]]]:
    """Per arm, per cycle: the seed mean (and spread) of every column, for plots."""
    out: dict[str, dict[str, list[Any]]] = {}
    for arm, by_seed in curves.items():
        columns = list(by_seed.values())
        length = min(len(c["map50"]) for c in columns)
        out[arm] = {
            key: [_mean_std([c[key][i] for c in columns]) for i in range(length)]
            for key in columns[0]
        }
    return out


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The summary of a run (results.json's rows, references and full-pool edits):
    `summary.json`'s shape, plus the converged recipe and the drawing-cost sensitivity."""
    scenarios: dict[str, Any] = {}
    for scenario in result["config"]["scenarios"]:
        product = summarise_recipe(result, scenario, PRODUCT)
        entry: dict[str, Any] = {
            "full_map50": product["full_map50"],
            "arms": product["arms"],
            "curves": product["curves"],
            "recipes": {},
            "sensitivity": {},
        }
        recipes = {r["recipe"] for r in result["rows"] if r["scenario"] == scenario}
        for recipe in sorted(recipes - {PRODUCT}):
            entry["recipes"][recipe] = summarise_recipe(result, scenario, recipe)
        for factor in DRAWN_FACTORS:
            if factor == 1.0:
                continue
            scaled = summarise_recipe(result, scenario, PRODUCT, factor)["arms"]
            entry["sensitivity"][f"drawn_x{factor:g}"] = {
                arm: {
                    "seconds_full_pool": s["mean"]["seconds_full_pool"],
                    "seconds_to_common": s["mean"]["seconds_to_common"],
                    "saving_vs": s.get("saving_vs", {}),
                }
                for arm, s in scaled.items()
                if arm == QUEUE
            }
        records = result.get("coldstart", {}).get(scenario)
        if records:
            entry.update(seed_mean(list(records.values())))
        scenarios[scenario] = entry
    return {"scenarios": scenarios}


SUMMARY_KEYS: tuple[str, ...] = (
    "seeds",
    "aubc_seconds",
    "aubc_images",
    "seconds_to_95",
    "seconds_full_pool",
    "final_map50",
    "final_rare_ap50",
)


COLDSTART_KEYS: tuple[str, ...] = ("near_duplicates", "encoder", "first_batch")


def summary_json(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json: per scenario the full-data mAP@0.5, per arm, per-seed lists, and the
    cold start's seed means (runs that recorded it)."""
    return {
        "scenarios": {
            name: {
                "full_map50": entry["full_map50"],
                "arms": {
                    arm: {key: values[key] for key in SUMMARY_KEYS}
                    for arm, values in entry["arms"].items()
                },
                **{key: entry[key] for key in COLDSTART_KEYS if key in entry},
            }
            for name, entry in summary["scenarios"].items()
        }
    }
