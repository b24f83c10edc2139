"""Strategies: one small class per acquisition function on a thin base.

The base class owns the pipeline (validate -> rank -> optional near-duplicate demotion ->
clusters -> `Selection`); a subclass writes only `_rank`. Score strategies (uncertainty,
DUA, DCUS) write only `score`. Higher score = label sooner, everywhere.

The hybrids live in `strategies.hybrids`; `strategies.registry.get_strategy(name, **params)`
builds any strategy by name.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar, cast

import numpy as np

from strategies.checks import Seed, check_choice, check_integer, check_number, check_seed
from strategies.diversity import (
    DEFAULT_SHORTLIST,
    METRICS,
    Metric,
    demote_near_duplicates,
    kcenter_greedy,
    kcenter_ranking,
    kmeans_clusters,
    median_neighbour_distance,
)
from strategies.duplicates import demote_duplicate_groups
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

S = TypeVar("S", bound="Strategy")


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
    return 1.0 - positions(order) / max(order.shape[0], 1)


def order_by_score(scores: FloatArray, tiebreak: FloatArray | None = None) -> IntArray:
    """(n,) int64 indices by descending score; ties by ascending `tiebreak` (a diversity
    rank, say), then the lower index."""
    negated = -np.asarray(scores, dtype=np.float64)
    if tiebreak is None:
        return np.argsort(negated, kind="stable").astype(np.int64)
    return np.lexsort((np.asarray(tiebreak, dtype=np.float64), negated)).astype(np.int64)


def positions(order: IntArray) -> FloatArray:
    """(n,) float64 position of each index in `order`."""
    where = np.empty(order.shape[0], dtype=np.float64)
    where[order] = np.arange(order.shape[0], dtype=np.float64)
    return where


def tied_positions(scores: FloatArray) -> FloatArray:
    """(n,) position of each item by descending score, equal scores sharing their mean
    position: a tie carries no preference, so whatever is blended with it decides."""
    order = order_by_score(scores)
    ordered = np.asarray(scores, dtype=np.float64)[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    sizes = np.diff(np.append(starts, ordered.shape[0]))
    where = np.empty(ordered.shape[0], dtype=np.float64)
    where[order] = np.repeat(starts + (sizes - 1) / 2.0, sizes)
    return where


def audit_places(n: int, share: float) -> BoolArray:
    """(n,) True at the order's places that belong to the audit slice: place p when
    floor((p + 1) * share) > floor(p * share), i.e. every (1 / share)-th place, the first at
    about 1 / share - 1 (the fifth place for a share of 0.2)."""
    place = np.arange(n, dtype=np.float64)
    return np.floor((place + 1) * share) > np.floor(place * share)


def fill_places(is_place: BoolArray, placed: IntArray, others: IntArray) -> IntArray:
    """An order of len(placed) + len(others) items: `placed` in the marked places and
    `others` in the rest, each in its own order; once one runs out the other fills the rest."""
    n = placed.shape[0] + others.shape[0]
    marked = is_place[:n].copy()
    # Where one list runs out, the places of the other continue.
    extra = int(marked.sum()) - placed.shape[0]
    if extra > 0:
        marked[np.flatnonzero(marked)[-extra:]] = False
    elif extra < 0:
        marked[np.flatnonzero(~marked)[extra:]] = True
    order = np.empty(n, dtype=np.int64)
    order[marked] = placed
    order[~marked] = others
    return order


def _below_the_rest(scores: FloatArray, demoted: BoolArray) -> FloatArray:
    """`scores` with the demoted items shifted below every other item (order kept)."""
    scores = scores.copy()
    if demoted.any() and not demoted.all():
        floor = float(scores[~demoted].min())
        shift = float(scores[demoted].max()) - floor + 1.0
        scores[demoted] -= shift
    return scores


def has_ties(scores: FloatArray) -> bool:
    """Whether any two items score the same."""
    return bool(np.unique(np.asarray(scores, dtype=np.float64)).shape[0] < len(scores))


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
        dup_relative: the same with the threshold given as a fraction of the pool's median
            nearest-neighbour distance (`median_neighbour_distance`), which fits any
            embedding; `dup_threshold` wins when both are set.
        metric: "l2" or "cosine" for every embedding distance.
        audit_share: in [0, 0.9]; with `pool.split_keys`, the images whose key is below it
            are the audit slice: the strategy never ranks them, and they take every
            (1 / audit_share)-th place of the order, in key order (a random order), so that
            a steady, unbiased share of what annotators label can measure the model.
            0 (default) turns it off.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        seed: Seed = 0,
        n_clusters: int = 8,
        dup_threshold: float | None = None,
        dup_relative: float | None = None,
        metric: Metric = "l2",
        audit_share: float = 0.0,
    ) -> None:
        self.seed = check_seed(seed)
        self.n_clusters = check_integer("n_clusters", n_clusters, low=1)
        self.dup_threshold = (
            None if dup_threshold is None else check_number("dup_threshold", dup_threshold, low=0.0)
        )
        self.dup_relative = (
            None if dup_relative is None else check_number("dup_relative", dup_relative, low=0.0)
        )
        self.metric = cast(Metric, check_choice("metric", metric, METRICS))
        self.audit_share = check_number("audit_share", audit_share, low=0.0, high=0.9)

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
        b = min(check_integer("batch_size", batch_size, low=0), pool.n)
        if pool.n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Selection(empty, np.zeros(0), empty.copy(), 0, self.name)
        audit = self._audit_slice(pool)
        if audit is None:
            order, scores, details = self._ranked(pool, b)
        else:
            order, scores, details = self._with_audit(pool, b, audit)
        clusters = kmeans_clusters(
            pool.embeddings, self.n_clusters, seed=self._int_seed(), metric=self.metric
        )
        return Selection(order, scores, clusters, b, self.name, details)

    def _ranked(self, pool: Pool, b: int) -> tuple[IntArray, FloatArray, dict[str, FloatArray]]:
        """The strategy's own order, scores and details, near-duplicates demoted if asked."""
        ranking = self._rank(pool, b)
        order, scores = ranking.order.astype(np.int64), ranking.scores.astype(np.float64)
        details = dict(ranking.details)
        threshold = self.dup_threshold
        if threshold is None and self.dup_relative is not None:
            threshold = self.dup_relative * median_neighbour_distance(
                pool.embeddings, metric=self.metric
            )
        if threshold is not None:
            order, demoted = demote_near_duplicates(
                order, pool.embeddings, threshold, labeled=pool.labeled, keep=b, metric=self.metric
            )
            scores = _below_the_rest(scores, demoted)
            details["near_duplicate"] = demoted.astype(np.float64)
        if pool.duplicate_groups is not None:
            order, grouped = demote_duplicate_groups(
                order, pool.duplicate_groups, pool.labeled_groups
            )
            scores = _below_the_rest(scores, grouped)
            details["duplicate_group"] = grouped.astype(np.float64)
        # Guarantee scores[order] is non-increasing (only float rounding can break it).
        scores[order] = np.minimum.accumulate(scores[order])
        return order, scores, details

    def _audit_slice(self, pool: Pool) -> BoolArray | None:
        """(n,) True for the audit slice's images; None when there is no slice to serve."""
        if self.audit_share <= 0 or pool.split_keys is None:
            return None
        audit = pool.split_keys < self.audit_share
        return audit if audit.any() and not audit.all() else None

    def _with_audit(
        self, pool: Pool, b: int, audit: BoolArray
    ) -> tuple[IntArray, FloatArray, dict[str, FloatArray]]:
        """The strategy ranks the rest; the audit images fill their places (`audit_places`)."""
        assert pool.split_keys is not None  # _audit_slice checked it
        is_place = audit_places(pool.n, self.audit_share)
        rest = np.flatnonzero(~audit)
        sub_order, _, sub_details = self._ranked(pool.subset(~audit), int((~is_place[:b]).sum()))
        audited = np.flatnonzero(audit)
        audit_order = audited[np.argsort(pool.split_keys[audited], kind="stable")]
        order = fill_places(is_place, audit_order, rest[sub_order])
        details = {"audit": audit.astype(np.float64)}
        for name, values in sub_details.items():
            full = np.zeros(pool.n, dtype=np.float64)
            full[rest] = values
            details[name] = full
        return order, rank_scores(order), details

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


