"""Label-efficiency benchmark: does the active-learning queue save labels, and how many?

A simulated annotation loop that runs the product's own code on the realistic digits data
(`benchmarks.label_efficiency.digits_data`), whose ground truth stays hidden until "labeled":

0. every simulated project starts from a class-agnostic base model (`Simulation.train_base`:
   one class, "digit", trained on digit samples no other split uses), standing in for the
   pretrained weights a user brings as MODEL_PATH; the base and the full-data reference are
   recorded in the workdir and reused by later runs with the same inputs;
1. a small random seed set is revealed and trained on (`train_and_register`, exactly as a
   Label Studio project's training run: same recipe, validation carved from the labeled
   tasks, the promotion gate);
2. each cycle: the project's LIVE model (`Detector`) predicts the whole pool (class-score
   vectors and embeddings in one pass), a strategy (`get_strategy`) ranks the unlabeled
   images, the top `batch_size` are revealed, and the project retrains, warm-starting from
   its live model as the product does;
3. after every cycle the live model is scored on the fixed TEST split (`evaluate`).

Strategies: random (the control, same seeds), entropy, kcenter, hybrid (the product's
default) and dua, each a separate simulated project, all starting from the same seed-set
model of a seed; plus one model trained on the whole pool as the 100% reference.

`run_benchmark` drives it all: every cycle's test mAP@0.5 and mAP@0.5:0.95 (a `CycleRow`,
budgets in images and boxes) goes to `metrics.summarise` (AUBC, label efficiency, the saving
vs random, mean and spread over seeds) and `report.write_outputs` (JSON, a markdown table and
PNG plots); partial.json is rewritten as rows arrive. The command line lives in `cli`.

Run: `python -m benchmarks.label_efficiency --quick --out /tmp/le-quick`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from backend.config import Settings
from backend.labelstudio.images import LoadedImage
from backend.models.detector import Detector, ImageDetections, ModelSource
from backend.ranking.detection_cache import ImageRecord
from backend.ranking.queue import class_ap_vector, pool_box_scores
from backend.services import build_services
from backend.training.dataset import ExportStats, LabeledImage
from backend.training.trainer import TrainParams, evaluate, train_and_register
from benchmarks.label_efficiency.config import BenchConfig, CycleRow
from benchmarks.label_efficiency.digits_data import BASE_CLASS, DigitsDataset, generate, summary
from benchmarks.label_efficiency.metrics import summarise
from benchmarks.label_efficiency.report import write_outputs
from strategies import Pool, get_strategy

logger = logging.getLogger(__name__)

FULL_DATA_PROJECT = 1
BASE_PROJECT = 2


# ------------------------------------------------------------------------------ pool build
def build_pool(
    unlabeled: Sequence[ImageDetections],
    unlabeled_images: Sequence[LoadedImage],
    labeled: Sequence[ImageDetections],
    names: Sequence[str],
    meta: dict[str, Any],
) -> Pool:
    """A `strategies.Pool` from detector output, through the ranker's own pieces.

    The ranking job (`backend.ranking`) builds its pool inside its Label Studio job; the
    per-image steps it uses (`ImageRecord.from_detections`, `pool_box_scores`,
    `class_ap_vector`) are reused here so
    the benchmark scores images exactly as the product does. Every class is mapped (the
    simulated label config shows all ten digits).
    """
    mapped = np.ones(len(names), dtype=bool)
    box_scores = [
        pool_box_scores(ImageRecord.from_detections("", image, found, len(names)), mapped)
        for found, image in zip(unlabeled, unlabeled_images, strict=True)
    ]
    embeddings = np.stack([d.embedding for d in unlabeled]).astype(np.float32)
    labeled_embeddings = (
        np.stack([d.embedding for d in labeled]).astype(np.float32) if labeled else None
    )
    return Pool(
        box_scores=box_scores,
        embeddings=embeddings,
        labeled_embeddings=labeled_embeddings,
        class_ap=class_ap_vector(meta, names),
    )


# ------------------------------------------------------------------------------ simulation
class Simulation:
    """The annotation loop over one generated dataset, under one working folder."""

    def __init__(
        self,
        config: BenchConfig,
        settings: Settings,
        workdir: Path,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.progress = progress
        self.dataset: DigitsDataset = generate(workdir / "data", config.data)
        self.settings = replace(
            settings,
            model_dir=workdir / "models",
            image_root=self.dataset.root.resolve(),
            image_size=config.image_size,
            train_image_size=config.image_size,
            train_epochs=config.epochs,
            train_batch=config.train_batch,
            train_val_percent=config.val_percent,
            train_min_images=4,
            promote_tolerance=config.tolerance,
            training_enabled=False,
        )
        self.params = TrainParams.resolve(self.settings, {})
        services = build_services(replace(self.settings, label_studio_url=None))
        self.registry = services.registry
        self.loader = services.images
        self._run_id = 0
        self._test_cache: dict[tuple[int, str], dict[str, Any]] = {}
        references = workdir / "references.json"
        self._references: dict[str, Any] = (
            json.loads(references.read_text(encoding="utf-8")) if references.is_file() else {}
        )
        self.base: dict[str, Any] | None = None
        if config.data.n_base > 0:
            self.base = self.train_base()
            self.settings = replace(self.settings, model_path=Path(self.base["weights"]))
        self.classes = list(self.dataset.classes)
        self.pool: list[LabeledImage] = self.dataset.labeled("pool")
        self.pool_boxes = np.array([len(item.boxes) for item in self.pool], dtype=np.int64)
        self.images = [self.loader.load(item.image_ref) for item in self.pool]
        self.test_yaml = write_eval_split(
            self.dataset.labeled("test"), self.classes, workdir / "test-split"
        )

    # -- building blocks -------------------------------------------------------------
    def train_base(self) -> dict[str, Any]:
        """The stand-in for the pretrained weights a user brings (MODEL_PATH).

        A random-init YOLO learns nothing in a few epochs on a few dozen images, so, as a user
        would start from pretrained weights, every simulated project starts from a detector
        trained on the `base` split (digit samples no other split uses) with ONE class,
        "digit": it knows where handwriting is, not which digit it is. Same training path.
        """
        started = time.perf_counter()
        params = replace(self.params, epochs=self.config.base_epochs)
        key = {
            "data": asdict(self.config.data),
            "params": asdict(params),
            "start": [self.settings.model_yaml, str(self.settings.model_path or "")],
        }
        cached = self._cached_reference("base", key, BASE_PROJECT)
        if cached is not None:
            return cached
        details = self._train(
            BASE_PROJECT, self.dataset.labeled("base", class_agnostic=True), [BASE_CLASS], params
        )
        live = self.registry.live(BASE_PROJECT)
        if live is None:
            raise RuntimeError("the base model was not promoted")
        return self._store_reference(
            "base",
            key,
            {
                "images": len(self.dataset.splits["base"]),
                "classes": [BASE_CLASS],
                "epochs": params.epochs,
                "weights": str(live.weights),
                "val_map50": details["metrics"]["map50"],
                "duration_s": round(time.perf_counter() - started, 3),
            },
        )

    def _cached_reference(
        self, name: str, key: dict[str, Any], project_id: int
    ) -> dict[str, Any] | None:
        """A reference model (base, full data) from an earlier run in this workdir, if its
        inputs match; otherwise its project is wiped so training starts clean, not warm."""
        stored = self._references.get(name)
        live = self.registry.live(project_id)
        if (
            stored
            and stored["key"] == _canonical(key)
            and live
            and live.version == stored["result"].get("version", live.version)
        ):
            logger.info("reusing the %s model from %s", name, self.workdir)
            return dict(stored["result"])
        shutil.rmtree(self.settings.paths.project(project_id).root, ignore_errors=True)
        return None

    def _store_reference(
        self, name: str, key: dict[str, Any], result: dict[str, Any]
    ) -> dict[str, Any]:
        live = self.registry.live(FULL_DATA_PROJECT if name == "full" else BASE_PROJECT)
        result = {**result, "version": live.version if live else None}
        self._references[name] = {"key": _canonical(key), "result": result}
        (self.workdir / "references.json").write_text(
            json.dumps(self._references, indent=2), encoding="utf-8"
        )
        return result

    def train(
        self, project_id: int, labeled_idx: Sequence[int], params: TrainParams
    ) -> dict[str, Any]:
        """One product training run on the revealed pool images."""
        return self._train(project_id, [self.pool[i] for i in labeled_idx], self.classes, params)

    def _train(
        self,
        project_id: int,
        items: Sequence[LabeledImage],
        classes: list[str],
        params: TrainParams,
    ) -> dict[str, Any]:
        self._run_id += 1
        return train_and_register(
            self.settings,
            self.registry,
            self.loader,
            project_id,
            self._run_id,
            items,
            classes,
            ExportStats(),
            params,
        )

    def test_metrics(self, project_id: int) -> tuple[str, dict[str, Any]]:
        """The live model's TEST mAPs (cached per version: a rejected candidate changes nothing)."""
        live = self.registry.live(project_id)
        if live is None:
            raise RuntimeError(f"simulated project {project_id} has no live model")
        key = (project_id, live.version)
        if key not in self._test_cache:
            workdir = self.workdir / "eval" / f"p{project_id}-{live.version}"
            metrics = evaluate(
                self.settings, self.params, live.weights, self.test_yaml, self.classes, workdir
            )
            shutil.rmtree(workdir, ignore_errors=True)
            if metrics is None:
                raise RuntimeError("the live model does not predict the digit classes")
            self._test_cache[key] = metrics
        return live.version, self._test_cache[key]

    def select(
        self, project_id: int, strategy: str, labeled_idx: list[int], seed: int
    ) -> list[int]:
        """Predict the pool with the live model, rank the unlabeled part, return the batch."""
        live = self.registry.live(project_id)
        if live is None:
            raise RuntimeError(f"simulated project {project_id} has no live model")
        detector = Detector(
            ModelSource(
                version=f"p{project_id}-{live.version}", weights=live.weights, kind="registry"
            ),
            self.settings,
        )
        found = detector.predict([image.pixels for image in self.images])
        is_labeled = np.zeros(len(self.pool), dtype=bool)
        is_labeled[labeled_idx] = True
        unlabeled_idx = np.flatnonzero(~is_labeled)
        pool = build_pool(
            [found[i] for i in unlabeled_idx],
            [self.images[i] for i in unlabeled_idx],
            [found[i] for i in labeled_idx],
            detector.names,
            live.meta,
        )
        chosen = get_strategy(strategy, seed=seed).select(pool, self.config.batch_size)
        return [int(unlabeled_idx[i]) for i in chosen.batch]

    def row(
        self,
        seed: int,
        strategy: str,
        cycle: int,
        project_id: int,
        labeled_idx: Sequence[int],
        details: dict[str, Any] | None,
        durations: dict[str, float],
    ) -> CycleRow:
        started = time.perf_counter()
        version, metrics = self.test_metrics(project_id)
        durations["test_eval_s"] = round(time.perf_counter() - started, 3)
        return CycleRow(
            seed=seed,
            strategy=strategy,
            cycle=cycle,
            images=len(labeled_idx),
            fraction=len(labeled_idx) / len(self.pool),
            boxes=int(self.pool_boxes[list(labeled_idx)].sum()),
            map50=float(metrics["map50"]),
            map50_95=float(metrics["map50_95"]),
            version=version,
            promoted=bool(details is None or details["gate"]["passed"]),
            durations=durations,
        )

    # -- the benchmark ---------------------------------------------------------------
    def full_reference(self) -> dict[str, Any]:
        """The 100% model: the same training path on every pool label, trained longer."""
        started = time.perf_counter()
        params = replace(self.params, epochs=self.config.full_epochs)
        key = {
            "data": asdict(self.config.data),
            "params": asdict(params),
            "base": self.base,
            "start": [self.settings.model_yaml, str(self.settings.model_path or "")],
        }
        cached = self._cached_reference("full", key, FULL_DATA_PROJECT)
        if cached is not None:
            return cached
        details = self.train(FULL_DATA_PROJECT, range(len(self.pool)), params)
        version, metrics = self.test_metrics(FULL_DATA_PROJECT)
        return self._store_reference(
            "full",
            key,
            {
                "images": len(self.pool),
                "boxes": int(self.pool_boxes.sum()),
                "epochs": params.epochs,
                "version": version,
                "map50": float(metrics["map50"]),
                "map50_95": float(metrics["map50_95"]),
                "per_class_ap50": metrics["per_class_ap50"],
                "val_metrics": details["metrics"],
                "duration_s": round(time.perf_counter() - started, 3),
            },
        )

    def run_seed(self, seed: int, on_row: Callable[[CycleRow], None]) -> None:
        """Every arm for one seed: one shared seed-set model, then each strategy's cycles."""
        rng = np.random.default_rng([seed, 12345])
        seed_idx = sorted(
            int(i) for i in rng.choice(len(self.pool), self.config.seed_size, replace=False)
        )
        base = _project_id(seed, None, self.config.strategies)
        shutil.rmtree(self.settings.paths.project(base).root, ignore_errors=True)  # start cold
        started = time.perf_counter()
        details = self.train(base, seed_idx, self.params)
        seed_durations = {"train_s": round(time.perf_counter() - started, 3)}
        arms = tqdm(
            self.config.strategies,
            desc=f"seed {seed}",
            leave=False,
            disable=not self.progress,
            position=1,
        )
        for strategy in arms:
            arms.set_postfix_str(strategy)
            project = _project_id(seed, strategy, self.config.strategies)
            target = self.settings.paths.project(project).root
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.settings.paths.project(base).root, target)
            labeled = list(seed_idx)
            on_row(self.row(seed, strategy, 0, project, labeled, details, dict(seed_durations)))
            cycles = tqdm(
                range(1, self.config.cycles + 1),
                desc=strategy,
                leave=False,
                disable=not self.progress,
                position=2,
            )
            for cycle in cycles:
                t0 = time.perf_counter()
                batch = self.select(project, strategy, labeled, seed * 1000 + cycle)
                labeled = labeled + batch
                t1 = time.perf_counter()
                cycle_details = self.train(project, labeled, self.params)
                t2 = time.perf_counter()
                durations = {"select_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3)}
                on_row(self.row(seed, strategy, cycle, project, labeled, cycle_details, durations))


def _canonical(value: Any) -> str:
    """A stable text form of a JSON-able key (tuples and lists compare equal)."""
    return json.dumps(value, sort_keys=True, default=str)


def _project_id(seed: int, strategy: str | None, strategies: Sequence[str]) -> int:
    """Simulated project ids: 1 = full data, 2 = base model; per seed, the seed-set project
    (shared by every arm's first point) and one per arm."""
    offset = 0 if strategy is None else 1 + list(strategies).index(strategy)
    return 100 * (seed + 1) + offset


def write_eval_split(items: Sequence[LabeledImage], classes: Sequence[str], folder: Path) -> Path:
    """A data.yaml whose `val` split is exactly `items` (the fixed test set), for `evaluate`.

    `write_dataset` splits by task hash for the promotion gate; the test set must be whole.
    """
    shutil.rmtree(folder, ignore_errors=True)
    image_dir, label_dir = folder / "images" / "val", folder / "labels" / "val"
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
        f"path: {json.dumps(str(folder.resolve()))}\ntrain: images/val\nval: images/val\n"
        f"names:\n{names}",
        encoding="utf-8",
    )
    return data_yaml


