"""A class added mid-project: do the old classes keep their accuracy? (issue 19)

Per seed, on the synthetic shapes (`devkit.datagen`): a live model is trained from scratch on
images of the old classes only (square, circle); then the label config gains `triangle`,
inserted between them (square, triangle, circle: positions move, names do not), and a few
dozen images with triangles are labeled. The next run is made four ways:
- `today`: the fine-tune before issue 19, from the live weights as they are; ultralytics
  8.4.190 then copies the class rows it can match by name itself (`cls_remap`), and the gate
  had no comparison (classes differ), so the candidate was promoted untested;
- `head-reset`: the same with ultralytics' remap off (`cls_remap=False`): every class output
  restarts, which is what ultralytics versions without the remap do;
- `grown`: the product now: the live model's head grown by name (`grow_head`), then the
  same fine-tune. With no rename it starts from the very weights `today` starts from (checked:
  only the new class's randomly initialised row differs), so the two differ by the noise of
  training; the grown head also keeps classes renamed through `predicted_values`, which
  ultralytics cannot match, and does not rest on ultralytics' `cls_remap`;
- `scratch`: a new model from random weights on all the labels, with the live model's epochs.
Every model is scored on one fixed test split (images with all three shapes, never trained
on) with the product's `evaluate`: old-class mAP@0.5 (the mean AP@0.5 of square and circle)
before (the live model) and after, and the new class's AP@0.5. For the fine-tunes the gate of
the product is also computed (`gate_decision` on the run's validation split: both models on
the classes both know). Target: the grown head loses at most 0.02 old-class mAP@0.5.

    python -m benchmarks.class_growth [--seeds 2] [--start 0] [--workdir DIR] [--out DIR]
        [--arms today,head-reset,grown,scratch]
    python -m benchmarks.class_growth --summarise DIR [DIR ...] --out DIR
        (the seeds of several runs' results.json in one table)
    python -m benchmarks.class_growth --regate DIR --workdir WORKDIR --out DIR
        (the gate column again from a run's kept models, with the current gate code)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.config import Settings
from backend.models.offline import prepare_ultralytics, set_torch_threads
from backend.project_params import TrainParams
from backend.training.classes import class_change, grow_head, restricted_dataset
from backend.training.dataset import yaml_string
from backend.training.gate import gate_decision
from backend.training.trainer import RECIPE, evaluate
from devkit.datagen import CLASSES, SyntheticImage, make_image

OLD = ("square", "circle")
NEW_CLASS = "triangle"
NEW = ("square", "triangle", "circle")  # the new label config: the class inserted mid-list
ARMS = ("today", "head-reset", "grown", "scratch")
IMAGE_SIZE = 160
LIVE_EPOCHS = 30  # the live model's training, and the scratch arm's
FINE_TUNE_EPOCHS = 15
OLD_IMAGES = (64, 16)  # the old project's train / validation images
NEW_IMAGES = (30, 6)  # images with the new class labeled, train / validation
TEST_IMAGES = 60
TARGET_DROP = 0.02

Split = list[tuple[Path, SyntheticImage]]


def generate(folder: Path, count: int, seed: int, classes: Sequence[str], need: str = "") -> Split:
    """`count` images of shapes of `classes` (each holding a `need` shape, if named)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images: Split = []
    while len(images) < count:
        sample = make_image(rng, classes=tuple(classes))
        if need and all(b.label != need for b in sample.boxes):
            continue
        path = folder / f"{folder.name}_{len(images):04d}.jpg"
        sample.image.save(path, quality=92)
        images.append((path, sample))
    return images


def write_dataset(root: Path, splits: dict[str, Split], classes: Sequence[str]) -> Path:
    """A YOLO dataset of these images (linked) labeled with `classes` only; its data.yaml."""
    shutil.rmtree(root, ignore_errors=True)
    for split, items in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for path, sample in items:
            (root / "images" / split / path.name).symlink_to(path.resolve())
            width, height = sample.image.size
            lines = [
                f"{classes.index(b.label)} {(b.x1 + b.x2) / 2 / width:.6f} "
                f"{(b.y1 + b.y2) / 2 / height:.6f} {(b.x2 - b.x1) / width:.6f} "
                f"{(b.y2 - b.y1) / height:.6f}\n"
                for b in sample.boxes
                if b.label in classes
            ]
            (root / "labels" / split / f"{path.stem}.txt").write_text("".join(lines))
    names = "".join(f"  {i}: {yaml_string(name)}\n" for i, name in enumerate(classes))
    val = "val" if "val" in splits else "train"
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        f"path: {yaml_string(str(root.resolve()))}\ntrain: images/train\nval: images/{val}\n"
        f"names:\n{names}"
    )
    return data_yaml


