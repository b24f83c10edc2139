"""Pure active-learning scoring and selection (numpy + FAISS only, no I/O)."""

from strategies.diversity import (
    KCenterResult,
    demote_near_duplicates,
    kcenter_greedy,
    kcenter_ranking,
    kmeans_clusters,
    near_duplicate_groups,
    near_duplicate_pairs,
)
from strategies.duplicates import aligned_correlation, detail, duplicate_groups, grey_thumbnails
from strategies.hybrids import RankMix, UncertaintyThenKCenter
from strategies.pool import Pool, Selection
from strategies.registry import available_strategies, get_strategy, strategy_params
from strategies.selection import (
    DCUS,
    DUA,
    Entropy,
    KCenter,
    LeastConfidence,
    Margin,
    RandomStrategy,
    ScoreStrategy,
    Strategy,
)
from strategies.typical import TypiClust, typicality
from strategies.uncertainty import (
    aggregate,
    binary_entropy,
    box_uncertainty,
    dcus_image_scores,
    dcus_weights,
    dua_image_scores,
    dua_weights,
    entropy,
    image_uncertainty,
    least_confidence,
    margin,
)

__all__ = [
    "DCUS",
    "DUA",
    "Entropy",
    "KCenter",
    "KCenterResult",
    "LeastConfidence",
    "Margin",
    "Pool",
    "RandomStrategy",
    "RankMix",
    "ScoreStrategy",
    "Selection",
    "Strategy",
    "TypiClust",
    "UncertaintyThenKCenter",
    "aggregate",
    "aligned_correlation",
    "available_strategies",
    "binary_entropy",
    "box_uncertainty",
    "dcus_image_scores",
    "dcus_weights",
    "detail",
    "demote_near_duplicates",
    "dua_image_scores",
    "duplicate_groups",
    "dua_weights",
    "entropy",
    "get_strategy",
    "grey_thumbnails",
    "image_uncertainty",
    "kcenter_greedy",
    "kcenter_ranking",
    "kmeans_clusters",
    "least_confidence",
    "margin",
    "near_duplicate_groups",
    "near_duplicate_pairs",
    "strategy_params",
    "typicality",
]
