"""A small image encoder learned from a project's own unlabeled images (SimCLR).

Why: before a project's first trained detector, the detector's uncertainty is noise and its
features say little about the images. An encoder trained contrastively on the project's own
pixels (two random views of one image pull together, views of different images push apart)
puts similar images close together: what the cold-start picks (typical cluster centres) and
the near-duplicate groups need. Nothing is downloaded: a four-block CNN on THUMB_SIZE px
thumbnails, trained from random weights within a time budget, on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

THUMB_SIZE = 64  # thumbnails are THUMB_SIZE x THUMB_SIZE RGB
INPUT_SIZE = 32  # what the encoder sees (4x cheaper to train than the thumbnail's size)
EMBED_DIM = 128  # the encoder's features: what the FAISS index holds
_PROJECTION_DIM = 64  # the contrastive head's output (discarded after training)
_TEMPERATURE = 0.2
_CROP_SCALE = (0.35, 1.0)  # share of the image area a random view keeps
_MIN_BATCH = 8
MAX_EPOCHS = 100  # views seen / (2 * images): beyond it a small project learns nothing more

U8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]


class Encoder(nn.Module):
    """Four conv blocks (3x3 conv, batch norm, ReLU; 2x2 pooling after the first three), then
    global average pooling: (n, 3, S, S) in [0, 1], resized to INPUT_SIZE -> (n, EMBED_DIM)."""

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 32, 64, 128, EMBED_DIM)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            layers.append(nn.ReLU(inplace=True))
            if i < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        return self.features(x).mean(dim=(2, 3))


def projection_head(width: int) -> nn.Module:
    """The contrastive head on `width` features (discarded after training)."""
    return nn.Sequential(
        nn.Linear(width, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, _PROJECTION_DIM),
    )


@dataclass(frozen=True)
class TrainReport:
    """How an encoder's training went (kept in its version's meta)."""

    images: int
    seconds: float
    steps: int
    epochs: float  # views seen / (2 * images)
    loss_first: float  # mean contrastive loss of the first and last tenth of the steps
    loss_last: float


def to_tensor(thumbs: U8Array) -> torch.Tensor:
    """(n, S, S, 3) uint8 RGB -> (n, 3, S, S) float32 in [0, 1]."""
    array = np.ascontiguousarray(thumbs)
    if array.ndim != 4 or array.shape[3] != 3 or array.dtype != np.uint8:
        raise ValueError(f"thumbnails must be (n, S, S, 3) uint8, got {array.shape} {array.dtype}")
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)


def random_views(
    images: torch.Tensor, generator: torch.Generator, size: int = INPUT_SIZE
) -> torch.Tensor:
    """One random view per image: a crop of 35-100% of the area at aspect 3:4-4:3, resized
    to `size` px square, mirrored half the time, with random brightness, contrast, colour
    balance, sometimes grey, and sensor noise. Per image, in one batched pass."""
    n, _, side, _ = images.shape

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    area = uniform(*_CROP_SCALE, n)
    aspect = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3), n))
    w = (side * torch.sqrt(area * aspect)).clamp(max=side)
    h = (side * torch.sqrt(area / aspect)).clamp(max=side)
    x1 = uniform(0, 1, n) * (side - w)
    y1 = uniform(0, 1, n) * (side - h)
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), x1, y1, x1 + w, y1 + h], dim=1)
    views = roi_align(images, boxes, output_size=size, aligned=True)
    mirror = torch.rand(n, generator=generator) < 0.5
    views = torch.where(mirror[:, None, None, None], views.flip(3), views)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(0.6, 1.4, n, 1, 1, 1)
    views = (views - mean) * contrast + mean * uniform(0.6, 1.4, n, 1, 1, 1)
    views = views * uniform(0.85, 1.15, n, 3, 1, 1)
    grey = torch.rand(n, generator=generator) < 0.2
    views = torch.where(
        grey[:, None, None, None], views.mean(1, keepdim=True).expand_as(views), views
    )
    noise = uniform(0.0, 0.04, n, 1, 1, 1) * torch.randn(views.shape, generator=generator)
    return (views + noise).clamp_(0.0, 1.0)


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """NT-Xent: each view must pick its partner among the 2n - 1 other views of the batch."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / _TEMPERATURE
    logits.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, partner)


