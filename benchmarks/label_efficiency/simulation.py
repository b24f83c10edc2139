"""The simulated annotation loop: every arm of one scenario and seed, on the product's code.

A scenario is a generated pool whose ground truth stays hidden until "labeled"
(`digits_data`). Every simulated project starts from one class-agnostic base model (one class,
"digit", trained on scenes no pool uses): the stand-in for the pretrained weights a user
brings as MODEL_PATH. Per seed:

1. a seed set is revealed (at random; for the `coldstart` arm, the product's TypiClust picks
   on the embeddings of the encoder trained on the pool, `coldstart`); the annotator sees the
   base model's boxes (MODEL_PATH is what a new project pre-annotates with) and the project
   trains on it;
2. each cycle, the project's live model (`Detector`) predicts the whole pool, a strategy
   (`get_strategy`) ranks the unlabeled images through the ranker's own scoring
   (`ImageRecord`, `pool_box_scores`, `class_ap_vector`), the next batch is revealed, priced
   as the annotator's edits of the live model's boxes above MODEL_SCORE_THRESHOLD
   (`analytics.matching`), and the project retrains;
3. after every cycle the live model is scored on the scenario's fixed test split.

Recipes: `product` is the product's own run (`train_and_register`: warm start from the live
model, the validation share, the promotion gate, TRAIN_EPOCHS); `converged` trains from the
base model each cycle until the mAP on a fixed validation split stops improving (early
stopping), to tell a training-limited regime from a selection-limited one.

Arms `manual` (nothing shown, every box drawn) and `static` (the base model's boxes, never
retrained: what a backend that cannot train offers) label the images `random` labels, in the
same order, so their models are random's; they differ in the seconds the labels cost.
Once the last cycle is done, the rest of the pool is priced with the final live model's boxes
(`seconds_full_pool`; the project would keep improving, so this is an upper bound).

Every unit also records its cold start: the encoder's near-duplicate groups against the
pool's known ones (`known_duplicates`), and what each first batch covers (random, the
encoder's picks, TypiClust on the base model's neck embeddings); when the `coldstart` arm
runs, the neck's picks are trained on too, for their test mAP.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.analytics.cost import ActionSeconds
from backend.analytics.matching import Edit, LabeledBox, edit_counts, match_boxes
from backend.audit import split_key
from backend.config import Settings
from backend.labelstudio.images import LoadedImage
from backend.models.detector import Detector, ImageDetections, ModelSource
from backend.models.registry import ModelVersion
from backend.project_params import TrainParams
from backend.ranking.detect import flip_disagreements
from backend.ranking.detection_cache import ImageRecord
from backend.ranking.queue import class_ap_vector, pool_box_scores, predicted_seconds
from backend.ranking.queue_config import ENCODER_EMBEDDING, QueueConfig, queue_config
from backend.training.calibration import shown_boxes
from backend.training.dataset import LabeledImage
from benchmarks.label_efficiency.coldstart import encode_pool, typiclust_batch
from benchmarks.label_efficiency.config import (
    CONVERGED,
    ENCODER,
    MANUAL,
    NECK,
    PRODUCT,
    RANDOM,
    SEED_SETS,
    STATIC,
    BenchConfig,
    CycleRow,
    ProductArm,
    scenario_data,
    strategy_arm,
)
from benchmarks.label_efficiency.digits_data import DigitsDataset, generate, known_duplicates
from benchmarks.label_efficiency.metrics import batch_coverage
from benchmarks.label_efficiency.training import Trainer, write_split_yaml
from strategies import Pool, get_strategy

logger = logging.getLogger(__name__)

# per unit: the seed-set models the arms of a seed start from, by how the set was picked
SEED_SET_PROJECTS = {RANDOM: 10, ENCODER: 9, NECK: 8}
ARM_PROJECT = 11  # and up, one per arm
REFERENCE_PROJECT = 1


def build_pool(
    unlabeled: Sequence[ImageDetections],
    unlabeled_images: Sequence[LoadedImage],
    task_ids: Sequence[int],
    labeled: Sequence[ImageDetections],
    names: Sequence[str],
    meta: dict[str, Any],
    threshold: float,
    flip: Sequence[float] | None = None,
) -> Pool:
    """A `strategies.Pool` from detector output through the ranker's own per-image steps,
    so the benchmark scores images exactly as the product does (every class mapped);
    `flip`: the unlabeled images' flip disagreements, when the arm blends them in."""
    mapped = np.ones(len(names), dtype=bool)
    records = [
        ImageRecord.from_detections("", image, found, len(names))
        for found, image in zip(unlabeled, unlabeled_images, strict=True)
    ]
    return Pool(
        box_scores=[pool_box_scores(record, mapped) for record in records],
        embeddings=np.stack([d.embedding for d in unlabeled]).astype(np.float32),
        labeled_embeddings=(
            np.stack([d.embedding for d in labeled]).astype(np.float32) if labeled else None
        ),
        class_ap=class_ap_vector(meta, names),
        split_keys=np.array([split_key(task_id) for task_id in task_ids]),
        seconds=predicted_seconds(records, threshold, ActionSeconds()),
        flip_disagreement=None if flip is None else np.asarray(flip, dtype=np.float64),
    )


