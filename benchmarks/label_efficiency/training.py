"""How the simulated projects' models are trained and measured: the product recipe
(`train_and_register`, as a project's own run), the converged recipe (early stopping on a
fixed validation split, a diagnostic) and the fixed test split every model is scored on.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.models.offline import prepare_ultralytics, set_torch_threads
from backend.project_params import TrainParams
from backend.services import build_services
from backend.training.dataset import ExportStats, LabeledImage
from backend.training.trainer import RECIPE, evaluate, train_and_register
from benchmarks.label_efficiency.config import BenchConfig


def write_split_yaml(
    folder: Path,
    classes: Sequence[str],
    val: Sequence[LabeledImage],
    train: Sequence[LabeledImage] | None = None,
) -> Path:
    """A data.yaml over exactly these images (symlinked), for `evaluate` (val only: the fixed
    test split) or the converged recipe (train + the fixed validation split)."""
    shutil.rmtree(folder, ignore_errors=True)
    for split, items in (("val", val), ("train", train or val)):
        image_dir, label_dir = folder / "images" / split, folder / "labels" / split
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for item in items:
            source = Path(item.image_ref)
            (image_dir / source.name).symlink_to(source.resolve())
            lines = "".join(box.line() + "\n" for box in item.boxes)
            (label_dir / f"{source.stem}.txt").write_text(lines, encoding="utf-8")
    names = "".join(f"  {i}: {json.dumps(name)}\n" for i, name in enumerate(classes))
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(
        f"path: {json.dumps(str(folder.resolve()))}\ntrain: images/train\nval: images/val\n"
        f"names:\n{names}",
        encoding="utf-8",
    )
    return data_yaml


@dataclass
class Trainer:
    """Both recipes and the test yardstick for one folder of simulated projects."""

    settings: Settings
    config: BenchConfig
    run_id: int = 0

    def __post_init__(self) -> None:
        services = build_services(replace(self.settings, label_studio_url=None))
        self.registry = services.registry
        self.loader = services.images
        self.params = TrainParams.resolve(self.settings, self.config.extra_params)
        set_torch_threads(self.settings.torch_threads)

    def product(
        self,
        project_id: int,
        items: Sequence[LabeledImage],
        classes: list[str],
        params: TrainParams | None = None,
        unlabeled: Sequence[str] = (),
    ) -> dict[str, Any]:
        """One product training run (`train_and_register`) of `project_id` on `items` (with
        the run's own recipe unless `params` says otherwise; `unlabeled`: the references of
        the project's other pictures, which a first model's backbone pretrains on)."""
        self.run_id += 1
        params = params or self.params
        return train_and_register(
            self.settings,
            self.registry,
            self.loader,
            project_id,
            self.run_id,
            items,
            classes,
            ExportStats(),
            params,
            unlabeled,
        )

    def converged(
        self,
        start: Path,
        items: Sequence[LabeledImage],
        val: Sequence[LabeledImage],
        classes: Sequence[str],
        folder: Path,
    ) -> Path:
        """The product's hyper-parameters from `start`, up to `converged_max_epochs` epochs,
        stopped once the fixed validation split's fitness has not improved for
        `converged_patience` epochs; the best epoch's weights."""
        prepare_ultralytics(self.settings.paths.ultralytics)
        from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

        data_yaml = write_split_yaml(folder / "data", classes, val, items)
        YOLO(str(start), task="detect").train(
            data=str(data_yaml),
            epochs=self.config.converged_max_epochs,
            patience=self.config.converged_patience,
            imgsz=self.config.image_size,
            batch=self.config.train_batch,
            device=self.settings.device,
            val=True,
            **RECIPE,
            project=str(folder),
            name="train",
            exist_ok=True,
        )
        weights = folder / "train" / "weights" / "best.pt"
        if not weights.is_file():
            raise RuntimeError(f"converged training left no weights at {weights}")
        return weights

    def test(
        self, weights: Path, test_yaml: Path, classes: list[str], work: Path
    ) -> dict[str, Any]:
        """mAP@0.5 and mAP@0.5:0.95 of `weights` on the fixed test split."""
        metrics = evaluate(self.settings, self.params, weights, test_yaml, classes, work)
        shutil.rmtree(work, ignore_errors=True)
        if metrics is None:
            raise RuntimeError(f"{weights} does not predict the classes {classes}")
        return metrics
