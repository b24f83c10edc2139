"""The detector's own backbone, pretrained on a project's unlabeled images (SimCLR).

Why: a project without MODEL_PATH starts its first detector from random weights, and a few
dozen labeled images teach a random backbone little. The backbone's layers (the `backbone`
part of the architecture's yaml) learn first from every image of the project, labeled or not,
by the project encoder's contrastive recipe (`contrastive.train_contrastive`); the first
fine-tune then starts from them, with the neck and head still random.

The features the contrastive head sees are the globally pooled outputs of the backbone layers
the neck reads (P3, P4 and P5 for YOLO11), so every scale the detector uses is trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from backend.encoder.contrastive import TrainReport, projection_head, train_contrastive
from backend.files import atomic_write

_BATCH = 64


class BackboneFeatures(nn.Module):
    """A DetectionModel's backbone layers run in sequence; the pooled outputs of those the
    rest of the network reads, concatenated: (n, 3, S, S) -> (n, width)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        depth = len(model.yaml["backbone"])
        self.layers = nn.ModuleList(model.model[:depth])
        self.taps = sorted({i for i in model.save if i < depth} | {depth - 1})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    @torch.no_grad()
    def width(self, size: int) -> int:
        was_training = self.training
        self.eval()
        width = int(self.forward(torch.zeros(1, 3, size, size)).shape[1])
        self.train(was_training)
        return width


def pretrain_backbone(
    yaml: str,
    images: npt.NDArray[np.uint8],
    out: Path,
    *,
    seconds: float,
    seed: int = 0,
    max_steps: int | None = None,
    before_step: Callable[[], None] | None = None,
) -> TrainReport:
    """Build `yaml`'s detector from random weights, train its backbone contrastively on
    `images` ((n, S, S, 3) uint8 RGB, S a multiple of 32) for at most `seconds`, and save the
    whole model as an ultralytics checkpoint at `out` (a fine-tune's parent: its backbone
    transfers, the rest stays as built). What `before_step` raises stops it, saving nothing."""
    from ultralytics import YOLO  # noqa: PLC0415  (the caller prepared ultralytics)

    torch.manual_seed(seed)
    yolo = YOLO(yaml, task="detect")
    features = BackboneFeatures(yolo.model)
    size = int(images.shape[1])
    report = train_contrastive(
        images,
        features,
        projection_head(features.width(size)),
        seconds=seconds,
        seed=seed,
        batch_size=_BATCH,
        max_steps=max_steps,
        view_size=size,
        before_step=before_step,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging")
    yolo.save(staging)  # ultralytics' checkpoint format; made visible whole, or not at all
    atomic_write(out, staging.read_bytes())
    staging.unlink()
    return report


def square_images(images: Iterable[npt.NDArray[np.uint8]], size: int) -> npt.NDArray[np.uint8]:
    """RGB images of any size, each resized (area) to `size` x `size` as it comes (only the
    small copies are kept): the pretraining input, (n, size, size, 3) uint8."""
    out = []
    for image in images:
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()  # a copy
        resized = F.interpolate(tensor, size=(size, size), mode="area")
        out.append(resized[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    return np.stack(out) if out else np.zeros((0, size, size, 3), dtype=np.uint8)