# ---------------------------------------------------------------------------------- driver
def run_benchmark(
    config: BenchConfig,
    settings: Settings,
    out_dir: Path,
    workdir: Path | None = None,
    mode: str = "custom",
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the data, run the full-data reference and every arm, write the outputs.

    Partial results are written after every row, so a run cut short still leaves its curves.
    """
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="label-efficiency-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        sim = Simulation(config, settings, workdir, progress=progress)
        full = sim.full_reference()
        logger.info("full-data reference: mAP50 %.3f in %.0fs", full["map50"], full["duration_s"])
        rows: list[CycleRow] = []
        base = {
            "mode": mode,
            "config": asdict(config),
            "dataset": summary(sim.dataset),
            "full_data": full,
            "base_model": sim.base,
            "settings": {
                "model_yaml": sim.settings.model_yaml,
                "model_path": str(sim.settings.model_path or ""),
                "device": sim.settings.device,
            },
        }

        def on_row(row: CycleRow) -> None:
            rows.append(row)
            if len(rows) % len(config.strategies) == 0:
                _write_partial(base, rows, full, config, len(sim.pool), out_dir, started)

        for seed in tqdm(config.seeds, desc="seeds", disable=not progress, position=0):
            sim.run_seed(seed, on_row)
        result = {
            **base,
            **summarise(rows, full, config, len(sim.pool)),
            "rows": [asdict(r) for r in rows],
            "complete": True,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        write_outputs(result, out_dir)
        return result
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


def _write_partial(
    base: dict[str, Any],
    rows: list[CycleRow],
    full: dict[str, Any],
    config: BenchConfig,
    n_pool: int,
    out_dir: Path,
    started: float,
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = {
        **base,
        **summarise(rows, full, config, n_pool),
        "rows": [asdict(r) for r in rows],
        "complete": False,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / "partial.json").write_text(
        json.dumps(partial, indent=2, default=str) + "\n", encoding="utf-8"
    )
