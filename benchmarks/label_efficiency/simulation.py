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
model of a seed; plus one model trained on the whole pool as the 100% reference. Reported:
mAP@0.5 and mAP@0.5:0.95 per cycle, budgets in images and boxes, AUBC, label efficiency (the
smallest labeled fraction reaching 90% / 95% of the full-data mAP@0.5), the saving vs random,
mean and spread over seeds; written as JSON, a markdown table and PNG plots.

Run: `python -m benchmarks.label_efficiency --quick --out /tmp/le-quick`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader, LoadedImage
from backend.models.detector import Detector, ImageDetections, ModelSource
from backend.models.registry import ModelRegistry
from backend.ranking.job import ImageRecord, class_ap_vector, pool_box_scores
from backend.training.dataset import ExportStats, LabeledImage
from backend.training.trainer import TrainParams, evaluate, train_and_register
from benchmarks.label_efficiency.digits_data import (
    BASE_CLASS,
    DigitsConfig,
    DigitsDataset,
    generate,
    summary,
)
from strategies import Pool, available_strategies, get_strategy

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("random", "entropy", "kcenter", "hybrid", "dua")
CONTROL = "random"
DEFAULT_STRATEGY = "hybrid"
TARGETS: tuple[float, ...] = (0.90, 0.95)
FULL_DATA_PROJECT = 1
BASE_PROJECT = 2

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BenchConfig:
    """One benchmark: the data, the loop's sizes and the training recipe shared by all arms."""

    data: DigitsConfig
    strategies: tuple[str, ...] = STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_size: int = 36  # images revealed at random before the first cycle
    batch_size: int = 36  # images revealed per cycle
    cycles: int = 4
    epochs: int = 10  # per training run (TRAIN_EPOCHS, the product default), every arm and cycle
    full_epochs: int = 30  # the full-data reference's run
    base_epochs: int = 20  # the class-agnostic base model's run (when data.n_base > 0)
    image_size: int = 160  # training, validation and inference size
    train_batch: int = 8  # TRAIN_BATCH, the product default
    val_percent: int = 20
    tolerance: float = 0.0  # PROMOTE_TOLERANCE of the simulated projects

    def __post_init__(self) -> None:
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise ValueError("strategies must be a non-empty list without repeats")
        if CONTROL not in self.strategies:
            raise ValueError(f"the control arm {CONTROL!r} must be among the strategies")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError("seeds must be distinct integers >= 0")
        if self.seed_size < 4 or self.batch_size < 1 or self.cycles < 1:
            raise ValueError("need seed_size >= 4, batch_size >= 1 and cycles >= 1")
        if self.seed_size + self.cycles * self.batch_size > self.data.n_pool:
            raise ValueError("seed_size + cycles * batch_size exceeds the pool")
        if min(self.epochs, self.full_epochs, self.base_epochs) < 1 or self.image_size < 32:
            raise ValueError("epochs must be >= 1 and image_size >= 32")

    @classmethod
    def quick(cls) -> BenchConfig:
        """Smoke-sized: one seed, tiny pool, two cycles (minutes on 2 CPU cores)."""
        return cls(
            data=DigitsConfig(
                n_pool=120,
                n_val=0,
                n_test=60,
                n_base=40,
                image_size=128,
                min_digit=14,
                max_digit=40,
            ),
            seeds=(0,),
            seed_size=16,
            batch_size=16,
            cycles=2,
            epochs=3,
            full_epochs=6,
            base_epochs=3,
            image_size=128,
        )

    @classmethod
    def full(cls) -> BenchConfig:
        """Sized from measured cycle times to finish in about 90 minutes on 2 CPU cores."""
        return cls(data=DigitsConfig())


