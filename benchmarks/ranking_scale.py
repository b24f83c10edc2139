"""Scale benchmark: k-center greedy selection, strategies' FAISS version vs plain numpy.

For each pool size the script generates synthetic float32 embeddings (seeded), a labeled set
of `--labeled-fraction` of the pool size, and runs k-center greedy for `--batch` picks with:

- faiss: `strategies.kcenter_greedy` (FAISS for the nearest-labeled distances and batched
  refreshes, lazily evaluated running min-distance array);
- numpy: the straightforward reference in this file (nearest-labeled distances from chunked
  full distance matrices, then one `np.linalg.norm(x - x[pick], axis=1)` update of the running
  minimum per pick).

Each implementation runs in its own fresh process (spawn) that regenerates the same data
from the seed, so the memory figure is clean: peak RSS growth during the run, i.e. the
`resource.getrusage(RUSAGE_SELF).ru_maxrss` delta (high-water mark after the run minus
before it; data is generated before, in chunks, so the mark then is the data's footprint,
within ~16 MiB). It counts FAISS's C++ buffers too, unlike tracemalloc. Time is wall clock
(`time.perf_counter`). The picks of both are compared; where they diverge, the script
reports how close (exactly, in float64) the two competing distances were.

Example:
    python -m benchmarks.ranking_scale --sizes 10000 100000 --dim 256 --batch 1000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class RunResult:
    """One implementation on one pool size."""

    picks: list[int]
    seconds: float
    peak_rss_delta_mib: float
    threads: int


def make_data(
    size: int, dim: int, labeled_fraction: float, kind: str, seed: int
) -> tuple[F32, F32]:
    """Synthetic (pool (size, dim), labeled (m, dim)) float32 embeddings.

    "blobs": 64 Gaussian clusters (centres ~ N(0, 4 I), points ~ centre + N(0, I)), like
    class-structured image embeddings. "gaussian": isotropic N(0, I), no structure.
    """
    rng = np.random.default_rng(seed)
    m = int(np.ceil(labeled_fraction * size))
    centres = 2.0 * rng.standard_normal((64, dim), dtype=np.float32)
    pool = np.empty((size, dim), dtype=np.float32)
    labeled = np.empty((m, dim), dtype=np.float32)
    # Filled in chunks so generation leaves no large temporaries: the process's RSS
    # high-water mark after generation is then close to its current RSS (see _worker).
    for out in (pool, labeled):
        for start in range(0, out.shape[0], 8192):
            block = out[start : start + 8192]
            rng.standard_normal(block.shape, dtype=np.float32, out=block)
            if kind == "blobs":
                block += centres[rng.integers(0, 64, block.shape[0])]
    return pool, labeled


def numpy_kcenter(x: F32, labeled: F32, batch: int, chunk: int = 2048) -> list[int]:
    """Reference k-center greedy in plain numpy (same pick rule as strategies.kcenter_greedy).

    Pick = argmax of the running min distance (lowest index on ties); with no labeled items
    the first pick is the item nearest to the pool mean.
    """
    n = x.shape[0]
    min_dist = np.full(n, np.inf, dtype=np.float32)
    if labeled.shape[0]:
        lab_sq = (labeled * labeled).sum(axis=1)
        for start in range(0, n, chunk):
            block = x[start : start + chunk]
            sq = (block * block).sum(axis=1)[:, None] - 2.0 * block @ labeled.T + lab_sq[None, :]
            min_dist[start : start + chunk] = np.sqrt(np.maximum(sq, 0.0)).min(axis=1)
    picks: list[int] = []
    for t in range(min(batch, n)):
        if t == 0 and labeled.shape[0] == 0:
            centre = x.mean(axis=0, dtype=np.float64).astype(np.float32)
            item = int(np.argmin(np.linalg.norm(x - centre, axis=1)))
        else:
            item = int(np.argmax(min_dist))
        picks.append(item)
        min_dist = np.minimum(min_dist, np.linalg.norm(x - x[item], axis=1))
        min_dist[item] = -np.inf
    return picks


def _worker(impl: str, size: int, args: argparse.Namespace) -> RunResult:
    """Runs in a fresh process: make data, run one implementation, measure."""
    import faiss

    from strategies import kcenter_greedy

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    pool, labeled = make_data(size, args.dim, args.labeled_fraction, args.data, args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if impl == "faiss":
        picks = kcenter_greedy(pool, args.batch, labeled).picks.tolist()
    else:
        picks = numpy_kcenter(pool, labeled, args.batch)
    seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return RunResult(picks, seconds, (rss_after - rss_before) / 1024.0, faiss.omp_get_max_threads())


def _run(impl: str, size: int, args: argparse.Namespace) -> RunResult:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as executor:
        return executor.submit(_worker, impl, size, args).result()


def _agreement(a: list[int], b: list[int], size: int, args: argparse.Namespace) -> str:
    """Compare two pick sequences; at the first divergence, say how close the tie was.

    The gap is computed exactly (float64) from regenerated data: both candidates' distance
    to the labeled set + the common prefix of picks, relative to the larger one.
    """
    same_prefix = next((i for i, (p, q) in enumerate(zip(a, b, strict=True)) if p != q), len(a))
    overlap = len(set(a) & set(b)) / max(len(a), 1)
    if same_prefix == len(a):
        return "identical picks, same order"
    pool, labeled = make_data(size, args.dim, args.labeled_fraction, args.data, args.seed)
    centres = np.concatenate([labeled, pool[a[:same_prefix]]]).astype(np.float64)
    gaps = []
    for item in (a[same_prefix], b[same_prefix]):
        diff = centres - pool[item].astype(np.float64)
        gaps.append(float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min())) if len(diff) else 0.0)
    rel = abs(gaps[0] - gaps[1]) / max(max(gaps), 1e-300)
    return (
        f"same first {same_prefix} picks, then a near-tie (exact distances differ by "
        f"{rel:.1e} relative); set overlap {overlap:.1%}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time k-center greedy selection: strategies (FAISS) vs a numpy reference.",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="pool sizes to run (default: 10000 100000)",
    )
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension (default: 256)")
    parser.add_argument("--batch", type=int, default=1000, help="number of picks (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")
    parser.add_argument(
        "--labeled-fraction",
        type=float,
        default=0.01,
        help="labeled set size as a fraction of the pool size (default: 0.01)",
    )
    parser.add_argument(
        "--data",
        choices=("blobs", "gaussian"),
        default="blobs",
        help="synthetic embedding distribution (default: blobs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="FAISS OpenMP threads; 0 keeps FAISS's default (default: 0)",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the numpy reference (time the FAISS version only)",
    )
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.sizes) or args.dim < 1 or args.batch < 0:
        parser.error("sizes and dim must be >= 1, batch >= 0")
    if not 0 <= args.labeled_fraction <= 1:
        parser.error("--labeled-fraction must lie in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"k-center greedy: dim={args.dim} batch={args.batch} data={args.data} "
        f"labeled={args.labeled_fraction:.2%} seed={args.seed} cpus={os.cpu_count()}"
    )
    print("time = wall clock; mem = peak RSS growth during the run (ru_maxrss delta, MiB)")
    for size in args.sizes:
        fast = _run("faiss", size, args)
        line = (
            f"n={size:>7}  faiss: {fast.seconds:7.2f} s {fast.peak_rss_delta_mib:7.1f} MiB"
            f" (omp threads {fast.threads})"
        )
        if not args.no_reference:
            ref = _run("numpy", size, args)
            ratio = ref.seconds / max(fast.seconds, 1e-9)
            line += (
                f" | numpy: {ref.seconds:7.2f} s {ref.peak_rss_delta_mib:7.1f} MiB"
                f" | speed-up {ratio:5.1f}x | {_agreement(fast.picks, ref.picks, size, args)}"
            )
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