class ScoreStrategy(Strategy):
    """A strategy that is a per-image score; order = descending score.

    Ties (e.g. every image "nothing detected" under a cold model) are broken by k-center
    diversity over the labeled set and the picks so far, never by the pool's (import) order.

    Args:
        per_second: rank by score per predicted annotator second (`pool.seconds`, when the
            pool has them): what an image teaches against what it costs to label.
        flip: weight in [0, 1] of flip disagreement (`pool.flip_disagreement`, required when
            > 0) against the score: the two are blended by rank, (1 - flip) * score rank +
            flip * disagreement rank, so neither one's scale decides (default 0, off).
        (plus the shared `Strategy` parameters)
    """

    detail_name: ClassVar[str] = "uncertainty"

    def __init__(self, *, per_second: bool = False, flip: float = 0.0, **common: Any) -> None:
        super().__init__(**common)
        if not isinstance(per_second, bool):
            raise ValueError(f"per_second must be true or false, got {per_second!r}")
        self.per_second = per_second
        self.flip = check_number("flip", flip, low=0.0, high=1.0)

    @abstractmethod
    def score(self, pool: Pool) -> FloatArray:
        """(n,) float64 finite per-image scores, higher = label sooner."""

    def value(self, pool: Pool) -> FloatArray:
        """What the order follows: the score (blended with flip disagreement when `flip`
        > 0), or that per predicted second."""
        scores = self.score(pool)
        if self.flip > 0:
            if pool.flip_disagreement is None:
                raise ValueError("flip > 0 needs the pool's flip_disagreement")
            mixed = (1.0 - self.flip) * tied_positions(scores) + self.flip * tied_positions(
                pool.flip_disagreement
            )
            scores = 1.0 - mixed / max(pool.n - 1, 1)
        if self.per_second and pool.seconds is not None:
            return scores / pool.seconds
        return scores

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        scores = self.value(pool)
        tiebreak = None
        if has_ties(scores):
            tiebreak = positions(KCenter(metric=self.metric).diversity_ranking(pool, batch_size)[0])
        return Ranking(order_by_score(scores, tiebreak), scores, {self.detail_name: scores})


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
        self.aggregate = cast(Aggregation, check_choice("aggregate", aggregate, AGGREGATIONS))
        self.floor = check_number("floor", floor, low=0.0, high=1.0)
        self.empty_score = check_number("empty_score", empty_score)
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
        self.variant = cast(EntropyVariant, check_choice("variant", variant, ENTROPY_VARIANTS))


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
        self.floor = check_number("floor", floor, low=0.0, high=1.0)
        self.empty_score = check_number("empty_score", empty_score)

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
        self.alpha = check_number("alpha", alpha, low=0.0, low_open=True)
        self.upper = check_number("upper", upper, low=0.0)
        self.floor = check_number("floor", floor, low=0.0, high=1.0)
        self.empty_score = check_number("empty_score", empty_score)

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
        self.shortlist = check_integer("shortlist", shortlist, low=1)

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