@dataclass
class Scenario:
    """One generated pool with its hidden ground truth and its fixed splits."""

    name: str
    dataset: DigitsDataset
    pool: list[LabeledImage]
    images: list[LoadedImage]
    truth: list[list[LabeledBox]]  # per pool image, in pixels
    test_yaml: Path

    @classmethod
    def load(
        cls, name: str, config: BenchConfig, workdir: Path, own: Path, trainer: Trainer
    ) -> Scenario:
        """The scenario's data under `workdir`, its test split written under `own` (a folder
        no other process uses: evaluation caches labels next to the split)."""
        dataset = generate(
            workdir / "data" / name, scenario_data(name, config.n_pool, config.n_test)
        )
        classes = list(dataset.classes)
        pool = dataset.labeled("pool")
        return cls(
            name=name,
            dataset=dataset,
            pool=pool,
            images=[trainer.loader.load(item.image_ref) for item in pool],
            truth=[
                [LabeledBox(b.x1, b.y1, b.x2, b.y2, b.label) for b in sample.boxes]
                for sample in dataset.splits["pool"]
            ],
            test_yaml=write_split_yaml(own / "test-split", classes, dataset.labeled("test")),
        )

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    def boxes(self, labeled: Sequence[int]) -> int:
        return sum(len(self.truth[i]) for i in labeled)


# ------------------------------------------------------------------------------ the annotator
@dataclass(frozen=True)
class Prediction:
    """A model's detections on every pool image, and the confidence from which the product
    shows them (`ModelSource.shown_from`: the version's calibrated threshold, else
    MODEL_SCORE_THRESHOLD)."""

    names: list[str]
    found: list[ImageDetections]
    threshold: float
    flip: list[float] | None = None  # per pool image, when the arm's queue uses it


class Annotator:
    """Labels images with the hidden ground truth and tallies the edits that took."""

    def __init__(self, truth: Sequence[Sequence[LabeledBox]]) -> None:
        self.truth = truth  # per pool image

    def edits(self, indices: Sequence[int], shown: Prediction | None = None) -> Counter[str]:
        """Edits to label `indices`: from what `shown` shows, or all drawn."""
        total: Counter[str] = Counter({e.value: 0 for e in Edit})
        for i in indices:
            boxes = (
                [] if shown is None else shown_boxes(shown.found[i], shown.names, shown.threshold)
            )
            counts = edit_counts(match_boxes(boxes, self.truth[i]))
            total.update({edit.value: n for edit, n in counts.items()})
        return total


# ------------------------------------------------------------------------------ one seed
@dataclass
class SeedResult:
    rows: list[CycleRow]
    full_pool: dict[str, dict[str, dict[str, int]]]  # recipe -> arm -> edits, whole pool
    coldstart: dict[str, Any]  # near_duplicates, encoder, first_batch (by seed set)


@dataclass(frozen=True)
class SeedSet:
    """A first batch, labeled and trained on: where every arm that starts from it starts."""

    project: int
    labeled: list[int]
    edits: Counter[str]
    metrics: dict[str, Any]  # the seed-set model's test mAPs
    train_s: float


