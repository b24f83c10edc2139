"""The benchmark's outputs: results.json (everything), summary.json (the agreed shape), a
markdown report with a plain verdict per scenario, and one PNG of curves per scenario.

`resummarise` rebuilds all of them from a results.json or partial.json without training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.label_efficiency.config import (
    COLDSTART,
    CONVERGED,
    ENCODER,
    MANUAL,
    QUEUE,
    RANDOM,
    STATIC,
    UNTRAINED_ARMS,
)
from benchmarks.label_efficiency.metrics import BASELINES, summarise, summary_json


def _stat(stat: dict[str, Any] | None, digits: int = 3, percent: bool = False) -> str:
    if stat is None or stat["mean"] is None:
        return "not reached"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}{unit}"
    return text if stat["n"] == stat["of"] else f"{text} ({stat['n']}/{stat['of']} seeds)"


def _seconds(stat: dict[str, Any] | None) -> str:
    if stat is None or stat["mean"] is None:
        return "not reached"
    text = f"{stat['mean'] / 60:.1f} ± {stat['std'] / 60:.1f} min"
    return text if stat["n"] == stat["of"] else f"{text} ({stat['n']}/{stat['of']} seeds)"


def _saving(arm: dict[str, Any], baseline: str, key: str) -> str:
    stat = arm.get("saving_vs", {}).get(baseline, {}).get(key)
    return "-" if stat is None else _stat(stat, 1, True)


def _verdict(name: str, entry: dict[str, Any]) -> list[str]:
    """Plain sentences: does the default queue save annotator seconds, against what, how much."""
    queue = entry["arms"].get(QUEUE)
    if queue is None:
        return [f"No `{QUEUE}` arm ran on {name}."]
    lines = []
    for baseline in BASELINES:
        if baseline not in entry["arms"]:
            continue
        key = "seconds_to_common"
        common = queue["saving_vs"][baseline][key]
        pool = queue["saving_vs"][baseline]["seconds_full_pool"]
        mean = common["mean"]
        if mean is None:
            said = "cannot be compared (an arm never reached the common mAP)"
        elif mean > 0:
            said = f"**saves {mean * 100:.1f}%** of the seconds"
        else:
            said = f"**costs {-mean * 100:.1f}% more** seconds"
        lines.append(
            f"- against **{baseline}**: to reach the mAP@0.5 every arm reaches, the queue {said} "
            f"(per seed: {_per_seed(queue[key], entry['arms'][baseline][key])}); to 95% of "
            f"the full-data mAP: {_stat(queue['saving_vs'][baseline]['seconds_to_95'], 1, True)}"
            f"; over the whole pool: {_stat(pool, 1, True)}."
        )
    return lines


def _per_seed(ours: list[float | None], theirs: list[float | None]) -> str:
    """Each seed's saving, 1 - ours / theirs, as signed percentages."""
    return ", ".join(
        f"{(1 - a / b) * 100:+.0f}%" if a is not None and b else "n/a"
        for a, b in zip(ours, theirs, strict=True)
    )


