"""Strategies: one small class per acquisition function on a thin base, plus a name registry.

The base class owns the pipeline (validate -> rank -> optional near-duplicate demotion ->
clusters -> `Selection`); a subclass writes only `_rank`. Score strategies (uncertainty,
DUA, DCUS) write only `score`. Higher score = label sooner, everywhere.

Use `get_strategy(name, **params)`; `available_strategies()` lists the names.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, cast

import numpy as np

from strategies.diversity import (
    DEFAULT_SHORTLIST,
    METRICS,
    Metric,
    demote_near_duplicates,
    kcenter_greedy,
    kcenter_ranking,
    kmeans_clusters,
)
from strategies.pool import BoolArray, FloatArray, IntArray, Pool, Selection
from strategies.uncertainty import (
    AGGREGATIONS,
    DCUS_ALPHA,
    DCUS_UPPER,
    DEFAULT_EMPTY_SCORE,
    DEFAULT_FLOOR,
    ENTROPY_VARIANTS,
    Aggregation,
    BoxMeasure,
    EntropyVariant,
    dcus_image_scores,
    dcus_weights,
    dua_image_scores,
    dua_weights,
    image_uncertainty,
)

Seed = int | np.random.Generator


@dataclass(frozen=True, eq=False)
class Ranking:
    """A strategy's raw answer before the shared post-processing.

    Attributes:
        order: (n,) int64 permutation, label-first first.
        scores: (n,) float64 finite per pool index, non-increasing along `order`.
        details: named (n,) component scores for `Selection.details`.
    """

    order: IntArray
    scores: FloatArray
    details: dict[str, FloatArray] = field(default_factory=dict)


def rank_scores(order: IntArray) -> FloatArray:
    """Scores from positions: the item at position r gets 1 - r / n (n items, in (0, 1]).

    Args:
        order: (n,) int64 permutation.

    Returns:
        (n,) float64 per pool index, strictly decreasing along `order`.
    """
    n = order.shape[0]
    scores = np.empty(n, dtype=np.float64)
    scores[order] = 1.0 - np.arange(n, dtype=np.float64) / max(n, 1)
    return scores


def order_by_score(scores: FloatArray) -> IntArray:
    """(n,) int64 indices by descending score; ties keep the lower index first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").astype(np.int64)