# ---------------------------------------------------------------------------- building
# The score strategies by name: the choices for a hybrid's `uncertainty`; the registry
# lists them too.
SCORE_STRATEGIES: Mapping[str, type[ScoreStrategy]] = MappingProxyType(
    {cls.name: cls for cls in (LeastConfidence, Margin, Entropy, DUA, DCUS)}
)

_COMMON_PARAMS = tuple(inspect.signature(Strategy.__init__).parameters)[1:]


def accepted_params(cls: type[Strategy]) -> tuple[str, ...]:
    """Keyword parameters `cls` accepts: its own (subclass first), then the shared ones."""
    own: list[str] = []
    for klass in cls.__mro__:
        if klass is Strategy or not issubclass(klass, Strategy):
            continue
        for pname, param in inspect.signature(klass.__init__).parameters.items():
            if pname != "self" and param.kind is param.KEYWORD_ONLY and pname not in own:
                own.append(pname)
    return tuple(own) + tuple(p for p in _COMMON_PARAMS if p not in own)


def build_strategy(cls: type[S], params: Mapping[str, Any]) -> S:
    """`cls(**params)` after checking the parameter names.

    Raises:
        ValueError: unknown parameter (the message lists the accepted ones) or a bad
            parameter value.
    """
    accepted = accepted_params(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {cls.name!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(**params)
