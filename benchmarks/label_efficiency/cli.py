"""The benchmark's command line: `python -m benchmarks.label_efficiency [--quick] ...`.

Parses the options into a `BenchConfig` (the --quick or full preset, then any explicit
option), then either runs the benchmark (`simulation.run_benchmark`) or, with --summarise,
only rebuilds the report from a saved result (`report.resummarise`); prints the markdown
table either way. The only module here that reads the environment or configures logging.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.logs import configure_logging
from benchmarks.label_efficiency.config import STRATEGIES, BenchConfig
from benchmarks.label_efficiency.report import markdown_report, resummarise
from benchmarks.label_efficiency.simulation import run_benchmark
from strategies import get_strategy

DESCRIPTION = (
    "Label-efficiency benchmark: does the active-learning queue save labels, and how many?"
)


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
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.label_efficiency", description=DESCRIPTION
    )
    _add_arguments(parser)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(args.log_level.upper())
    return _handler(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