@dataclass
class CycleRow:
    """One point of one arm's learning curve."""

    seed: int
    strategy: str
    cycle: int
    images: int
    fraction: float  # images / pool size
    boxes: int
    map50: float
    map50_95: float
    version: str
    promoted: bool
    durations: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------ metric functions
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
    """Labels saved vs the random control at the same target: 1 - b_AL / b_random.

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


# ------------------------------------------------------------------------------ pool build
def build_pool(
    unlabeled: Sequence[ImageDetections],
    unlabeled_images: Sequence[LoadedImage],
    labeled: Sequence[ImageDetections],
    names: Sequence[str],
    meta: dict[str, Any],
) -> Pool:
    """A `strategies.Pool` from detector output, through the ranker's own pieces.

    `backend.ranking.job` builds its pool inside its Label Studio job; the per-image steps it uses
    (`ImageRecord.from_detections`, `pool_box_scores`, `class_ap_vector`) are reused here so
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
        self.registry = ModelRegistry(self.settings.model_dir)
        self.loader = ImageLoader(self.settings, LabelStudioClient(None, None))
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
        shutil.rmtree(self.registry.project_dir(project_id), ignore_errors=True)
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
        from tqdm.auto import tqdm  # noqa: PLC0415

        rng = np.random.default_rng([seed, 12345])
        seed_idx = sorted(
            int(i) for i in rng.choice(len(self.pool), self.config.seed_size, replace=False)
        )
        base = _project_id(seed, None, self.config.strategies)
        shutil.rmtree(self.registry.project_dir(base), ignore_errors=True)  # start cold
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
            target = self.registry.project_dir(project)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.registry.project_dir(base), target)
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