def train(
    start: str | Path, data_yaml: Path, epochs: int, folder: Path, seed: int, **extra: Any
) -> Path:
    """The product's recipe (`RECIPE`) for a fixed number of epochs; the last weights."""
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

    YOLO(str(start), task="detect").train(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=IMAGE_SIZE,
        batch=8,
        device="cpu",
        val=False,
        **{**RECIPE, "seed": seed, **extra},
        project=str(folder),
        name="train",
        exist_ok=True,
    )
    weights = folder / "train" / "weights" / "last.pt"
    target = folder / "weights.pt"
    shutil.copyfile(weights, target)
    shutil.rmtree(folder / "train", ignore_errors=True)
    return target


class Yardstick:
    """The product's `evaluate` on a fixed split, per class list."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings, self.work = settings, work
        self.params = TrainParams.resolve(settings, {})

    def __call__(self, weights: Path, data_yaml: Path, classes: Sequence[str]) -> dict[str, Any]:
        work = self.work / "eval"
        metrics = evaluate(
            self.settings, self.params, weights, data_yaml, list(classes), work, IMAGE_SIZE
        )
        shutil.rmtree(work, ignore_errors=True)
        if metrics is None:
            raise RuntimeError(f"{weights} does not predict {list(classes)}")
        return metrics


def old_map(metrics: dict[str, Any]) -> float:
    return float(np.mean([metrics["per_class_ap50"][name] for name in OLD]))


def run_seed(seed: int, workdir: Path, arms: Sequence[str], settings: Settings) -> dict[str, Any]:
    root = workdir / f"seed{seed}"
    shutil.rmtree(root, ignore_errors=True)
    base = 1000 * seed
    old_train = generate(root / "pool" / "old-train", OLD_IMAGES[0], base + 1, OLD)
    old_val = generate(root / "pool" / "old-val", OLD_IMAGES[1], base + 2, OLD)
    new_train = generate(root / "pool" / "new-train", NEW_IMAGES[0], base + 3, CLASSES, NEW_CLASS)
    new_val = generate(root / "pool" / "new-val", NEW_IMAGES[1], base + 4, CLASSES, NEW_CLASS)
    test = generate(root / "pool" / "test", TEST_IMAGES, base + 5, CLASSES)
    test_old = write_dataset(root / "test-old", {"val": test}, OLD)
    test_new = write_dataset(root / "test-new", {"val": test}, NEW)
    phase1 = write_dataset(root / "phase1", {"train": old_train, "val": old_val}, OLD)
    phase2 = write_dataset(
        root / "phase2", {"train": old_train + new_train, "val": old_val + new_val}, NEW
    )
    score = Yardstick(settings, root)
    started = time.perf_counter()
    live = train("yolo11n.yaml", phase1, LIVE_EPOCHS, root / "live", seed)
    before = score(live, test_old, OLD)
    row: dict[str, Any] = {
        "seed": seed,
        "live": {"old_map50": old_map(before), "metrics": before},
        "live_train_s": round(time.perf_counter() - started, 1),
        "arms": {},
    }
    print(f"seed {seed}: live old-class mAP50 {old_map(before):.4f}", flush=True)
    change = class_change(OLD, NEW)
    for arm in arms:
        started = time.perf_counter()
        folder = root / arm
        if arm == "scratch":
            weights = train("yolo11n.yaml", phase2, LIVE_EPOCHS, folder, seed)
        elif arm == "grown":
            grow_head(live, change, folder / "parent.pt")
            weights = train(folder / "parent.pt", phase2, FINE_TUNE_EPOCHS, folder, seed)
        else:
            remap = {"cls_remap": arm == "today"}
            weights = train(live, phase2, FINE_TUNE_EPOCHS, folder, seed, **remap)
        seconds = time.perf_counter() - started
        after = score(weights, test_new, NEW)
        result: dict[str, Any] = {
            "old_map50": old_map(after),
            "old_drop": old_map(before) - old_map(after),
            "new_ap50": after["per_class_ap50"].get(NEW_CLASS),
            "train_s": round(seconds, 1),
            "metrics": after,
        }
        if arm != "scratch":
            result["gate"] = shared_gate(root, arm, score)
        row["arms"][arm] = result
        print(
            f"seed {seed} {arm}: old-class mAP50 {result['old_map50']:.4f} "
            f"(drop {result['old_drop']:+.4f}), {NEW_CLASS} AP50 {result['new_ap50']:.4f}, "
            f"{seconds:.0f}s",
            flush=True,
        )
    return row


def shared_gate(root: Path, arm: str, score: Yardstick) -> dict[str, Any]:
    """The product's gate for an arm's candidate against the live model, on the run's
    validation split: both scored on the classes both know."""
    phase2 = root / "phase2" / "data.yaml"
    change = class_change(OLD, NEW)
    candidate = score(root / arm / "weights.pt", phase2, NEW)
    restricted = restricted_dataset(phase2, change, root / arm / "val-live")
    live = score(root / "live" / "weights.pt", restricted, OLD)
    labels = (root / "phase2" / "labels" / "val").glob("*.txt")
    val_boxes = sum(len(path.read_text().splitlines()) for path in labels)
    return gate_decision(candidate, live, change, 0.0, val_boxes)


def summarise(rows: Sequence[dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "live_old_map50": float(np.mean([r["live"]["old_map50"] for r in rows]))
    }
    for arm in arms:
        results = [r["arms"][arm] for r in rows]
        summary[arm] = {
            key: float(np.mean([res[key] for res in results]))
            for key in ("old_map50", "old_drop", "new_ap50")
        }
        summary[arm]["max_old_drop"] = float(max(res["old_drop"] for res in results))
    return summary


def markdown(rows: Sequence[dict[str, Any]], summary: dict[str, Any], arms: Sequence[str]) -> str:
    lines = [
        f"Seeds: {len(rows)}. Old classes {', '.join(OLD)}; new class {NEW_CLASS} "
        f"({NEW_IMAGES[0]} train + {NEW_IMAGES[1]} validation images labeled); new config "
        f"order {', '.join(NEW)}; test split {TEST_IMAGES} images; {IMAGE_SIZE} px; live "
        f"model and scratch {LIVE_EPOCHS} epochs, fine-tunes {FINE_TUNE_EPOCHS}.",
        "",
        "| arm | seed | old-class mAP@0.5 before | after | drop | new-class AP@0.5 | "
        "gate on shared classes (candidate / live) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for arm in arms:
            res = row["arms"][arm]
            gate = res.get("gate")
            shown = "-"
            if gate is not None:
                shared = gate["shared_map50"]
                verdict = "pass" if gate["passed"] else "reject"
                shown = f"{shared['candidate']:.4f} / {shared['live']:.4f} ({verdict})"
            lines.append(
                f"| {arm} | {row['seed']} | {row['live']['old_map50']:.4f} | "
                f"{res['old_map50']:.4f} | {res['old_drop']:+.4f} | {res['new_ap50']:.4f} | "
                f"{shown} |"
            )
    lines += [
        "",
        "| arm | mean old-class drop | worst drop | mean new-class AP@0.5 |",
        "|---|---|---|---|",
    ]
    for arm in arms:
        s = summary[arm]
        lines.append(
            f"| {arm} | {s['old_drop']:+.4f} | {s['max_old_drop']:+.4f} | {s['new_ap50']:.4f} |"
        )
    if "grown" in arms:
        worst = summary["grown"]["max_old_drop"]
        verdict = "met" if worst <= TARGET_DROP else "missed"
        lines += [
            "",
            f"Target (grown head drops at most {TARGET_DROP}): {verdict} (worst {worst:+.4f}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.class_growth", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=int, default=2, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="train nothing: one table of the seeds in these runs' results.json",
    )
    parser.add_argument(
        "--regate",
        type=Path,
        default=None,
        metavar="DIR",
        help="train nothing: the gate of DIR/results.json's runs again, from --workdir's models",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument(
        "--out", type=Path, default=None, help="write results.json and results.md here"
    )
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    if args.summarise:
        rows = [row for d in args.summarise for row in _read_rows(d / "results.json")]
        _write(rows, arms, args.out)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="class-growth-"))
    settings = replace(Settings(), model_dir=workdir / "models", device="cpu")
    prepare_ultralytics(settings.paths.ultralytics)
    set_torch_threads(settings.torch_threads)
    if args.regate is not None:
        score = Yardstick(settings, workdir)
        rows = _read_rows(args.regate / "results.json")
        for row in rows:
            for arm, result in row["arms"].items():
                if "gate" in result:
                    result["gate"] = shared_gate(workdir / f"seed{row['seed']}", arm, score)
        _write(rows, arms, args.out)
        return 0
    rows = []
    for seed in range(args.start, args.start + args.seeds):
        rows.append(run_seed(seed, workdir, arms, settings))
        _write(rows, arms, args.out)  # after every seed: a long run keeps what it measured
    return 0


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["rows"])


def _write(rows: Sequence[dict[str, Any]], arms: Sequence[str], out: Path | None) -> None:
    summary = summarise(rows, arms)
    table = markdown(rows, summary, arms)
    print(table, flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(
            json.dumps({"rows": list(rows), "summary": summary}, indent=2) + "\n"
        )
        (out / "results.md").write_text(table)


if __name__ == "__main__":
    raise SystemExit(main())
