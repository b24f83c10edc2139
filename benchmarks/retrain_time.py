"""Time from the last annotation to the promoted model, for 50, 100 and 200 annotated images.

For each size: a real Label Studio project of synthetic shape images, connected to a real
backend (gunicorn) with TRAIN_EVERY = size, so Label Studio's webhook for the last annotation
triggers the run. The clock starts when the last annotation is saved in Label Studio and stops
when the backend's /metrics shows the promoted version. Every run fine-tunes the same base
model (yolo11n trained briefly on other shape images, standing in for a pretrained model) with
TRAIN_EPOCHS from --epochs (default 10) and the other recipe settings at their defaults
(early stopping, TRAIN_TIME_LIMIT, TRAIN_BATCH 8, TRAIN_IMAGE_SIZE: the base's size).

    python -m benchmarks.retrain_time [--sizes 50 100 200] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import requests

from devkit.datagen import CLASSES, ls_regions, write_images
from devkit.demo import BackendServer
from devkit.demo_model import train_shapes_model
from devkit.local_label_studio import LocalLabelStudio, find_free_port

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--epochs", type=int, default=10, help="TRAIN_EPOCHS")
    parser.add_argument(
        "--imgsz", type=int, default=0, help="TRAIN_IMAGE_SIZE (0: the base model's size)"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per size")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="retrain-time-"))
    print("training the base model (64 other shape images, 30 epochs at 160 px) ...", flush=True)
    base = train_shapes_model(work / "base", work / "ultralytics", seed=1000)
    rows = []
    with LocalLabelStudio(work / "ls", work / "docs") as ls:
        client = ls.client()
        for size in args.sizes:
            files = write_images(work / "docs" / f"n{size}", size, seed=size)
            project = ls.create_project(f"retrain {size}", CONFIG)
            task_ids = ls.import_images(project, [p for p, _ in files])
            settings = {
                "MODEL_DIR": str(work / f"models-{size}"),
                "MODEL_PATH": str(base),
                "LABEL_STUDIO_URL": ls.url,
                "LABEL_STUDIO_API_KEY": ls.legacy_token,
                "LOCAL_FILES_DOCUMENT_ROOT": str(work / "docs"),
                "LOG_LEVEL": "WARNING",
                "TRAIN_EVERY": str(size),
                "TRAIN_QUIET_SECONDS": "86400",
                "TRAIN_POLL_SECONDS": "0.5",
                "TRAIN_EPOCHS": str(args.epochs),
                "TRAIN_IMAGE_SIZE": str(args.imgsz),
            }
            with BackendServer(find_free_port(), settings, work / f"backend-{size}") as backend:
                ls.connect_ml_backend(project, backend.url)
                for task_id, (_, sample) in zip(task_ids, files, strict=True):
                    client.annotations.create(id=task_id, result=ls_regions(sample))
                last_annotation = time.monotonic()
                info = _wait_promoted(backend.url, project, last_annotation + args.timeout)
                elapsed = time.monotonic() - last_annotation
            run = info["last_training"]
            rows.append((size, elapsed, run))
            print(
                f"{size:>4} images: {elapsed:6.1f} s to promoted {info['live_version']}, "
                f"val mAP50 {run['metrics']['map50']:.3f}",
                flush=True,
            )
    print(f"\ncores: {os.cpu_count()}  epochs: {args.epochs}  train imgsz: {args.imgsz}")
    print(f"{'images':>6}  {'last annotation -> promoted':>28}  {'val mAP50':>9}  {'mAP50-95':>8}")
    for size, elapsed, run in rows:
        metrics = run["metrics"]
        print(
            f"{size:>6}  {elapsed:>26.1f} s  {metrics['map50']:>9.3f}  {metrics['map50_95']:>8.3f}"
        )
    return 0


def _wait_promoted(url: str, project: int, deadline: float) -> dict:
    while time.monotonic() < deadline:
        info = requests.get(f"{url}/metrics", timeout=10).json()["projects"].get(str(project))
        last = (info or {}).get("last_training") or {}
        if last.get("state") == "promoted" and info["live_version"]:
            return info
        if last.get("state") in ("failed", "rejected", "skipped", "cancelled"):
            raise SystemExit(f"project {project}: training ended {last['state']}: {last}")
        time.sleep(0.5)
    raise SystemExit(f"project {project}: no promoted model before the timeout")


if __name__ == "__main__":
    raise SystemExit(main())
