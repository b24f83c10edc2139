"""Interactive assist through gunicorn: how long an annotator waits for a snapped box, and how
much it improves a rough rectangle.

A backend (`ls-active-yolo serve`, one worker, a tiny model trained here on CPU at 160 px;
IMAGE_SIZE 640 by default, the compute of a real model) gets, for every object of 640 x 480
synthetic pictures, what Label Studio's smart tools send: a rough rectangle (20% too large,
off-centre) and a click at the object's centre. Baseline, in the same run: a plain /predict of
the same one task (the whole picture, what opening a task costs). Prints the p50 latencies,
their ratio to the baseline, and the IoU with the true box of the rough rectangles and of the
boxes that came back. Target (issue 17): p50 <= 300 ms.

    python -m benchmarks.assist_latency [--images 20] [--weights W.pt] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests

from devkit.datagen import CLASSES, drawn_click, drawn_rectangle, make_image, region_iou
from devkit.demo import BackendServer
from devkit.demo_model import train_shapes_model
from devkit.local_label_studio import find_free_port

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + '</RectangleLabels><KeyPointLabels name="click" toName="image" smart="true">'
    '<Label value="Object"/></KeyPointLabels></View>'
)
WIDTH, HEIGHT = 640, 480


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--weights", type=Path, help="a .pt to serve (default: train one)")
    parser.add_argument(
        "--imgsz", type=int, default=640, help="IMAGE_SIZE (the tiny model was trained at 160)"
    )
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="assist-latency-"))
    weights = args.weights or train_shapes_model(work / "model", work / "ultralytics")
    rng = np.random.default_rng(5)
    scenes = []
    for i in range(args.images):
        sample = make_image(rng, WIDTH, HEIGHT)
        path = work / "images" / f"scene_{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(path, quality=92)
        scenes.append((path, sample))
    settings = {
        "MODEL_DIR": str(work / "models"),
        "MODEL_PATH": str(weights),
        "IMAGE_ROOT": str(work / "images"),
        "IMAGE_SIZE": str(args.imgsz),
        "TRAINING": "0",
        "LOG_LEVEL": "WARNING",
    }
    backend = BackendServer(find_free_port(), settings, work / "backend")
    backend.start()
    times: dict[str, list[float]] = {"plain": [], "rectangle": [], "click": []}
    quality: dict[str, list[float]] = {"drawn": [], "snapped": [], "clicked": []}
    try:

        def ask(path: Path, regions: list[dict[str, Any]] | None) -> tuple[float, Any]:
            body: dict[str, Any] = {
                "tasks": [{"id": 1, "data": {"image": str(path)}}],
                "project": "1.1",
                "label_config": CONFIG,
                "params": {"context": None if regions is None else {"result": regions}},
            }
            began = time.perf_counter()
            answer = requests.post(f"{backend.url}/predict", json=body, timeout=60)
            answer.raise_for_status()
            return time.perf_counter() - began, answer.json()["results"][0]["result"]

        ask(scenes[0][0], None)  # load the model
        for path, sample in scenes:
            for box in sample.boxes:
                seconds, _ = ask(path, None)
                times["plain"].append(seconds)
                size = (WIDTH, HEIGHT)
                drawn = drawn_rectangle(box, size)
                seconds, found = ask(path, [drawn])
                times["rectangle"].append(seconds)
                quality["drawn"].append(region_iou(drawn, box, size))
                quality["snapped"].append(region_iou(found[0], box, size) if found else 0.0)
                seconds, found = ask(path, [drawn_click(box, size)])
                times["click"].append(seconds)
                quality["clicked"].append(region_iou(found[0], box, size) if found else 0.0)
    finally:
        backend.stop()
    p50 = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
    figures = {
        "objects": len(times["plain"]),
        "p50_ms": p50,
        "ratio_to_plain": {k: round(p50[k] / p50["plain"], 2) for k in ("rectangle", "click")},
        "mean_iou": {k: round(float(np.mean(v)), 3) for k, v in quality.items()},
        "answered_share": {
            k: round(float(np.mean([q > 0 for q in quality[k]])), 3) for k in ("snapped", "clicked")
        },
        "image_size": args.imgsz,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    if args.out is not None:
        command = ["python", "-m", "benchmarks.assist_latency", *(argv or sys.argv[1:])]
        args.out.write_text(json.dumps({"command": " ".join(command), **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
