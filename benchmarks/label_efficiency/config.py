"""What a label-efficiency run is made of: its configuration, its result row and the names
every stage shares (the arms, the control, the default strategy, the targets).

The simulation produces `CycleRow`s under a `BenchConfig`; the metrics and the report read
them. This module depends on nothing else in the benchmark, so each of those can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.label_efficiency.digits_data import DigitsConfig

STRATEGIES: tuple[str, ...] = ("random", "entropy", "kcenter", "hybrid", "dua")
CONTROL = "random"
DEFAULT_STRATEGY = "hybrid"
TARGETS: tuple[float, ...] = (0.90, 0.95)


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
