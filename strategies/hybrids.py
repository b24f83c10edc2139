"""Hybrid strategies: an uncertainty score combined with k-center diversity.

`UncertaintyThenKCenter` ("prefilter") runs k-center on the most uncertain items;
`RankMix` ("hybrid") blends the uncertainty and k-center ranks. Both take their
uncertainty part as the name of a score strategy (a key of `SCORE_STRATEGIES`) or as
a `ScoreStrategy` instance. Higher score = label sooner, as everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from strategies.checks import check_choice, check_integer, check_number
from strategies.diversity import DEFAULT_SHORTLIST, kcenter_greedy
from strategies.pool import Pool
from strategies.selection import (
    SCORE_STRATEGIES,
    KCenter,
    Ranking,
    ScoreStrategy,
    Strategy,
    build_strategy,
    order_by_score,
    positions,
    rank_scores,
    tied_positions,
)


def _uncertainty_component(
    uncertainty: str | ScoreStrategy, params: Mapping[str, Any] | None
) -> ScoreStrategy:
    """Resolve a hybrid's uncertainty part from a score-strategy name (+ params) or an instance."""
    if isinstance(uncertainty, ScoreStrategy):
        if params:
            raise ValueError("uncertainty_params only apply when uncertainty is a name")
        return uncertainty
    name = check_choice("uncertainty", uncertainty, tuple(SCORE_STRATEGIES))
    return build_strategy(SCORE_STRATEGIES[name], dict(params or {}))


class UncertaintyThenKCenter(Strategy):
    """Hybrid (a): keep the top `factor * B` items by uncertainty, then k-center picks B.

    The batch is the k-center picks among the pre-filtered items (diverse among the
    uncertain). All other items follow by descending uncertainty. Scores = 1 - rank / n.

    Args:
        factor: pre-filter size as a multiple k of the batch size, >= 1 (default 4).
        uncertainty: name of a score strategy (default "entropy") or an instance.
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
        self.factor = check_number("factor", factor, low=1.0)
        self.uncertainty = _uncertainty_component(uncertainty, uncertainty_params)
        self.shortlist = check_integer("shortlist", shortlist, low=1)

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        u_scores = self.uncertainty.value(pool)
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
    (`KCenter` with the same batch size). Equal uncertainty scores share their mean rank;
    ties go to the better uncertainty rank, then to the better diversity rank, so lam = 1
    reproduces the uncertainty order (its ties broken by diversity) and lam = 0 the k-center
    order exactly.
    Scores = 1 - mixed_rank / (n - 1), in [0, 1].

    Args:
        lam: weight of uncertainty in [0, 1] (default 0.5).
        uncertainty: name of a score strategy (default "entropy") or an instance.
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
        self.lam = check_number("lam", lam, low=0.0, high=1.0)
        self.uncertainty = _uncertainty_component(uncertainty, uncertainty_params)
        self.shortlist = check_integer("shortlist", shortlist, low=1)

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        n = pool.n
        u_scores = self.uncertainty.value(pool)
        u_rank = tied_positions(u_scores)
        diversity = KCenter(shortlist=self.shortlist, metric=self.metric)
        d_order, d_scores = diversity.diversity_ranking(pool, batch_size)
        d_rank = positions(d_order)
        mixed = self.lam * u_rank + (1.0 - self.lam) * d_rank
        order = np.lexsort((d_rank, u_rank, mixed)).astype(np.int64)
        scores = 1.0 - mixed / max(n - 1, 1)
        return Ranking(order, scores, {"uncertainty": u_scores, "diversity": d_scores})