# ---------------------------------------------------------------------------- validation
def _number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """Check a real-valued parameter; ValueError with the accepted range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        bracket = "(" if low_open else "["
        upper = "inf)" if high is None else f"{high}]"
        raise ValueError(f"{name} must lie in {bracket}{low}, {upper}, got {value!r}")
    if high is not None and number > high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return number


def _integer(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def _choice(name: str, value: object, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
    return value


def _seed(value: object) -> Seed:
    if isinstance(value, np.random.Generator):
        return value
    return _integer("seed", value, low=0)


# ---------------------------------------------------------------------------- base classes
class Strategy(ABC):
    """Base: owns the select pipeline. Subclasses implement `_rank`.

    Args (shared by every strategy):
        seed: int >= 0 or np.random.Generator; the only source of randomness (random
            order, k-means). An int gives the same result on every call; a Generator is
            advanced by each call (reproducible as a sequence).
        n_clusters: k for the k-means cluster ids in `Selection.clusters` (clipped to n).
        dup_threshold: if set, near-duplicates (embedding distance <= threshold) of labeled
            items or of items earlier in the order are moved to the end; see
            `demote_near_duplicates`. None (default) disables it.
        metric: "l2" or "cosine" for every embedding distance.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        seed: Seed = 0,
        n_clusters: int = 8,
        dup_threshold: float | None = None,
        metric: Metric = "l2",
    ) -> None:
        self.seed = _seed(seed)
        self.n_clusters = _integer("n_clusters", n_clusters, low=1)
        self.dup_threshold = (
            None if dup_threshold is None else _number("dup_threshold", dup_threshold, low=0.0)
        )
        self.metric = cast(Metric, _choice("metric", metric, METRICS))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    def select(self, pool: Pool, batch_size: int) -> Selection:
        """Rank the whole pool and choose the first `batch_size` items.

        Args:
            pool: the unlabeled pool (n images).
            batch_size: int >= 0; clipped to n.

        Returns:
            Selection with order (n,), scores (n,), clusters (n,).
        """
        if not isinstance(pool, Pool):
            raise TypeError(f"pool must be a Pool, got {type(pool).__name__}")
        b = min(_integer("batch_size", batch_size, low=0), pool.n)
        if pool.n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Selection(empty, np.zeros(0), empty.copy(), 0, self.name)
        ranking = self._rank(pool, b)
        order, scores = ranking.order.astype(np.int64), ranking.scores.astype(np.float64)
        details = dict(ranking.details)
        if self.dup_threshold is not None:
            order, scores, demoted = self._demote(pool, order, scores, b, self.dup_threshold)
            details["near_duplicate"] = demoted.astype(np.float64)
        # Guarantee scores[order] is non-increasing (only float rounding can break it).
        scores[order] = np.minimum.accumulate(scores[order])
        clusters = kmeans_clusters(
            pool.embeddings, self.n_clusters, seed=self._int_seed(), metric=self.metric
        )
        return Selection(order, scores, clusters, b, self.name, details)

    @abstractmethod
    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        """Full order and scores for `pool` (n >= 1); the first `batch_size` are the batch."""

    def _rng(self) -> np.random.Generator:
        return (
            self.seed
            if isinstance(self.seed, np.random.Generator)
            else np.random.default_rng(self.seed)
        )

    def _int_seed(self) -> int:
        if isinstance(self.seed, np.random.Generator):
            return int(self.seed.integers(0, 2**31 - 1))
        return self.seed

    def _demote(
        self, pool: Pool, order: IntArray, scores: FloatArray, batch_size: int, threshold: float
    ) -> tuple[IntArray, FloatArray, BoolArray]:
        """Demote near-duplicates; demoted items get scores below every other item."""
        new_order, demoted = demote_near_duplicates(
            order,
            pool.embeddings,
            threshold,
            labeled=pool.labeled,
            keep=batch_size,
            metric=self.metric,
        )
        scores = scores.copy()
        if demoted.any() and not demoted.all():
            floor = float(scores[~demoted].min())
            shift = float(scores[demoted].max()) - floor + 1.0
            scores[demoted] -= shift
        return new_order, scores, demoted


class ScoreStrategy(Strategy):
    """A strategy that is a per-image score; order = descending score (ties: lower index)."""

    detail_name: ClassVar[str] = "uncertainty"

    @abstractmethod
    def score(self, pool: Pool) -> FloatArray:
        """(n,) float64 finite per-image scores, higher = label sooner."""

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        scores = self.score(pool)
        return Ranking(order_by_score(scores), scores, {self.detail_name: scores})


