"""The benchmark's outputs: results.json, the markdown table and the two PNG plots.

`write_outputs` writes a finished result (the simulation's rows with `metrics.summarise`'s
curves and summary) under one folder; `resummarise` rebuilds them from a results.json or
partial.json without training, for a run cut short or after the report changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.label_efficiency.config import (
    CONTROL,
    DEFAULT_STRATEGY,
    STRATEGIES,
    BenchConfig,
    CycleRow,
)
from benchmarks.label_efficiency.digits_data import DigitsConfig
from benchmarks.label_efficiency.metrics import summarise
from strategies import available_strategies


def _fmt(
    stat: dict[str, Any] | float | None,
    digits: int = 3,
    percent: bool = False,
    missing: str = "not reached",
) -> str:
    if isinstance(stat, dict):
        if stat["mean"] is None:
            return missing
        scale, unit = (100.0, "%") if percent else (1.0, "")
        text = f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}{unit}"
        return text if stat["n"] == stat["of"] else f"{text} ({stat['n']}/{stat['of']} seeds)"
    if stat is None:
        return missing
    return f"{stat * 100.0:.{digits}f}%" if percent else f"{stat:.{digits}f}"


def markdown_report(result: dict[str, Any]) -> str:
    """The results as markdown: the reference, the per-arm summary, then every curve point."""
    full, config = result["full_data"], result["config"]
    lines = [
        f"# Label efficiency: {result['mode']} mode",
        "",
        f"Pool {config['data']['n_pool']} images / {full['boxes']} boxes, test "
        f"{config['data']['n_test']} images; seeds {config['seeds']}; seed set "
        f"{config['seed_size']}, batch {config['batch_size']}, {config['cycles']} cycles, "
        f"{config['epochs']} epochs per run at {config['image_size']} px.",
        "",
        f"Full-data reference ({full['images']} images, {full['epochs']} epochs): "
        f"mAP@0.5 = {full['map50']:.3f}, mAP@0.5:0.95 = {full['map50_95']:.3f}.",
        "",
        "| strategy | AUBC mAP50 (images) | AUBC mAP50 (boxes) | AUBC mAP50-95 | LE@90 (images) "
        "| LE@95 (images) | boxes @90 | saving @90 vs random | saving @95 | AUBC > random "
        "| final mAP50 / full | saving at random's final mAP50 | gate rejections |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for strategy, s in result["summary"].items():
        wins = (
            "-" if strategy == CONTROL else f"{s['aubc_wins_vs_random']}/{s['aubc_seeds_compared']}"
        )
        lines.append(
            f"| {strategy} | {_fmt(s['aubc_images'])} | {_fmt(s['aubc_boxes'])} "
            f"| {_fmt(s['aubc_images_map50_95'])} | {_fmt(s['le90'], 1, True)} "
            f"| {_fmt(s['le95'], 1, True)} | {_fmt(s['le90_boxes'], 0)} "
            f"| {_fmt(s['saving90_mean_curve'], 1, True)} (per seed {_fmt(s['saving90'], 1, True)})"
            f" | {_fmt(s['saving95_mean_curve'], 1, True)} | {wins} "
            f"| {_fmt(s['final_map50_vs_full'], 1, True, missing='n/a (full = 0)')} "
            f"| {_fmt(s['saving_at_random_final'], 1, True)} "
            f"| {s['gate_rejections']}/{s['trainings']} |"
        )
    lines += [
        "",
        "LE@x: smallest labeled fraction of the pool whose mAP@0.5 reaches x of the full-data "
        "mAP@0.5 (mean ± std over seeds, linear between cycles); saving: 1 - LE(arm) / "
        "LE(random) on the seed-mean curves (per-seed mean in brackets). AUBC: mean mAP over "
        "the budget range (boxes: the range every arm of a seed covers). Saving at random's "
        "final mAP50: 1 - images the arm needs to match the mAP@0.5 random ends with / images "
        "random needs (not reached: the arm never matches it). Gate rejections: retrainings "
        "whose candidate lost to the live model on the project's validation share and was "
        "not promoted (the live model stayed).",
        "",
    ]
    target = result.get("target")
    if target is not None:
        verdict = "MET" if target["passed"] else "NOT MET"
        lines += [
            f"Target ({target['strategy']}: >= 30% fewer images than random to 90% of full-data "
            f"mAP@0.5, higher AUBC than random on every seed): **{verdict}** (saving "
            f"{_fmt(target['saving90_mean_curve'], 1, True)}, AUBC wins "
            f"{target['aubc_wins_vs_random']}/{target['seeds']}).",
            "",
        ]
    lines += [
        "| strategy | cycle | images | % pool | boxes | mAP@0.5 | mAP@0.5:0.95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["curves"]:
        lines.append(
            f"| {c['strategy']} | {c['cycle']} | {c['images']} | {c['fraction'] * 100:.1f} "
            f"| {_fmt(c['boxes'], 0)} | {_fmt(c['map50'])} | {_fmt(c['map50_95'])} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """mAP vs labeled images and vs labeled boxes (seed mean with a ±1 std band)."""
    # Lazy: matplotlib is heavy, and choosing its Agg backend is a side effect that belongs
    # to plotting, not to importing the report.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    full = result["full_data"]
    paths = []
    for axis, xlabel, name in (
        ("images", "labeled images", "map_vs_images.png"),
        ("boxes", "labeled boxes (seed mean)", "map_vs_boxes.png"),
    ):
        fig, panels = plt.subplots(1, 2, figsize=(12, 4.5))
        for panel, metric, title in zip(
            panels, ("map50", "map50_95"), ("mAP@0.5", "mAP@0.5:0.95"), strict=True
        ):
            for strategy in result["summary"]:
                points = [c for c in result["curves"] if c["strategy"] == strategy]
                x = np.array(
                    [c["images"] if axis == "images" else c["boxes"]["mean"] for c in points]
                )
                mean = np.array([c[metric]["mean"] for c in points])
                std = np.array([c[metric]["std"] for c in points])
                style = "--" if strategy == CONTROL else "-"
                width = 2.5 if strategy == DEFAULT_STRATEGY else 1.5
                # One colour per strategy name, the same in every run's plots.
                order = [*STRATEGIES, *(n for n in available_strategies() if n not in STRATEGIES)]
                index = order.index(strategy) if strategy in order else len(order)
                colour = f"C{index % 10}"
                panel.plot(
                    x,
                    mean,
                    style,
                    color=colour,
                    marker="o",
                    markersize=3,
                    linewidth=width,
                    label=strategy,
                )
                panel.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15)
            reference = full[metric]
            panel.axhline(reference, color="black", linewidth=1, label="full data")
            if metric == "map50":
                panel.axhline(
                    0.9 * reference, color="grey", linestyle=":", linewidth=1, label="90% of full"
                )
            panel.set_xlabel(xlabel)
            panel.set_ylabel(f"test {title}")
            panel.set_title(f"{title} vs {xlabel}")
            panel.grid(alpha=0.3)
        panels[0].legend(fontsize=8)
        fig.suptitle(
            f"Label efficiency, {result['mode']} mode, {len(result['config']['seeds'])} seed(s)"
        )
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_outputs(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """results.json, results.md and the two plots under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = out_dir / "results.md"
    md_path.write_text(markdown_report(result), encoding="utf-8")
    images, boxes = plot_curves(result, out_dir)
    return {"json": json_path, "markdown": md_path, "plot_images": images, "plot_boxes": boxes}


def resummarise(path: Path, out_dir: Path) -> dict[str, Any]:
    """Rebuild the summary, table and plots from a results.json or partial.json (no training).

    For a run cut short (partial.json is written as rows arrive) or after changing the report.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    cfg = dict(raw["config"])
    config = BenchConfig(
        **{
            **cfg,
            "data": DigitsConfig(**cfg["data"]),
            "strategies": tuple(cfg["strategies"]),
            "seeds": tuple(cfg["seeds"]),
        }
    )
    rows = [CycleRow(**row) for row in raw["rows"]]
    result = {
        **raw,
        **summarise(rows, raw["full_data"], config, int(raw["full_data"]["images"])),
    }
    if not raw.get("complete", False):
        done = sorted({(r.seed, r.strategy) for r in rows if r.cycle == config.cycles})
        arms = len(config.seeds) * len(config.strategies)
        result["mode"] = f"{raw['mode']} (PARTIAL: {len(done)} of {arms} arms complete)"
    write_outputs(result, out_dir)
    return result