def train_encoder(
    thumbs: U8Array,
    *,
    seconds: float,
    seed: int = 0,
    batch_size: int = 128,
    max_steps: int | None = None,
) -> tuple[Encoder, TrainReport]:
    """Train an encoder on `thumbs` (n >= 2 images) until `seconds` have passed or it has
    seen MAX_EPOCHS epochs (or `max_steps`); returns it in eval mode with its report.
    Deterministic for a given seed and number of steps."""
    torch.manual_seed(seed)
    encoder = Encoder()
    report = train_contrastive(
        thumbs,
        encoder,
        projection_head(EMBED_DIM),
        seconds=seconds,
        seed=seed,
        batch_size=batch_size,
        max_steps=max_steps,
        view_size=INPUT_SIZE,
    )
    return encoder, report


def train_contrastive(
    images: U8Array,
    features: nn.Module,
    projector: nn.Module,
    *,
    seconds: float,
    seed: int,
    batch_size: int,
    max_steps: int | None,
    view_size: int,
    before_step: Callable[[], None] | None = None,
) -> TrainReport:
    """SimCLR on (n, S, S, 3) uint8 RGB `images` (n >= 2; made float a batch at a time):
    `features` then `projector` must tell each random view's partner among the batch, until
    `seconds` have passed or MAX_EPOCHS epochs (or `max_steps`) were seen. Leaves `features`
    in eval mode; seeded by `seed`. `before_step` is called before each step: what it raises
    (a cancelled run) stops the training."""
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"contrastive training needs at least 2 images, got {n}")
    generator = torch.Generator().manual_seed(seed)
    parameters = [*features.parameters(), *projector.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=2e-3, weight_decay=1e-4)
    batch = max(_MIN_BATCH, min(batch_size, n)) if n >= _MIN_BATCH else n
    steps = math.ceil(MAX_EPOCHS * n / batch)
    if max_steps is not None:
        steps = min(steps, max_steps)
    features.train()
    projector.train()
    losses: list[float] = []
    started = time.perf_counter()
    while len(losses) < steps and (not losses or time.perf_counter() - started < seconds):
        if before_step is not None:
            before_step()
        chosen = to_tensor(images[torch.randperm(n, generator=generator)[:batch].numpy()])
        v1 = random_views(chosen, generator, view_size)
        v2 = random_views(chosen, generator, view_size)
        loss = contrastive_loss(projector(features(v1)), projector(features(v2)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    features.eval()
    tenth = max(1, len(losses) // 10)
    return TrainReport(
        images=n,
        seconds=time.perf_counter() - started,
        steps=len(losses),
        epochs=len(losses) * batch / n,
        loss_first=float(np.mean(losses[:tenth])),
        loss_last=float(np.mean(losses[-tenth:])),
    )


@torch.no_grad()
def embed(encoder: Encoder, thumbs: U8Array, batch_size: int = 256) -> Float32Array:
    """(n, EMBED_DIM) float32 L2-normalised embeddings of whole thumbnails."""
    encoder.eval()
    out = np.zeros((len(thumbs), EMBED_DIM), dtype=np.float32)
    for start in range(0, len(thumbs), batch_size):
        features = encoder(to_tensor(thumbs[start : start + batch_size]))
        out[start : start + batch_size] = F.normalize(features, dim=1).numpy()
    return out


def reshot(thumbs: U8Array, seed: int) -> U8Array:
    """A near-duplicate of each thumbnail, as a second shot or re-upload of a scene looks:
    moved by up to 4% of its side, other exposure (gain 0.85-1.15, offset +-15 of 255) and
    fresh sensor noise. The known duplicates the near-duplicate threshold is calibrated on."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(thumbs)
    shift = max(1, round(0.04 * thumbs.shape[1]))
    for i, image in enumerate(thumbs):
        dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
        moved = np.roll(image.astype(np.float64), (dy, dx), axis=(0, 1))
        varied = moved * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
        varied += rng.normal(0.0, 3.0, size=varied.shape)
        out[i] = np.clip(varied, 0, 255).astype(np.uint8)
    return out