class _UncertaintyStrategy(ScoreStrategy):
    """Box measure -> image aggregation, shared by the three plain uncertainty strategies.

    Args:
        aggregate: "max", "mean" or "sum" over an image's boxes.
        floor: boxes with max class score below it are ignored (default 0.05).
        empty_score: score of an image with no box at or above the floor (default 1.0, the
            largest box uncertainty: "nothing detected" is never treated as certain).
        (plus the shared `Strategy` parameters)
    """

    measure: ClassVar[BoxMeasure]

    def __init__(
        self,
        *,
        aggregate: Aggregation = "max",
        floor: float = DEFAULT_FLOOR,
        empty_score: float = DEFAULT_EMPTY_SCORE,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.aggregate = cast(Aggregation, _choice("aggregate", aggregate, AGGREGATIONS))
        self.floor = _number("floor", floor, low=0.0, high=1.0)
        self.empty_score = _number("empty_score", empty_score)
        self.variant: EntropyVariant = "binary"

    def score(self, pool: Pool) -> FloatArray:
        return image_uncertainty(
            pool.flat_scores,
            pool.flat_image,
            pool.n,
            measure=self.measure,
            how=self.aggregate,
            floor=self.floor,
            empty_score=self.empty_score,
            variant=self.variant,
        )


# ---------------------------------------------------------------------------- strategies
class RandomStrategy(Strategy):
    """Control arm: a uniformly random order from the seed; scores = 1 - rank / n."""

    name = "random"

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        order = self._rng().permutation(pool.n).astype(np.int64)
        return Ranking(order, rank_scores(order))


class LeastConfidence(_UncertaintyStrategy):
    """Box: 1 - max p. Image: aggregate over boxes (see `_UncertaintyStrategy`)."""

    name = "least_confidence"
    measure = "least_confidence"


class Margin(_UncertaintyStrategy):
    """Box: 1 - (p(1) - p(2)), close top-2 = uncertain. Image: aggregate over boxes."""

    name = "margin"
    measure = "margin"


class Entropy(_UncertaintyStrategy):
    """Box entropy, "binary" (default: mean binary entropy of the sigmoids) or "normalized".

    Args:
        variant: "binary" or "normalized" (see `strategies.uncertainty.entropy`).
        (plus the `_UncertaintyStrategy` and `Strategy` parameters)
    """

    name = "entropy"
    measure = "entropy"

    def __init__(self, *, variant: EntropyVariant = "binary", **params: Any) -> None:
        super().__init__(**params)
        self.variant = cast(EntropyVariant, _choice("variant", variant, ENTROPY_VARIANTS))


class DUA(ScoreStrategy):
    """DUA: sum over predicted classes c of w_c * mean(1 - conf of the image's class-c boxes).

    w_c = 1 - (AP_c - min AP) / (max AP - min AP) from `pool.class_ap`; unknown (NaN) AP or
    no AP at all count as hardest (w = 1); max == min gives w = 1 for all.

    Args:
        floor, empty_score: as for the uncertainty strategies.
    """

    name = "dua"

    def __init__(
        self,
        *,
        floor: float = DEFAULT_FLOOR,
        empty_score: float = DEFAULT_EMPTY_SCORE,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.floor = _number("floor", floor, low=0.0, high=1.0)
        self.empty_score = _number("empty_score", empty_score)

    def score(self, pool: Pool) -> FloatArray:
        weights = dua_weights(pool.class_ap, pool.n_classes)
        return dua_image_scores(
            pool.flat_scores,
            pool.flat_image,
            pool.n,
            weights,
            floor=self.floor,
            empty_score=self.empty_score,
        )


class DCUS(ScoreStrategy):
    """PPAL's difficulty-calibrated uncertainty: sum over boxes (s >= floor) of w_c * H(s).

    w_c = 1 + alpha * upper * ln(1 + g * (1 - Q_c)), g = e^(1/alpha) - 1, from
    `pool.class_quality`; unknown (NaN) quality or none at all count as hardest (Q_c = 0).

    Args:
        alpha: > 0 (PPAL: 0.3). upper: >= 0 (PPAL: 0.2). floor: PPAL's score threshold 0.05.
        empty_score: as for the uncertainty strategies.
    """

    name = "dcus"

    def __init__(
        self,
        *,
        alpha: float = DCUS_ALPHA,
        upper: float = DCUS_UPPER,
        floor: float = DEFAULT_FLOOR,
        empty_score: float = DEFAULT_EMPTY_SCORE,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.alpha = _number("alpha", alpha, low=0.0, low_open=True)
        self.upper = _number("upper", upper, low=0.0)
        self.floor = _number("floor", floor, low=0.0, high=1.0)
        self.empty_score = _number("empty_score", empty_score)

    def score(self, pool: Pool) -> FloatArray:
        weights = dcus_weights(
            pool.class_quality, pool.n_classes, alpha=self.alpha, upper=self.upper
        )
        return dcus_image_scores(
            pool.flat_scores,
            pool.flat_image,
            pool.n,
            weights,
            floor=self.floor,
            empty_score=self.empty_score,
        )


class KCenter(Strategy):
    """Core-set k-center greedy on the embeddings, against the labeled set.

    The batch is the greedy picks; the rest follow by distance to labeled + picks (see
    `kcenter_ranking`). Scores are those distances. Cold start: first pick = item nearest to
    the pool mean.

    Args:
        shortlist: speed knob of `kcenter_greedy` (does not change the picks).
    """

    name = "kcenter"
    detail_name: ClassVar[str] = "diversity"

    def __init__(self, *, shortlist: int = DEFAULT_SHORTLIST, **common: Any) -> None:
        super().__init__(**common)
        self.shortlist = _integer("shortlist", shortlist, low=1)

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        order, scores = self.diversity_ranking(pool, batch_size)
        return Ranking(order, scores, {"diversity": scores})

    def diversity_ranking(self, pool: Pool, batch_size: int) -> tuple[IntArray, FloatArray]:
        """(n,) order and (n,) distance scores from k-center greedy with `batch_size` picks."""
        result = kcenter_greedy(
            pool.embeddings,
            batch_size,
            pool.labeled,
            metric=self.metric,
            shortlist=self.shortlist,
        )
        return kcenter_ranking(result)


def _uncertainty_component(
    uncertainty: str | ScoreStrategy, params: Mapping[str, Any] | None
) -> ScoreStrategy:
    """Resolve a hybrid's uncertainty part from a registry name (+ params) or an instance."""
    if isinstance(uncertainty, ScoreStrategy):
        if params:
            raise ValueError("uncertainty_params only apply when uncertainty is a name")
        return uncertainty
    score_names = tuple(k for k, v in _REGISTRY.items() if issubclass(v, ScoreStrategy))
    name = _choice("uncertainty", uncertainty, score_names)
    strategy = get_strategy(name, **dict(params or {}))
    if not isinstance(strategy, ScoreStrategy):  # pragma: no cover - guarded by score_names
        raise ValueError(f"{name!r} is not a score strategy")
    return strategy


class UncertaintyThenKCenter(Strategy):
    """Hybrid (a): keep the top `factor * B` items by uncertainty, then k-center picks B.

    The batch is the k-center picks among the pre-filtered items (diverse among the
    uncertain). All other items follow by descending uncertainty. Scores = 1 - rank / n.

    Args:
        factor: pre-filter size as a multiple k of the batch size, >= 1 (default 4).
        uncertainty: registry name of a score strategy (default "entropy") or an instance.
        uncertainty_params: parameters for that named strategy.
        shortlist: speed knob of `kcenter_greedy`.
    """

    name = "prefilter"

    def __init__(
        self,
        *,
        factor: float = 4.0,
        uncertainty: str | ScoreStrategy = "entropy",
        uncertainty_params: Mapping[str, Any] | None = None,
        shortlist: int = DEFAULT_SHORTLIST,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.factor = _number("factor", factor, low=1.0)
        self.uncertainty = _uncertainty_component(uncertainty, uncertainty_params)
        self.shortlist = _integer("shortlist", shortlist, low=1)

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        u_scores = self.uncertainty.score(pool)
        u_order = order_by_score(u_scores)
        size = min(pool.n, int(np.ceil(self.factor * batch_size)))
        candidates = u_order[:size]
        result = kcenter_greedy(
            pool.embeddings[candidates],
            batch_size,
            pool.labeled,
            metric=self.metric,
            shortlist=self.shortlist,
        )
        picks = candidates[result.picks]
        is_pick = np.zeros(pool.n, dtype=bool)
        is_pick[picks] = True
        order = np.concatenate([picks, u_order[~is_pick[u_order]]]).astype(np.int64)
        return Ranking(order, rank_scores(order), {"uncertainty": u_scores})


class RankMix(Strategy):
    """Hybrid (b): order by lam * uncertainty_rank + (1 - lam) * diversity_rank (ascending).

    Ranks are positions (0 = label first) in the uncertainty order and in the k-center order
    (`KCenter` with the same batch size). Ties go to the better uncertainty rank, so
    lam = 1 reproduces the uncertainty order and lam = 0 the k-center order exactly.
    Scores = 1 - mixed_rank / (n - 1), in [0, 1].

    Args:
        lam: weight of uncertainty in [0, 1] (default 0.5).
        uncertainty: registry name of a score strategy (default "entropy") or an instance.
        uncertainty_params: parameters for that named strategy.
        shortlist: speed knob of `kcenter_greedy`.
    """

    name = "hybrid"

    def __init__(
        self,
        *,
        lam: float = 0.5,
        uncertainty: str | ScoreStrategy = "entropy",
        uncertainty_params: Mapping[str, Any] | None = None,
        shortlist: int = DEFAULT_SHORTLIST,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.lam = _number("lam", lam, low=0.0, high=1.0)
        self.uncertainty = _uncertainty_component(uncertainty, uncertainty_params)
        self.shortlist = _integer("shortlist", shortlist, low=1)

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        n = pool.n
        u_scores = self.uncertainty.score(pool)
        u_rank = _positions(order_by_score(u_scores))
        diversity = KCenter(shortlist=self.shortlist, metric=self.metric)
        d_order, d_scores = diversity.diversity_ranking(pool, batch_size)
        d_rank = _positions(d_order)
        mixed = self.lam * u_rank + (1.0 - self.lam) * d_rank
        order = np.lexsort((u_rank, mixed)).astype(np.int64)
        scores = 1.0 - mixed / max(n - 1, 1)
        return Ranking(order, scores, {"uncertainty": u_scores, "diversity": d_scores})


def _positions(order: IntArray) -> FloatArray:
    """(n,) float64 position of each index in `order`."""
    positions = np.empty(order.shape[0], dtype=np.float64)
    positions[order] = np.arange(order.shape[0], dtype=np.float64)
    return positions


# ---------------------------------------------------------------------------- registry
_REGISTRY: Mapping[str, type[Strategy]] = MappingProxyType(
    {
        cls.name: cls
        for cls in (
            RandomStrategy,
            LeastConfidence,
            Margin,
            Entropy,
            DUA,
            DCUS,
            KCenter,
            UncertaintyThenKCenter,
            RankMix,
        )
    }
)

_COMMON_PARAMS = tuple(inspect.signature(Strategy.__init__).parameters)[1:]


def available_strategies() -> tuple[str, ...]:
    """Registry names, sorted."""
    return tuple(sorted(_REGISTRY))


def strategy_params(name: str) -> tuple[str, ...]:
    """Parameter names `get_strategy(name, ...)` accepts (ValueError for unknown names)."""
    cls = _lookup(name)
    own: list[str] = []
    for klass in cls.__mro__:
        if klass is Strategy or not issubclass(klass, Strategy):
            continue
        for pname, param in inspect.signature(klass.__init__).parameters.items():
            if pname != "self" and param.kind is param.KEYWORD_ONLY and pname not in own:
                own.append(pname)
    return tuple(own) + tuple(p for p in _COMMON_PARAMS if p not in own)


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by registry name, e.g. ``get_strategy("hybrid", lam=0.5)``.

    Raises:
        ValueError: unknown name (the message lists the valid names), unknown parameter
            (the message lists the accepted ones) or a bad parameter value.
    """
    cls = _lookup(name)
    accepted = strategy_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {name!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(**params)


def _lookup(name: str) -> type[Strategy]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown strategy {name!r}; valid names: {', '.join(available_strategies())}"
        )
    return _REGISTRY[name]
