"""The benchmark's command line: `python -m benchmarks.label_efficiency [--quick|--medium]`.

Parses the options into a `BenchConfig` (a preset, then any explicit option), then runs the
benchmark (`runner.run_benchmark`) or, with --summarise, only rebuilds the outputs from a
saved result; prints the markdown report either way. The only module here that reads the
environment or configures logging.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from backend.config import Settings
from backend.logs import configure_logging
from benchmarks.label_efficiency.config import SCENARIOS, BenchConfig, all_strategies
from benchmarks.label_efficiency.report import markdown_report, resummarise
from benchmarks.label_efficiency.runner import run_benchmark

DESCRIPTION = (
    "Label-efficiency benchmark v2: how many annotator seconds does the queue save, against "
    "random order, static pre-annotation and manual labeling, on three kinds of pool?"
)
PRESETS = {"quick": BenchConfig.quick, "medium": BenchConfig.medium, "full": BenchConfig.full}


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE, the value read as JSON when it is JSON (false, 0.5), else as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def add_param_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--param KEY=VALUE`, repeatable, into `args.param` as (key, value) pairs."""
    parser.add_argument(
        "--param", action="append", type=key_value, default=[], metavar="KEY=VALUE", help=help_text
    )


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    """NAME:KEY=VALUE[,KEY=VALUE...]."""
    name, sep, options = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:KEY=VALUE[,...], got {text!r}")
    return name.strip(), dict(key_value(part) for part in options.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.label_efficiency", description=DESCRIPTION
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke test, about 3 minutes (CI)")
    size.add_argument(
        "--medium", action="store_true", help="one scenario, random vs queue (<= 15 minutes)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/label-efficiency-v2"),
        help="folder for results.json, summary.json, results.md and one PNG per scenario",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep data and models here, and reuse its reference models"
    )
    parser.add_argument("--scenarios", type=_csv, help=f"comma-separated of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--strategies", type=_csv, help=f"comma-separated (default: {','.join(all_strategies())})"
    )
    parser.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    parser.add_argument(
        "--converged-seeds",
        type=int,
        help="how many of the seeds also run the converged recipe (0: none)",
    )
    parser.add_argument("--pool", type=int, help="pool images per scenario")
    parser.add_argument(
        "--budgets",
        type=lambda t: tuple(int(v) for v in _csv(t)),
        help="labeled images after each cycle, the seed set first (e.g. 16,32,64,128)",
    )
    parser.add_argument("--epochs", type=int, help="epochs per product-recipe run")
    parser.add_argument(
        "--encoder-seconds",
        type=float,
        help="training budget of the encoder each unit trains on its pool (cold start)",
    )
    parser.add_argument(
        "--jobs", type=int, help="parallel processes (each gets cores / jobs torch threads)"
    )
    parser.add_argument("--device", help="cpu (default) or cuda")
    add_param_option(
        parser,
        "an ML backend extra param for every simulated project (al_* queue or train_* "
        "recipe option, e.g. al_audit=false or train_patience=0); repeatable",
    )
    parser.add_argument(
        "--summarise",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only rebuild the outputs from results.json or partial.json files (no training); "
        "runs of different scenarios are merged into one report",
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=_variant,
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="an ablation arm: the default strategy with these extra params, e.g. "
        "no-audit:al_audit=false; repeatable",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[BenchConfig, str]:
    """The preset with any explicit option applied; ValueError if the result is invalid."""
    mode = "quick" if args.quick else "medium" if args.medium else "full"
    config = PRESETS[mode]()
    changes: dict[str, Any] = {}
    for attr, value in (
        ("scenarios", args.scenarios),
        ("strategies", args.strategies),
        ("n_pool", args.pool),
        ("budgets", args.budgets),
        ("epochs", args.epochs),
        ("encoder_seconds", args.encoder_seconds),
        ("converged_seeds", args.converged_seeds),
        ("jobs", args.jobs),
        ("device", args.device),
    ):
        if value is not None:
            changes[attr] = value
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    if args.param:
        changes["extra_params"] = dict(args.param)
    if args.variant:
        changes["variants"] = dict(args.variant)
    if "strategies" in changes:
        kept = tuple(s for s in config.converged_strategies if s in changes["strategies"])
        changes["converged_strategies"] = kept
    custom = set(changes) - {"jobs", "device"}  # these change the speed, not the result
    return replace(config, **changes), (f"{mode} (custom)" if custom else mode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper())
    if args.summarise is not None:
        print(markdown_report(resummarise(args.summarise, args.out)))
        return 0
    try:
        config, mode = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    result = run_benchmark(config, Settings.from_env(), args.out, workdir=args.workdir, mode=mode)
    print(markdown_report(result))
    print(f"wrote {args.out} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
