"""ONNX export of a promoted model: what it costs, how close onnxruntime stays to PyTorch, and
how fast each runs on the CPU.

Trains yolo11n on the generated shapes at --train-size for --epochs (`devkit.demo_model`),
or takes --weights; then for each of --sizes exports it at that size with the product's own
`export_onnx` (timed, file size), runs the product's check (`compare`, the figures a version's
meta records) on --images generated validation pictures (320 x 256), then times inference per
image on one letterboxed picture: PyTorch (fused, as the detector runs it) and onnxruntime
(CPU), the median of --repeats runs after 3 warm-up runs each, model forward only (no
letterbox, no NMS), at --threads threads (0: every core). Prints a table and writes
results.json to --out.

    python -m benchmarks.onnx_export [--train-size 320] [--epochs 30] [--sizes 320,640]
        [--images 50] [--repeats 30] [--threads 0] [--weights W.pt]
        [--out benchmarks/results/onnx-export]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backend.models.offline import prepare_ultralytics, set_torch_threads
from backend.training.onnx_export import check_images, compare, export_onnx
from devkit.datagen import write_images
from devkit.demo_model import train_shapes_model


def _timed(run: Any, repeats: int) -> float:
    """Median milliseconds of `run()` over `repeats` calls, after 3 warm-up calls."""
    for _ in range(3):
        run()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


def _inference_ms(
    weights: Path, onnx: Path, picture: Path, size: int, threads: int, repeats: int
) -> dict[str, float]:
    import onnxruntime
    import torch
    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox

    model = YOLO(str(weights), task="detect").model.float().fuse(verbose=False).eval()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    with Image.open(picture) as image:
        rgb = np.asarray(image.convert("RGB"))
    boxed = LetterBox(new_shape=(size, size), auto=False)(image=rgb)
    batch = np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    tensor = torch.from_numpy(batch)
    name = session.get_inputs()[0].name

    def torch_run() -> None:
        with torch.inference_mode():
            model(tensor)

    torch_ms = _timed(torch_run, repeats)
    onnx_ms = _timed(lambda: session.run(None, {name: batch}), repeats)
    return {"torch_ms": round(torch_ms, 2), "onnxruntime_ms": round(onnx_ms, 2)}


def measure(args: argparse.Namespace, weights: Path, size: int, workdir: Path) -> dict[str, Any]:
    images = workdir / f"val-{size}"
    write_images(images, args.images, seed=1000 + size)
    scratch = workdir / f"export-{size}"
    scratch.mkdir()
    started = time.perf_counter()
    onnx, exported_size = export_onnx(weights, size, scratch)
    export_s = time.perf_counter() - started
    figures, io = compare(weights, onnx, check_images(images), exported_size, 0.05, args.threads)
    timing = _inference_ms(
        weights, onnx, sorted(images.iterdir())[0], exported_size, args.threads, args.repeats
    )
    return {
        "image_size": exported_size,
        "export_s": round(export_s, 2),
        "pt_bytes": weights.stat().st_size,
        "onnx_bytes": onnx.stat().st_size,
        "check": {**asdict(figures), "passed": figures.passed},
        "io": io,
        **timing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--train-size", type=int, default=320, help="training image size")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--sizes", default="320,640", help="export sizes, comma-separated")
    parser.add_argument("--images", type=int, default=50, help="validation pictures checked")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per runtime")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: all)")
    parser.add_argument("--weights", type=Path, help="a trained .pt instead of training one")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx-export"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as folder:
        workdir = Path(folder)
        prepare_ultralytics(workdir / "ultralytics")
        set_torch_threads(args.threads)
        weights, train_s = args.weights, None
        if weights is None:
            started = time.perf_counter()
            weights = train_shapes_model(
                workdir / "model",
                workdir / "ultralytics",
                imgsz=args.train_size,
                epochs=args.epochs,
            )
            train_s = round(time.perf_counter() - started, 1)
        rows = [measure(args, weights, int(size), workdir) for size in args.sizes.split(",")]
    print(
        f"{'size':>5} {'export s':>9} {'pt MB':>6} {'onnx MB':>8} {'images':>7} {'boxes':>6} "
        f"{'matched':>8} {'min IoU':>8} {'max score diff':>15} {'torch ms':>9} {'ort ms':>7}"
    )
    for row in rows:
        check = row["check"]
        print(
            f"{row['image_size']:>5} {row['export_s']:>9.1f} {row['pt_bytes'] / 1e6:>6.1f} "
            f"{row['onnx_bytes'] / 1e6:>8.1f} {check['images']:>7} {check['boxes_torch']:>6} "
            f"{check['matched']:>8} {check['min_iou'] or float('nan'):>8.6f} "
            f"{check['max_score_diff']:>15.2e} {row['torch_ms']:>9.1f} "
            f"{row['onnxruntime_ms']:>7.1f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join(["python -m benchmarks.onnx_export", *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "threads": args.threads,
        "model": str(args.weights)
        if args.weights
        else f"yolo11n trained on the generated shapes at {args.train_size} px, {args.epochs} "
        f"epochs, in {train_s} s",
        "rows": rows,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
