"""The project encoder's versions under MODEL_DIR: trained when first needed, retrained when
the project has grown, each with its calibrated near-duplicate thresholds.

A version `eN` is three files in the project's encoder folder (`backend.layout`): `eN.pt`
(the weights), `eN.json` (how it was trained, the threshold) and `eN.faiss` (its embeddings
by task id). The newest complete version is the live one; a new one removes the older files.
Weights and meta are written atomically, meta last, so a crash leaves the older version live.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.encoder.contrastive import Encoder, U8Array, reshot, train_encoder
from backend.files import atomic_write
from strategies import (
    DuplicateThresholds,
    aligned_correlation,
    detail,
    grey_thumbnails,
    worst_block_change,
)

logger = logging.getLogger(__name__)

REFRESH_GROWTH = 0.5  # retrain once the project has this share more images than trained on
MIN_IMAGES = 8  # fewer images: no encoder (nothing to learn, nothing to pick)
DUPLICATE_MARGIN = 0.05  # below the 1st percentile of the known copies' correlation
CHANGE_QUANTILE = 0.99  # of the known copies' worst block change: the most a pair may show
_CALIBRATION_SAMPLE = 256  # images whose re-shot copies calibrate the threshold
_VERSION = re.compile(r"^e(\d+)\.json$")


@dataclass(frozen=True)
class EncoderVersion:
    """A trained encoder, what it was trained on and its near-duplicate threshold."""

    name: str
    encoder: Encoder
    meta: dict[str, Any]

    @property
    def duplicate_thresholds(self) -> DuplicateThresholds:
        """See `strategies.duplicates.duplicate_groups`."""
        return parse_thresholds(self.meta["duplicate_thresholds"])

    def index_path(self, folder: Path) -> Path:
        return folder / f"{self.name}.faiss"


def duplicate_thresholds(thumbs: U8Array, seed: int = 0) -> DuplicateThresholds:
    """The near-duplicate thresholds calibrated on known near-duplicates: re-shot copies
    (`reshot`) of up to 256 of the project's own images. The correlations' (whole grey picture,
    its detail) are their 1st percentile less DUPLICATE_MARGIN; the worst block change's, its
    CHANGE_QUANTILE (measured on the benchmark's pools, no margin: a margin let through frames
    an object had left)."""
    rng = np.random.default_rng(seed)
    sample = thumbs[rng.permutation(len(thumbs))[:_CALIBRATION_SAMPLE]]
    greys = grey_thumbnails(np.concatenate([sample, reshot(sample, seed)]))
    fine = detail(greys)
    n = len(sample)
    pairs = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1).astype(np.int64)
    return DuplicateThresholds(
        whole=float(np.quantile(aligned_correlation(greys, pairs), 0.01)) - DUPLICATE_MARGIN,
        detail=float(np.quantile(aligned_correlation(fine, pairs), 0.01)) - DUPLICATE_MARGIN,
        change=float(np.quantile(worst_block_change(fine, pairs), CHANGE_QUANTILE)),
    )


def parse_thresholds(raw: Any) -> DuplicateThresholds:
    """A version's stored thresholds; ValueError for a version calibrated before the change
    check (it is then trained anew)."""
    if not isinstance(raw, dict) or set(raw) != {"whole", "detail", "change"}:
        raise ValueError(f"near-duplicate thresholds {raw!r} are not whole, detail and change")
    return DuplicateThresholds(**{key: float(value) for key, value in raw.items()})


def live_encoder(folder: Path) -> EncoderVersion | None:
    """The newest complete version in `folder`, or None."""
    numbers = sorted(
        (int(m.group(1)) for p in folder.glob("e*.json") if (m := _VERSION.match(p.name))),
        reverse=True,
    )
    for number in numbers:
        name = f"e{number}"
        try:
            meta = json.loads((folder / f"{name}.json").read_text())
            parse_thresholds(meta.get("duplicate_thresholds"))
            encoder = Encoder()
            state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
            encoder.load_state_dict(state)
        except (OSError, ValueError, RuntimeError) as exc:
            logger.warning("encoder %s in %s unreadable (%s); skipped", name, folder, exc)
            continue
        return EncoderVersion(name, encoder.eval(), meta)
    return None


def is_stale(version: EncoderVersion, n_images: int) -> bool:
    """Whether the project has grown enough since `version` was trained to train anew."""
    return n_images > (1 + REFRESH_GROWTH) * int(version.meta["images"])


def train_version(
    folder: Path, thumbs: U8Array, *, seconds: float, seed: int = 0
) -> EncoderVersion:
    """Train a new version on `thumbs` within `seconds`, store it and make it live."""
    current = live_encoder(folder)
    number = 1 + (int(current.name[1:]) if current is not None else 0)
    name = f"e{number}"
    encoder, report = train_encoder(thumbs, seconds=seconds, seed=seed)
    started = time.perf_counter()
    thresholds = duplicate_thresholds(thumbs, seed)
    meta = {
        **asdict(report),
        "version": name,
        "duplicate_thresholds": asdict(thresholds),
        "calibration_seconds": time.perf_counter() - started,
        "created_at": time.time(),
    }
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    atomic_write(folder / f"{name}.pt", buffer.getvalue())
    atomic_write(folder / f"{name}.json", json.dumps(meta, indent=1).encode())
    for old in folder.glob("e*.*"):
        if old.stem != name and re.fullmatch(r"e\d+", old.stem):
            old.unlink(missing_ok=True)
    logger.info(
        "encoder %s trained on %d images in %.0fs (%d steps, loss %.2f -> %.2f); "
        "near-duplicate thresholds whole %.3f, detail %.3f, change %.3f",
        name,
        report.images,
        report.seconds,
        report.steps,
        report.loss_first,
        report.loss_last,
        thresholds.whole,
        thresholds.detail,
        thresholds.change,
    )
    return EncoderVersion(name, encoder, meta)