# ------------------------------------------------------------------------------ summaries
def summarise(
    rows: Sequence[CycleRow], full: dict[str, Any], config: BenchConfig, n_pool: int
) -> dict[str, Any]:
    """Curves (mean and spread per cycle), per-arm AUBC / label efficiency / saving, target."""
    by_arm: dict[tuple[str, int], list[CycleRow]] = {}
    for row in rows:
        by_arm.setdefault((row.strategy, row.seed), []).append(row)
    for arm_rows in by_arm.values():
        arm_rows.sort(key=lambda r: r.cycle)
    seeds = sorted({row.seed for row in rows})
    full_map = float(full["map50"])
    # AUBC in boxes over the range every arm of a seed covers, so arms stay comparable.
    box_range = {
        seed: (
            max(by_arm[(s, seed)][0].boxes for s in config.strategies if (s, seed) in by_arm),
            min(by_arm[(s, seed)][-1].boxes for s in config.strategies if (s, seed) in by_arm),
        )
        for seed in seeds
    }
    curves: list[dict[str, Any]] = []
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for strategy in config.strategies:
        arms = [by_arm[(strategy, seed)] for seed in seeds if (strategy, seed) in by_arm]
        if not arms:
            continue
        for cycle in range(min(len(a) for a in arms)):
            points = [a[cycle] for a in arms]
            curves.append(
                {
                    "strategy": strategy,
                    "cycle": cycle,
                    "images": points[0].images,
                    "fraction": points[0].fraction,
                    "boxes": _mean_std([float(p.boxes) for p in points]),
                    "map50": _mean_std([p.map50 for p in points]),
                    "map50_95": _mean_std([p.map50_95 for p in points]),
                }
            )
        per_seed[strategy] = {}
        for seed in seeds:
            arm = by_arm.get((strategy, seed))
            if not arm:
                continue
            fractions = [r.fraction for r in arm]
            maps = [r.map50 for r in arm]
            lo, hi = box_range[seed]
            entry: dict[str, Any] = {
                "aubc_images": aubc(fractions, maps),
                "aubc_images_map50_95": aubc(fractions, [r.map50_95 for r in arm]),
                "aubc_boxes": (
                    aubc([r.boxes for r in arm], maps, lo, hi)
                    if hi > lo and _increasing([r.boxes for r in arm])
                    else None
                ),
            }
            for target in TARGETS:
                reached = _le(fractions, maps, target * full_map)
                entry[f"le{round(target * 100)}"] = reached
                entry[f"le{round(target * 100)}_boxes"] = _boxes_at(arm, reached)
            per_seed[strategy][seed] = entry
    summary_rows: dict[str, dict[str, Any]] = {}
    for strategy, entries in per_seed.items():
        mean_curve = [c for c in curves if c["strategy"] == strategy]
        mean_fracs = [c["fraction"] for c in mean_curve]
        mean_maps = [c["map50"]["mean"] for c in mean_curve]
        result: dict[str, Any] = {
            "aubc_images": _mean_std([e["aubc_images"] for e in entries.values()]),
            "aubc_images_map50_95": _mean_std(
                [e["aubc_images_map50_95"] for e in entries.values()]
            ),
            "aubc_boxes": _mean_std([e["aubc_boxes"] for e in entries.values()]),
            "per_seed": {str(k): v for k, v in entries.items()},
        }
        for target in TARGETS:
            key = f"le{round(target * 100)}"
            random_entries = per_seed.get(CONTROL, {})
            result[key] = _mean_std([e[key] for e in entries.values()])
            result[f"{key}_mean_curve"] = _le(mean_fracs, mean_maps, target * full_map)
            result[f"{key}_boxes"] = _mean_std([e[f"{key}_boxes"] for e in entries.values()])
            result[f"saving{round(target * 100)}"] = _mean_std(
                [
                    saving_vs_random(e[key], random_entries.get(seed, {}).get(key))
                    for seed, e in entries.items()
                ]
            )
            random_curve = [c for c in curves if c["strategy"] == CONTROL]
            result[f"saving{round(target * 100)}_mean_curve"] = saving_vs_random(
                result[f"{key}_mean_curve"],
                _le(
                    [c["fraction"] for c in random_curve],
                    [c["map50"]["mean"] for c in random_curve],
                    target * full_map,
                ),
            )
        result["final_map50_vs_full"] = mean_maps[-1] / full_map if full_map > 0 else None
        # Where no arm reaches the full-data targets, the usual fallback: the images an arm
        # needs to match the mAP@0.5 that random ends with (seed-mean curves).
        random_curve = [c for c in curves if c["strategy"] == CONTROL]
        result["saving_at_random_final"] = None
        if random_curve and random_curve[-1]["map50"]["mean"] > 0:
            level = random_curve[-1]["map50"]["mean"]
            result["saving_at_random_final"] = saving_vs_random(
                label_efficiency(mean_fracs, mean_maps, level),
                label_efficiency(
                    [c["fraction"] for c in random_curve],
                    [c["map50"]["mean"] for c in random_curve],
                    level,
                ),
            )
        arm_rows = [r for r in rows if r.strategy == strategy and r.cycle > 0]
        result["gate_rejections"] = sum(not r.promoted for r in arm_rows)
        result["trainings"] = len(arm_rows)
        compared = [seed for seed in entries if seed in per_seed.get(CONTROL, {})]
        result["aubc_wins_vs_random"] = sum(
            entries[seed]["aubc_images"] > per_seed[CONTROL][seed]["aubc_images"]
            for seed in compared
        )
        result["aubc_seeds_compared"] = len(compared)
        summary_rows[strategy] = result
    default = summary_rows.get(DEFAULT_STRATEGY)
    target_check = None
    if default is not None and DEFAULT_STRATEGY != CONTROL:
        saving = default["saving90_mean_curve"]
        wins = default["aubc_wins_vs_random"]
        target_check = {
            "strategy": DEFAULT_STRATEGY,
            "saving90_mean_curve": saving,
            "saving90_required": 0.30,
            "aubc_wins_vs_random": wins,
            "seeds": default["aubc_seeds_compared"],
            "passed": bool(
                saving is not None
                and saving >= 0.30
                and wins == default["aubc_seeds_compared"] == len(config.seeds)
            ),
        }
    return {"curves": curves, "summary": summary_rows, "target": target_check}


