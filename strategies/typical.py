"""TypiClust: cold-start picks that cover the pool with its most typical images.

Why: with no useful model, uncertainty is noise and k-center greedy picks outliers (the
images farthest from everything), which teach a first model little. TypiClust (Hacohen,
Dekel and Weinshall, ICML 2022) clusters the pool into as many clusters as there will be
labeled images and labels the most typical image (densest neighbourhood) of each cluster,
largest clusters first: the first labels cover the data instead of repeating or missing it.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from strategies.checks import check_integer
from strategies.diversity import kmeans_clusters, prepare_embeddings
from strategies.pool import Float32Array, FloatArray, IntArray, Pool
from strategies.selection import Ranking, Strategy, rank_scores

DEFAULT_NEIGHBOURS = 20
_KMEANS_RUNS = 5  # a cold start's clusters are its whole batch: worth a few k-means runs


def typicality(x: Float32Array, neighbours: int = DEFAULT_NEIGHBOURS) -> FloatArray:
    """(n,) 1 / (mean distance to the `neighbours` nearest other rows): higher = denser."""
    n = x.shape[0]
    k = min(neighbours, n - 1)
    if k < 1:
        return np.ones(n, dtype=np.float64)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    squared, _ = index.search(x, k + 1)
    mean = np.sqrt(np.maximum(squared[:, 1:], 0.0)).mean(axis=1, dtype=np.float64)
    return 1.0 / (mean + 1e-12)


class TypiClust(Strategy):
    """k-means into (labeled + batch) clusters over the pool and the labeled images; the most
    typical unlabeled image of each cluster without a labeled image, largest cluster first,
    is the batch. The rest of the order continues round by round: each cluster's next most
    typical image, clusters in the same order (those holding labeled images last).

    Args:
        neighbours: neighbours of the typicality estimate (the paper's 20).
    """

    name = "typiclust"

    def __init__(self, *, neighbours: int = DEFAULT_NEIGHBOURS, **common: Any) -> None:
        super().__init__(**common)
        self.neighbours = check_integer("neighbours", neighbours, low=1)

    def _rank(self, pool: Pool, batch_size: int) -> Ranking:
        n = pool.n
        everything = prepare_embeddings(
            np.concatenate([pool.embeddings, pool.labeled]), self.metric, "embeddings"
        )
        k = max(1, min(batch_size + pool.labeled.shape[0], everything.shape[0]))
        clusters = kmeans_clusters(
            everything, k, seed=self._int_seed(), metric=self.metric, nredo=_KMEANS_RUNS
        )
        typical = typicality(everything, self.neighbours)[:n]
        pool_clusters = clusters[:n]
        sizes = np.bincount(clusters)
        has_labeled = np.zeros(sizes.shape[0], dtype=bool)
        has_labeled[clusters[n:]] = True
        cluster_rank = np.empty(sizes.shape[0], dtype=np.int64)
        cluster_rank[np.lexsort((-sizes, has_labeled))] = np.arange(sizes.shape[0])
        by_typicality = np.lexsort((-typical, pool_clusters))  # clusters, densest first
        within = np.empty(n, dtype=np.int64)
        starts = np.searchsorted(pool_clusters[by_typicality], np.arange(sizes.shape[0]))
        within[by_typicality] = np.arange(n) - starts[pool_clusters[by_typicality]]
        order: IntArray = np.lexsort((cluster_rank[pool_clusters], within)).astype(np.int64)
        return Ranking(order, rank_scores(order), {"typicality": typical})