# the queue arm that continues from each first batch, for its mAP after the next cycle
_CONTINUED = {RANDOM: QUEUE, ENCODER: COLDSTART}


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _coldstart(entry: dict[str, Any]) -> list[str]:
    """The cold start's lines: the encoder's near-duplicate groups and cost, and what each
    first batch covers and trains (seed means; none for a run that did not record it)."""
    near, encoder = entry.get("near_duplicates"), entry.get("encoder")
    if near is None or encoder is None:
        return []
    lines = [
        "",
        f"Cold start (seed means). The encoder trained on the pool's thumbnails for "
        f"{encoder['train_s']:.0f} s ({encoder['steps']:.0f} steps, embedding "
        f"{encoder['images_per_s']:.0f} images/s) groups near-duplicates with pair precision "
        f"{_number(near['precision'])} and recall {_number(near['recall'])} against the "
        f"{near['true_pairs']:.0f} known pairs ({near['found_pairs']:.0f} found; thresholds "
        f"{near['thresholds']['whole']:.3f} whole, {near['thresholds']['detail']:.3f} detail, "
        f"{near['thresholds']['change']:.2f} change).",
        "",
        "| first batch | classes | boxes | duplicate groups picked twice | test mAP@0.5 "
        "| after cycle 1 (hybrid) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, covered in entry.get("first_batch", {}).items():
        curve = entry["curves"].get(_CONTINUED.get(kind, ""), {}).get("map50", [])
        later = curve[1]["mean"] if len(curve) > 1 else None
        lines.append(
            f"| {kind} | {covered['classes']:.1f} | {covered['boxes']:.1f} "
            f"| {_number(covered['groups_hit_twice'], 2)} | {_number(covered['map50'])} "
            f"| {_number(later)} |"
        )
    return lines


def _params(config: dict[str, Any]) -> str:
    """The extra params and ablation variants a run used, as text ('' for none)."""
    parts = [f"{k}={v}" for k, v in config.get("extra_params", {}).items()]
    parts += [
        f"variant {name}: " + ", ".join(f"{k}={v}" for k, v in params.items())
        for name, params in config.get("variants", {}).items()
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def markdown_report(result: dict[str, Any]) -> str:
    config = result["config"]
    lines = [
        f"# Label efficiency v2: {result['mode']} mode",
        "",
        f"Scenarios {', '.join(config['scenarios'])}; pool {config['n_pool']} images, test "
        f"{config['n_test']}; seeds {config['seeds']}; labeled images per cycle "
        f"{config['budgets']} (the first is the seed set: random, the encoder's picks for "
        f"coldstart); product recipe at most {config['epochs']} epochs per run at "
        f"{config['image_size']} px (warm start, "
        f"early stopping, time limit, gate, calibrated display threshold){_params(config)}; "
        + (
            f"converged recipe up to {config['converged_max_epochs']} epochs, patience "
            f"{config['converged_patience']}, for {', '.join(config['converged_strategies'])} "
            f"on the first {config['converged_seeds']} seed(s)"
            if config.get("converged_seeds", 1)
            else "no converged recipe"
        )
        + f". Wall time {result.get('wall_s', 0) / 60:.1f} min.",
        "",
        "Seconds: the annotator-cost model (`backend/analytics/cost.py`: accept "
        f"{config['costs']['accepted']} s, adjust {config['costs']['adjusted']} s, relabel "
        f"{config['costs']['relabeled']} s, delete {config['costs']['deleted']} s, draw "
        f"{config['costs']['drawn']} s per box, {config['costs']['per_image']} s per image) "
        "applied to the one-to-one matching of the boxes shown to the ground truth.",
        "",
    ]
    for name, entry in result["scenarios"].items():
        lines += [
            f"## {name}",
            "",
            f"Full-data reference (converged recipe on the whole pool): mAP@0.5 "
            f"{entry['full_map50']:.3f}.",
            "",
            "Does the default queue save annotator seconds (product recipe)?",
            "",
            *_verdict(name, entry),
            "",
            "| arm | final mAP@0.5 | AUBC (images) | AUBC (boxes) | AUBC (seconds) | s to 90% "
            "| s to 95% | s to common mAP | s for whole pool | saving vs random | vs static "
            "| vs manual | gate rejections | rare-class AP@0.5 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for arm, s in entry["arms"].items():
            m = s["mean"]
            lines.append(
                f"| {arm} | {_stat(m['final_map50'])} | {_stat(m['aubc_images'])} "
                f"| {_stat(m['aubc_boxes'])} | {_stat(m['aubc_seconds'])} "
                f"| {_seconds(m['seconds_to_90'])} | {_seconds(m['seconds_to_95'])} "
                f"| {_seconds(m['seconds_to_common'])} "
                f"| {_seconds(m['seconds_full_pool'])} "
                f"| {_saving(s, RANDOM, 'seconds_to_common')} "
                f"| {_saving(s, STATIC, 'seconds_to_common')} "
                f"| {_saving(s, MANUAL, 'seconds_to_common')} "
                f"| {'-' if arm in UNTRAINED_ARMS else s['gate_rejections']} "
                f"| {_stat(m['final_rare_ap50']) if m['final_rare_ap50']['n'] else '-'} |"
            )
        lines += _coldstart(entry)
        converged = entry["recipes"].get(CONVERGED)
        if converged:
            lines += [
                "",
                "Converged recipe (trained from the base model to early stopping each cycle):",
                "",
                "| arm | final mAP@0.5 | AUBC (images) | s to common mAP | saving vs random |",
                "|---|---|---|---|---|",
            ]
            for arm, s in converged["arms"].items():
                m = s["mean"]
                lines.append(
                    f"| {arm} | {_stat(m['final_map50'])} | {_stat(m['aubc_images'])} "
                    f"| {_seconds(m['seconds_to_common'])} "
                    f"| {_saving(s, RANDOM, 'seconds_to_common')} |"
                )
        if entry["sensitivity"]:
            lines += [
                "",
                "Drawing-cost sensitivity (the same edits priced with drawing at other costs; "
                "queue's saving to the common mAP, and over the whole pool):",
                "",
                "| drawing cost | vs random | vs static | vs manual | whole pool vs manual |",
                "|---|---|---|---|---|",
            ]
            for key, arms in entry["sensitivity"].items():
                for s in arms.values():
                    lines.append(
                        f"| {key.removeprefix('drawn_')} "
                        + "".join(f"| {_saving(s, b, 'seconds_to_common')} " for b in BASELINES)
                        + f"| {_saving(s, MANUAL, 'seconds_full_pool')} |"
                    )
        lines += ["", f"![{name}]({name}.png)", ""]
    lines += [
        "Columns: seed mean ± std. AUBC: mean mAP@0.5 over the budget range (seconds: the range "
        "every arm of a seed covers). s to x%: annotator seconds until mAP@0.5 first reaches x% "
        "of the full-data reference (linear between cycles). Common mAP: the lowest final "
        "mAP@0.5 among a seed's arms, so every arm reaches it. Whole pool: the cycles' seconds "
        "plus the rest of the pool pre-annotated by the final model (no further retraining). "
        "manual and static label random's images: their mAP is random's. Cold start: first "
        "batches picked at random, or by TypiClust on the embeddings of the encoder trained on "
        "the pool (`coldstart` continues from it) or of the base model's neck; precision and "
        "recall count pairs of images in one group against the generator's known duplicates.",
    ]
    return "\n".join(lines) + "\n"


def plot_scenario(name: str, entry: dict[str, Any], out_dir: Path) -> Path:
    """mAP@0.5 against labeled images and against annotator seconds (seed mean, ±1 std)."""
    import matplotlib  # noqa: PLC0415  (heavy; the Agg backend is a plotting side effect)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, panels = plt.subplots(1, 2, figsize=(14, 4.8))
    series = [(arm, "-", curve) for arm, curve in entry["curves"].items()]
    converged = entry["recipes"].get(CONVERGED)
    if converged:
        series += [(f"{arm} (converged)", ":", c) for arm, c in converged["curves"].items()]
    fixed = {MANUAL: "black", STATIC: "dimgrey", RANDOM: "tab:blue", QUEUE: "tab:red"}
    others = iter(["C1", "C2", "C4", "C5", "C6", "C8", "C9", "tab:olive", "tab:cyan", "gold"])
    colours = {}
    for label, _, _ in series:
        arm = label.split(" ")[0]
        colours.setdefault(arm, fixed.get(arm) or next(others, "tab:olive"))
    for label, style, curve in series:
        colour = colours[label.split(" ")[0]]
        mean = [p["mean"] for p in curve["map50"]]
        std = [p["std"] for p in curve["map50"]]
        for panel, axis, scale in zip(panels, ("images", "seconds"), (1.0, 1 / 3600), strict=True):
            x = [p["mean"] * scale for p in curve[axis]]
            width = 2.5 if label.startswith(QUEUE) else 1.3
            panel.plot(x, mean, style, color=colour, marker="o", ms=3, lw=width, label=label)
            panel.fill_between(
                x,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                color=colour,
                alpha=0.08,
            )
    for panel, xlabel in zip(panels, ("labeled images", "annotator hours"), strict=True):
        panel.axhline(entry["full_map50"], color="black", lw=1, label="full data")
        panel.axhline(0.95 * entry["full_map50"], color="grey", ls="--", lw=1, label="95%")
        panel.set_xlabel(xlabel)
        panel.set_ylabel("test mAP@0.5")
        panel.grid(alpha=0.3)
    handles, labels = panels[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.subplots_adjust(right=0.86, left=0.05, wspace=0.15)
    fig.suptitle(f"{name}: mAP@0.5 vs labels and vs annotator time (mean of seeds, ±1 std)")
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out_dir: Path) -> None:
    """results.json, summary.json, results.md and one plot per scenario under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8"
    )
    (out_dir / "summary.json").write_text(
        json.dumps(summary_json(result), indent=2) + "\n", encoding="utf-8"
    )
    (out_dir / "results.md").write_text(markdown_report(result), encoding="utf-8")
    for name, entry in result["scenarios"].items():
        plot_scenario(name, entry, out_dir)


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs of different scenarios (each run's rows, pools, references,
    whole-pool edits and cold-start records; its configuration is kept under `merged_from`);
    ValueError if two runs share a scenario."""
    if len(runs) == 1:
        return runs[0]
    scenarios = [name for run in runs for name in run["config"]["scenarios"]]
    if len(set(scenarios)) != len(scenarios):
        raise ValueError(f"runs to merge must cover different scenarios, got {scenarios}")
    merged = {
        **runs[0],
        "mode": " + ".join(run["mode"] for run in runs),
        "config": {
            **runs[0]["config"],
            "scenarios": scenarios,
            "variants": {
                k: v for run in runs for k, v in run["config"].get("variants", {}).items()
            },
        },
        "merged_from": [
            {"mode": run["mode"], "config": run["config"], "wall_s": run.get("wall_s")}
            for run in runs
        ],
        "complete": all(run.get("complete", False) for run in runs),
        "wall_s": sum(run.get("wall_s", 0.0) for run in runs),
    }
    for key in ("pools", "references", "full_pool", "coldstart"):
        merged[key] = {name: v for run in runs for name, v in run.get(key, {}).items()}
    merged["rows"] = [row for run in runs for row in run["rows"]]
    return merged


def resummarise(paths: list[Path], out_dir: Path) -> dict[str, Any]:
    """Rebuild every output from one or more results.json or partial.json files (no
    training); runs of different scenarios are merged (`merge_runs`)."""
    raw = merge_runs([json.loads(path.read_text(encoding="utf-8")) for path in paths])
    result = {**raw, **summarise(raw)}
    if not raw.get("complete", False):
        result["mode"] = f"{raw['mode']} (PARTIAL: {len(raw['rows'])} rows)"
    write_outputs(result, out_dir)
    return result