class SeedRun:
    """Every arm and recipe of one scenario for one seed, in its own model folder."""

    def __init__(
        self,
        config: BenchConfig,
        settings: Settings,
        workdir: Path,
        scenario: str,
        seed: int,
        base_weights: Path,
    ) -> None:
        self.config = config
        self.seed = seed
        self.base_weights = base_weights
        self.root = workdir / "units" / f"{scenario}-seed{seed}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.trainer = Trainer(
            replace(settings, model_dir=self.root / "models", model_path=base_weights), config
        )
        self.scenario = Scenario.load(scenario, config, workdir, self.root, self.trainer)
        self.annotator = Annotator(self.scenario.truth)
        self.rows: list[CycleRow] = []
        # the pool's embeddings by the encoder trained on it (`first_batches`), for the arms
        # whose diversity uses them (al_embedding=encoder)
        self.encoder_embeddings: np.ndarray | None = None
        self.full_pool: dict[str, dict[str, dict[str, int]]] = {PRODUCT: {}, CONVERGED: {}}

    def run(self) -> SeedResult:
        sc = self.scenario
        base = self.predict(self.base_weights, "base")
        picks, coldstart = self.first_batches(base)
        seed_sets = {
            kind: self.seed_set(kind, picks[kind], base) for kind in self.trained_seed_sets()
        }
        for kind, covered in coldstart["first_batch"].items():
            covered["map50"] = seed_sets[kind].metrics["map50"] if kind in seed_sets else None
        random_labeled: list[list[int]] = []
        for arm in self.config.product_arms:
            labeled_by_cycle = self.product_arm(arm, seed_sets[arm.seed_set])
            if arm.name == RANDOM:
                random_labeled = labeled_by_cycle
        random_rows = [r for r in self.rows if r.arm == RANDOM and r.recipe == PRODUCT]
        everything = range(len(sc.pool))
        for arm, shown in ((MANUAL, None), (STATIC, base)):
            for row in random_rows:
                labeled = random_labeled[row.cycle]
                self.rows.append(
                    replace(
                        row,
                        arm=arm,
                        edits=dict(self.annotator.edits(labeled, shown)),
                        durations={},
                    )
                )
            self.full_pool[PRODUCT][arm] = dict(self.annotator.edits(everything, shown))
        if self.seed in self.config.seeds[: self.config.converged_seeds]:
            for arm in map(strategy_arm, self.config.converged_strategies):
                self.converged_arm(arm, seed_sets[arm.seed_set])
        return SeedResult(self.rows, self.full_pool, coldstart)

    # -- the pieces ------------------------------------------------------------------
    def first_batches(self, base: Prediction) -> tuple[dict[str, list[int]], dict[str, Any]]:
        """The first batch by each way of picking it (SEED_SETS), and the unit's cold-start
        record: the encoder's near-duplicate groups against the pool's known ones, its cost,
        and what each first batch covers."""
        sc = self.scenario
        size = self.config.budgets[0]
        rng = np.random.default_rng([self.seed, 12345])
        encoding = encode_pool(
            sc.images, self.root / "encoder", self.config.encoder_seconds, self.seed
        )
        self.encoder_embeddings = encoding.embeddings
        neck = np.stack([found.embedding for found in base.found]).astype(np.float32)
        picks = {
            RANDOM: sorted(int(i) for i in rng.choice(len(sc.pool), size, replace=False)),
            ENCODER: typiclust_batch(encoding.embeddings, len(sc.classes), size, self.seed),
            NECK: typiclust_batch(neck, len(sc.classes), size, self.seed),
        }
        truth = known_duplicates(sc.dataset.splits["pool"])
        labels = [[box.label for box in boxes] for boxes in sc.truth]
        covered = {kind: batch_coverage(batch, labels, truth) for kind, batch in picks.items()}
        return picks, {**encoding.record(truth), "first_batch": covered}

    def trained_seed_sets(self) -> list[str]:
        """The seed sets to train on: those the arms start from, and the neck's picks with
        the encoder's (so their first models compare)."""
        used = {arm.seed_set for arm in self.config.product_arms}
        if ENCODER in used:
            used.add(NECK)
        return [kind for kind in SEED_SETS if kind in used]

    def seed_set(self, kind: str, labeled: list[int], base: Prediction) -> SeedSet:
        """`labeled` revealed (the base model's boxes shown) and its seed-set project trained."""
        project = SEED_SET_PROJECTS[kind]
        started = time.perf_counter()
        self.trainer.product(
            project, [self.scenario.pool[i] for i in labeled], self.scenario.classes
        )
        train_s = round(time.perf_counter() - started, 3)
        model = self.trainer.registry.live(project)
        assert model is not None  # a first run has no live model to lose against
        return SeedSet(
            project, labeled, self.annotator.edits(labeled, base), self.test(model.weights), train_s
        )

    def predict(
        self,
        weights: Path,
        version: str,
        display_threshold: float | None = None,
        flip: bool = False,
    ) -> Prediction:
        """The model's detections on every pool image, and what the product shows of them;
        with `flip`, each image's flip disagreement too (the ranker's `flip_disagreements`)."""
        source = ModelSource(
            version=version,
            weights=weights,
            kind="registry",
            display_threshold=display_threshold,
        )
        detector = Detector(source, self.trainer.settings)
        images = self.scenario.images
        found = detector.predict([image.pixels for image in images])
        threshold = source.shown_from(None, self.trainer.settings.score_threshold)
        disagreement = None
        if flip:
            n_classes = len(detector.names)
            plain = [
                ImageRecord.from_detections("", image, detections, n_classes)
                for image, detections in zip(images, found, strict=True)
            ]
            disagreement = flip_disagreements(detector, images, plain)
        return Prediction(list(detector.names), found, threshold, disagreement)

    def predict_live(self, live: ModelVersion, flip: bool = False) -> Prediction:
        return self.predict(live.weights, live.version, live.display_threshold, flip)

    def queue(self, arm: ProductArm) -> QueueConfig:
        """The arm's queue settings, as a project with its extra params would have them."""
        return queue_config(
            {**self.config.extra_params, **arm.params, "al_strategy": arm.strategy},
            val_percent=self.trainer.params.val_percent,
        )

    def test(self, weights: Path) -> dict[str, Any]:
        return self.trainer.test(
            weights, self.scenario.test_yaml, self.scenario.classes, self.root / "eval"
        )

    def select(
        self,
        arm: ProductArm,
        prediction: Prediction,
        labeled: list[int],
        n: int,
        meta: dict[str, Any],
        cycle: int,
    ) -> list[int]:
        found = prediction.found
        is_labeled = np.zeros(len(found), dtype=bool)
        is_labeled[labeled] = True
        unlabeled = np.flatnonzero(~is_labeled)
        pool = build_pool(
            [found[i] for i in unlabeled],
            [self.scenario.images[i] for i in unlabeled],
            [self.scenario.pool[i].task_id for i in unlabeled],
            [found[i] for i in labeled],
            prediction.names,
            meta,
            prediction.threshold,
            None if prediction.flip is None else [prediction.flip[i] for i in unlabeled],
        )
        queue = self.queue(arm)
        if (
            queue.embedding == ENCODER_EMBEDDING
        ):  # as the ranking does once the encoder covers the pool
            assert self.encoder_embeddings is not None  # first_batches ran
            pool = replace(
                pool,
                embeddings=self.encoder_embeddings[unlabeled],
                labeled_embeddings=self.encoder_embeddings[labeled] if labeled else None,
            )
        chosen = get_strategy(queue.strategy, **queue.params, seed=self.seed * 1000 + cycle).select(
            pool, n
        )
        return [int(unlabeled[i]) for i in chosen.batch]

    def row(
        self,
        recipe: str,
        arm: str,
        cycle: int,
        labeled: Sequence[int],
        edits: Counter[str],
        weights: Path,
        durations: dict[str, float],
        version: str = "",
        promoted: bool = True,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        """Record a curve point; `metrics`, the test mAPs of `weights`, are measured if None."""
        if metrics is None:
            t0 = time.perf_counter()
            metrics = self.test(weights)
            durations["test_s"] = round(time.perf_counter() - t0, 3)
        self.rows.append(
            CycleRow(
                scenario=self.scenario.name,
                recipe=recipe,
                arm=arm,
                seed=self.seed,
                cycle=cycle,
                images=len(labeled),
                boxes=self.scenario.boxes(labeled),
                edits=dict(edits),
                map50=float(metrics["map50"]),
                map50_95=float(metrics["map50_95"]),
                version=version,
                promoted=promoted,
                durations=durations,
                class_ap50=dict(metrics.get("per_class_ap50", {})),
            )
        )

    def product_arm(self, arm: ProductArm, seed: SeedSet) -> list[list[int]]:
        """One arm's cycles with the product recipe, from `seed`; the labeled images after
        each."""
        registry = self.trainer.registry
        project = ARM_PROJECT + self.config.product_arms.index(arm)
        params = TrainParams.resolve(
            self.trainer.settings, {**self.config.extra_params, **arm.params}
        )
        paths = self.trainer.settings.paths
        shutil.copytree(paths.project(seed.project).root, paths.project(project).root)
        labeled, edits = list(seed.labeled), Counter(seed.edits)
        live = registry.live(project)
        assert live is not None  # the seed-set run has no live model to lose against
        self.row(
            PRODUCT,
            arm.name,
            0,
            labeled,
            edits,
            live.weights,
            {"train_s": seed.train_s},
            live.version,
            metrics=seed.metrics,
        )
        labeled_by_cycle = [list(labeled)]
        budgets = self.config.budgets
        for cycle in range(1, len(budgets)):
            t0 = time.perf_counter()
            prediction = self.predict_live(live, flip=self.queue(arm).flip_pass)
            batch = self.select(
                arm,
                prediction,
                labeled,
                budgets[cycle] - budgets[cycle - 1],
                live.meta,
                cycle,
            )
            edits += self.annotator.edits(batch, prediction)
            labeled += batch
            t1 = time.perf_counter()
            details = self.trainer.product(
                project,
                [self.scenario.pool[i] for i in labeled],
                self.scenario.classes,
                params,
            )
            t2 = time.perf_counter()
            live = registry.live(project)
            assert live is not None
            self.row(
                PRODUCT,
                arm.name,
                cycle,
                labeled,
                edits,
                live.weights,
                {"select_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3)},
                live.version,
                bool(details["gate"]["passed"]),
            )
            labeled_by_cycle.append(list(labeled))
        rest = sorted(set(range(len(self.scenario.pool))) - set(labeled))
        self.full_pool[PRODUCT][arm.name] = dict(
            edits + self.annotator.edits(rest, self.predict_live(live))
        )
        return labeled_by_cycle

    def converged_arm(self, arm: ProductArm, seed: SeedSet) -> None:
        sc = self.scenario
        val = sc.dataset.labeled("val")
        folder = self.root / "converged" / arm.name
        labeled, edits = list(seed.labeled), Counter(seed.edits)
        budgets = self.config.budgets
        weights = Path()
        for cycle in range(len(budgets)):
            t0 = time.perf_counter()
            if cycle > 0:
                prediction = self.predict(
                    weights, f"converged-{cycle - 1}", flip=self.queue(arm).flip_pass
                )
                batch = self.select(
                    arm, prediction, labeled, budgets[cycle] - budgets[cycle - 1], {}, cycle
                )
                edits += self.annotator.edits(batch, prediction)
                labeled += batch
            t1 = time.perf_counter()
            weights = self.trainer.converged(
                self.base_weights,
                [sc.pool[i] for i in labeled],
                val,
                sc.classes,
                folder / f"cycle{cycle}",
            )
            t2 = time.perf_counter()
            self.row(
                CONVERGED,
                arm.name,
                cycle,
                labeled,
                edits,
                weights,
                {"select_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3)},
            )
        rest = sorted(set(range(len(sc.pool))) - set(labeled))
        self.full_pool[CONVERGED][arm.name] = dict(
            edits + self.annotator.edits(rest, self.predict(weights, "converged-final"))
        )