def _le(fractions: Sequence[float], maps: Sequence[float], target: float) -> float | None:
    """Label efficiency, undefined (None) when the reference itself learned nothing."""
    return label_efficiency(fractions, maps, target) if target > 0 else None


def _increasing(values: Sequence[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def _boxes_at(arm: Sequence[CycleRow], fraction: float | None) -> float | None:
    """Boxes labeled when the arm reached `fraction` of the pool (linear between cycles)."""
    if fraction is None:
        return None
    return float(np.interp(fraction, [r.fraction for r in arm], [r.boxes for r in arm]))


# ------------------------------------------------------------------------------- outputs
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
    from tqdm.auto import tqdm  # noqa: PLC0415

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


# ------------------------------------------------------------------------------------- CLI
def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smoke-sized run: one seed, tiny pool (a few minutes)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/label-efficiency"),
        help="folder for results.json, results.md and the plots",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep data, models and runs here (default: a temporary folder)"
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    parser.add_argument("--strategies", help=f"comma-separated (default {','.join(STRATEGIES)})")
    parser.add_argument("--pool", type=int, help="pool images")
    parser.add_argument("--test", type=int, help="test images")
    parser.add_argument("--seed-size", type=int, help="images in the random seed set")
    parser.add_argument("--batch", type=int, help="images revealed per cycle")
    parser.add_argument("--cycles", type=int, help="cycles after the seed set")
    parser.add_argument("--epochs", type=int, help="epochs per training run")
    parser.add_argument("--full-epochs", type=int, help="epochs of the full-data reference")
    parser.add_argument("--image-size", type=int, help="image and training size in pixels")
    parser.add_argument("--data-seed", type=int, help="seed of the generated dataset")
    parser.add_argument(
        "--tolerance", type=float, help="PROMOTE_TOLERANCE of the simulated projects (1 = no gate)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--summarise",
        type=Path,
        metavar="JSON",
        help="only rebuild the table and plots from a results.json or partial.json (no training)",
    )


def config_from_args(args: argparse.Namespace) -> tuple[BenchConfig, str]:
    """The preset (--quick or full) with any explicit option applied; ValueError if invalid."""
    mode = "quick" if args.quick else "full"
    config = BenchConfig.quick() if args.quick else BenchConfig.full()
    data = config.data
    if args.pool is not None:
        data = replace(data, n_pool=args.pool)
    if args.test is not None:
        data = replace(data, n_test=args.test)
    if args.data_seed is not None:
        data = replace(data, seed=args.data_seed)
    if args.image_size is not None:
        data = replace(
            data, image_size=args.image_size, max_digit=min(data.max_digit, args.image_size // 3)
        )
    changes: dict[str, Any] = {"data": data}
    for attr, value in (
        ("seed_size", args.seed_size),
        ("batch_size", args.batch),
        ("cycles", args.cycles),
        ("epochs", args.epochs),
        ("full_epochs", args.full_epochs),
        ("image_size", args.image_size),
        ("tolerance", args.tolerance),
    ):
        if value is not None:
            changes[attr] = value
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.strategies:
        changes["strategies"] = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    for name in changes.get("strategies", ()):
        get_strategy(name)  # ValueError listing the valid names
    overridden = set(changes) - {"data"} or data != config.data
    return replace(config, **changes), (f"{mode} (custom)" if overridden else mode)


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


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    if args.summarise is not None:
        result = resummarise(args.summarise, args.out)
        print(markdown_report(result))
        return 0
    config, mode = config_from_args(args)
    result = run_benchmark(
        config,
        settings,
        args.out,
        workdir=args.workdir,
        mode=mode,
        progress=not args.no_progress,
    )
    print(markdown_report(result))
    print(f"wrote {args.out}/results.json, results.md and plots in {result['wall_s']:.0f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.label_efficiency [--quick] ...`"""
    from backend.logs import configure_logging  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.label_efficiency", description=__doc__.split("\n")[0]
    )
    _add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(args.log_level.upper())
    return _handler(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
