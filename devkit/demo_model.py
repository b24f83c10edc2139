"""A small YOLO trained on the synthetic shapes: for the tests, the demo and the benchmarks.

Real ultralytics training, from a yaml (nothing downloaded), sized to finish in about a minute
on 2 CPU cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from backend.models.offline import prepare_ultralytics, set_torch_threads
from devkit.datagen import write_yolo_dataset

# A recipe that learns the synthetic shapes quickly on a CPU: small images, no mosaic,
# AdamW at a fixed rate, no per-epoch validation.
TINY_RECIPE: dict[str, object] = {
    "epochs": 30,
    "imgsz": 160,
    "batch": 8,
    "workers": 0,
    "device": "cpu",
    "plots": False,
    "amp": False,
    "verbose": False,
    "seed": 0,
    "deterministic": True,
    "mosaic": 0.0,
    "warmup_epochs": 1,
    "optimizer": "AdamW",
    "lr0": 0.002,
    "val": False,
}


def train_shapes_model(
    workdir: Path, config_dir: Path, n_train: int = 64, seed: int = 0, **overrides: object
) -> Path:
    """Train yolo11n on `n_train` synthetic images; returns `<workdir>/shapes.pt`."""
    prepare_ultralytics(config_dir)
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

    set_torch_threads()
    data = write_yolo_dataset(workdir / "data", n_train=n_train, n_val=16, seed=seed)
    model = YOLO("yolo11n.yaml")
    model.train(
        data=str(data),
        project=str(workdir / "runs"),
        name="shapes",
        exist_ok=True,
        **{**TINY_RECIPE, **overrides},
    )
    target = workdir / "shapes.pt"
    shutil.copyfile(workdir / "runs" / "shapes" / "weights" / "last.pt", target)
    return target
