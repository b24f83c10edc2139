"""What a label-efficiency run is made of: the scenarios (pools), the arms, the two training
recipes, the budgets and the annotator-cost model, plus the result row every stage shares.

The simulation produces `CycleRow`s under a `BenchConfig`; the metrics and the report read
them. This module depends on nothing else in the benchmark but the data generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from backend.analytics.cost import ActionSeconds
from backend.config import Settings
from backend.project_params import TrainParams
from backend.ranking.queue_config import DEFAULT_STRATEGY
from backend.ranking.queue_config import KEYS as QUEUE_KEYS
from benchmarks.label_efficiency.digits_data import DigitsConfig
from strategies import available_strategies

# Arms. `manual` and `static` label the images `random` labels, in the same order: they
# differ from it only in what the annotator is shown (nothing; the never-retrained base model).
MANUAL, STATIC, RANDOM, QUEUE = "manual", "static", "random", "queue"
UNTRAINED_ARMS: tuple[str, ...] = (MANUAL, STATIC)
# `coldstart` is the `queue` arm after another first batch: the TypiClust picks on the pool's
# embeddings from the project's own encoder, instead of a random seed set.
COLDSTART = "coldstart"
# How a first batch (the seed set) is picked: at random, or TypiClust on the embeddings of the
# encoder trained on the pool, or of the base model's neck (what the queue sees before a
# project's first model; compared, not an arm).
ENCODER, NECK = "encoder", "neck"
SEED_SETS: tuple[str, ...] = (RANDOM, ENCODER, NECK)
PRODUCT, CONVERGED = "product", "converged"  # the two training recipes
TARGETS: tuple[float, ...] = (0.90, 0.95)
RARE_SHARE = 0.05  # a class with a smaller share of a pool's boxes is one of its rare classes
DRAWN_FACTORS: tuple[float, ...] = (0.5, 1.0, 2.0)  # drawing-cost sensitivity


@dataclass(frozen=True)
class ProductArm:
    """An arm that retrains: a strategy, extra params on top of the run's own, and how its
    first batch is picked (one of SEED_SETS)."""

    name: str
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    seed_set: str = RANDOM


def strategy_arm(strategy: str) -> ProductArm:
    """The arm a `--strategies` name runs as: the product's default strategy is the `queue`
    arm, `coldstart` the same queue after the encoder's first batch."""
    if strategy == COLDSTART:
        return ProductArm(COLDSTART, DEFAULT_STRATEGY, seed_set=ENCODER)
    return ProductArm(QUEUE if strategy == DEFAULT_STRATEGY else strategy, strategy)


def all_strategies() -> tuple[str, ...]:
    """Every strategy the product offers (al_strategy), the random control first, then the
    cold-start arm."""
    return (RANDOM, *(s for s in available_strategies() if s != RANDOM), COLDSTART)


# ------------------------------------------------------------------------------ the pools
LONG_TAIL_WEIGHTS: tuple[float, ...] = (0.45, 0.3, 0.2, 0.03, 0.02)  # 4 and 7 rare
SCENARIOS: tuple[str, ...] = ("scenes", "streams", "long_tail")
STREAM_CAMERAS = 12
STREAM_POOL_FACTOR = 2


