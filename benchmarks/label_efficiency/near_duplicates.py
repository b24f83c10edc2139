"""Near-duplicate groups against the pools' known duplicates, alone (no detector training).

The label-efficiency run records the same figures per unit (`coldstart.PoolEncoding.record`)
among an hour of training; this measures only them, in minutes: for each scenario's pool
(the benchmark's, same sizes) and each seed, the product's encoder is trained on the pool's
thumbnails for `--encoder-seconds`, the pool is grouped (`strategies.duplicate_groups` with
the calibrated thresholds) and its pairs are compared with `digits_data.known_duplicates`.

    python -m benchmarks.label_efficiency.near_duplicates [--seeds 3] [--encoder-seconds 60]
        [--scenarios scenes,streams,long_tail] [--workdir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backend.labelstudio.images import LoadedImage
from backend.logs import configure_logging
from benchmarks.label_efficiency.coldstart import encode_pool
from benchmarks.label_efficiency.config import SCENARIOS, BenchConfig, scenario_data
from benchmarks.label_efficiency.digits_data import generate, known_duplicates


def measure(
    scenarios: tuple[str, ...], seeds: int, encoder_seconds: float, workdir: Path
) -> dict[str, Any]:
    """Per scenario: each seed's near-duplicate record and the seeds' mean precision/recall."""
    config = BenchConfig()
    out: dict[str, Any] = {}
    for name in scenarios:
        dataset = generate(
            workdir / "data" / name, scenario_data(name, config.n_pool, config.n_test)
        )
        samples = dataset.splits["pool"]
        images = []
        for sample in samples:
            rgb = np.asarray(Image.open(dataset.root / sample.file).convert("RGB"))
            pixels = np.ascontiguousarray(rgb[..., ::-1])  # BGR, as the product's loader gives
            images.append(LoadedImage(pixels, pixels.shape[1], pixels.shape[0]))
        truth = known_duplicates(samples)
        runs = []
        for seed in range(seeds):
            encoding = encode_pool(images, workdir / f"{name}-{seed}", encoder_seconds, seed)
            runs.append(encoding.record(truth)["near_duplicates"])
            print(name, seed, json.dumps(runs[-1]), flush=True)
        out[name] = {
            "precision": float(np.mean([r["precision"] for r in runs])),
            "recall": float(np.mean([r["recall"] for r in runs])),
            "seeds": runs,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--encoder-seconds", type=float, default=60.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--workdir", type=Path, help="keep data and encoders here")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown or not scenarios or args.seeds < 1:
        parser.error(f"--scenarios from {', '.join(SCENARIOS)}; --seeds >= 1 (got {unknown})")
    configure_logging("WARNING")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="near-duplicates-"))
    figures = measure(scenarios, args.seeds, args.encoder_seconds, workdir)
    for name, entry in figures.items():
        print(f"{name}: precision {entry['precision']:.3f}, recall {entry['recall']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