def scenario_data(name: str, n_pool: int, n_test: int, seed: int = 0) -> DigitsConfig:
    """The generated pool of a scenario (same classes, image and object sizes in all three).

    Sized to be learnable at CPU sizes: 96 px images, digits 22-40 px, at most four per image,
    light clutter (measured: the converged recipe on 300 such scenes reached test mAP@0.5
    0.67, where 160 px scenes of 10 digit classes, 16-56 px, up to 15 per image gave 0.18).
    A stream's frames keep showing the same objects, so its pool has STREAM_POOL_FACTOR times
    the frames to hold a comparable number of distinct objects.
    """
    common = DigitsConfig(
        n_pool=n_pool,
        n_val=max(24, n_test // 2),
        n_test=n_test,
        n_base=0,
        image_size=96,
        min_objects=1,
        max_objects=4,
        min_digit=22,
        max_digit=40,
        themed_fraction=0.3,
        occlusion_prob=0.1,
        max_distractors=1,
        seed=seed,
    )
    if name == "scenes":
        return common
    if name == "streams":
        return replace(
            common,
            n_pool=n_pool * STREAM_POOL_FACTOR,
            cameras=STREAM_CAMERAS,
            duplicate_fraction=0.0,
        )
    if name == "long_tail":
        return replace(common, class_weights=LONG_TAIL_WEIGHTS)
    raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")


def base_data(n_base: int, seed: int = 0) -> DigitsConfig:
    """The scenes whose `base` split trains the shared class-agnostic base model."""
    return replace(scenario_data("scenes", 1, 1, seed), n_val=0, n_base=n_base)


# ------------------------------------------------------------------------------ the run
_PRODUCT = Settings()  # the product defaults a benchmark run starts from


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark: scenarios and their pool sizes, arms, budgets and both recipes."""

    scenarios: tuple[str, ...] = SCENARIOS
    strategies: tuple[str, ...] = field(default_factory=all_strategies)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_pool: int = 240
    n_test: int = 120
    n_base: int = 200
    budgets: tuple[int, ...] = (16, 32, 64, 128)  # labeled images after the seed set, each cycle
    epochs: int = _PRODUCT.train_epochs  # TRAIN_EPOCHS: the most epochs of a product run
    base_epochs: int = 20
    image_size: int = 96
    train_batch: int = _PRODUCT.train_batch  # TRAIN_BATCH
    val_percent: int = _PRODUCT.train_val_percent  # TRAIN_VAL_PERCENT
    tolerance: float = _PRODUCT.promote_tolerance  # PROMOTE_TOLERANCE
    converged_strategies: tuple[str, ...] = (RANDOM, DEFAULT_STRATEGY)
    converged_seeds: int = 1  # the first N seeds also run the converged recipe (it is slow)
    converged_max_epochs: int = 60
    converged_patience: int = 12
    costs: ActionSeconds = field(default_factory=ActionSeconds)
    # The training budget of the encoder each unit trains on its pool (near-duplicate groups,
    # the coldstart arm). Under the product's ENCODER_TRAIN_SECONDS, to keep units short:
    # measured on the scenes pool (240 images, 2 CPU cores), near-duplicate recall 0.84 after
    # 10 s, 1.0 after 60 s.
    encoder_seconds: float = 60.0
    # The ML backend's extra params every simulated project runs with (al_* queue options,
    # train_* recipe options but train_epochs, which is `epochs`), for ablations; empty = the
    # product defaults.
    extra_params: dict[str, Any] = field(default_factory=dict)
    # Ablation arms: the default strategy with these extra params on top, by arm name.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: int = 1  # scenario/seed units run in parallel processes
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.scenarios or set(self.scenarios) - set(SCENARIOS):
            raise ValueError(f"scenarios must be among {', '.join(SCENARIOS)}")
        if len(set(self.strategies)) != len(self.strategies) or RANDOM not in self.strategies:
            raise ValueError(f"strategies must be distinct and include the control {RANDOM!r}")
        unknown = set(self.strategies) - {*available_strategies(), COLDSTART}
        if unknown:
            raise ValueError(f"unknown strategies {sorted(unknown)}")
        if set(self.converged_strategies) - set(self.strategies):
            raise ValueError("converged_strategies must be among the strategies")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError("seeds must be distinct integers >= 0")
        if (
            len(self.budgets) < 2
            or self.budgets[0] < 4
            or any(b <= a for a, b in zip(self.budgets, self.budgets[1:], strict=False))
            or self.budgets[-1] > self.n_pool
        ):
            raise ValueError("budgets must increase from >= 4 images to at most the pool size")
        if min(self.epochs, self.base_epochs, self.converged_max_epochs, self.jobs) < 1:
            raise ValueError("epochs and jobs must be >= 1")
        if self.encoder_seconds <= 0:
            raise ValueError("encoder_seconds must be > 0")
        allowed = {*QUEUE_KEYS, *TrainParams.OVERRIDES} - {"al_strategy", "train_epochs"}
        for params in (self.extra_params, *self.variants.values()):
            if set(params) - allowed:
                raise ValueError(f"extra params must be among {', '.join(sorted(allowed))}")
        taken = {*UNTRAINED_ARMS, *(strategy_arm(s).name for s in self.strategies)}
        if set(self.variants) & taken:
            raise ValueError(f"variant names must differ from the arms {sorted(taken)}")

    @property
    def product_arms(self) -> tuple[ProductArm, ...]:
        """The retraining arms: every strategy, then the variants of the default one."""
        return (
            *(strategy_arm(s) for s in self.strategies),
            *(ProductArm(name, DEFAULT_STRATEGY, dict(p)) for name, p in self.variants.items()),
        )

    @property
    def arms(self) -> tuple[str, ...]:
        return (*UNTRAINED_ARMS, *(arm.name for arm in self.product_arms))

    @classmethod
    def quick(cls) -> BenchConfig:
        """Smoke-sized (about 3 minutes on 2 CPU cores): checks the whole path, not a result."""
        return cls(
            strategies=(RANDOM, DEFAULT_STRATEGY, COLDSTART),
            seeds=(0,),
            n_pool=48,
            n_test=24,
            n_base=40,
            budgets=(8, 16),
            epochs=2,
            base_epochs=3,
            converged_max_epochs=3,
            converged_patience=1,
            encoder_seconds=10.0,
        )

    @classmethod
    def medium(cls) -> BenchConfig:
        """One scenario, the full sizes, for ablations (at most 15 minutes on 2 CPU cores)."""
        return cls(scenarios=("scenes",), strategies=(RANDOM, DEFAULT_STRATEGY), converged_seeds=0)

    @classmethod
    def full(cls) -> BenchConfig:
        """Three scenarios x three seeds x every arm (at most 60 minutes on 2 CPU cores)."""
        return cls()


@dataclass
class CycleRow:
    """One point of one arm's learning curve (budgets cumulative up to this cycle)."""

    scenario: str
    recipe: str
    arm: str
    seed: int
    cycle: int
    images: int
    boxes: int
    edits: dict[str, int]  # analytics.matching.Edit value -> count, over every labeled image
    map50: float
    map50_95: float
    version: str = ""
    promoted: bool = True
    durations: dict[str, float] = field(default_factory=dict)
    class_ap50: dict[str, float] = field(default_factory=dict)  # test AP@0.5 per class
