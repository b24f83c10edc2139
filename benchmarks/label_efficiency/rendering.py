"""Drawing primitives shared by the generated pools: textured backgrounds, digit sprites as
alpha masks, ink colours, occluders and unlabeled distractors (pure numpy and PIL)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

U8Array = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DigitBox:
    """One ground-truth box in pixels (x2, y2 exclusive edges)."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


def background(rng: np.random.Generator, size: int) -> U8Array:
    """One of five textures, in colour."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    base = rng.uniform(40, 220, size=3)
    kind = int(rng.integers(0, 5))
    field_: npt.NDArray[np.float64]
    if kind == 0:  # plain noise
        field_ = np.zeros((size, size))
    elif kind == 1:  # linear gradient
        angle = rng.uniform(0, np.pi)
        field_ = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(40, 110)
    elif kind == 2:  # stripes
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 14)
        field_ = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        field_ *= rng.uniform(10, 45)
    elif kind == 3:  # soft blobs
        field_ = np.zeros((size, size))
        for _ in range(int(rng.integers(3, 9))):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            field_ += rng.uniform(-60, 60) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
    else:  # ruled paper
        base = rng.uniform(180, 245, size=3)
        field_ = np.where((yy * size) % int(rng.integers(10, 24)) < 1, -rng.uniform(30, 70), 0.0)
    tint = rng.uniform(0.7, 1.3, size=3)
    pixels = base[None, None, :] + field_[:, :, None] * tint[None, None, :]
    pixels = pixels + rng.normal(0.0, rng.uniform(3, 18), size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def digit_alpha(
    rng: np.random.Generator, sprite: npt.NDArray[np.floating], height: float
) -> FloatArray:
    """The 8x8 sprite upscaled to `height` pixels (aspect and rotation jittered) as alpha."""
    h = max(8, int(round(height)))
    w = max(6, int(round(h * rng.uniform(0.65, 1.0))))
    image = Image.fromarray(np.asarray(sprite / 16.0 * 255.0, dtype=np.uint8), "L")
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    angle = float(rng.uniform(-12, 12))
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    alpha = np.asarray(image, dtype=np.float64) / 255.0
    alpha = np.clip((alpha - 0.1) * rng.uniform(1.2, 1.8), 0.0, 1.0)
    ys, xs = np.nonzero(alpha > 0.25)
    if ys.size == 0:  # a blank sprite cannot happen with load_digits, but stay safe
        return np.ones((h, w))
    return alpha[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def find_spot(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    size: int,
    placed: list[tuple[float, float, float, float]],
    max_iou: float,
) -> tuple[int, int] | None:
    h, w = shape[0], shape[1]
    if h >= size or w >= size:
        return None
    for _ in range(30):
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        box = (float(x), float(y), float(x + w), float(y + h))
        if all(iou(box, other) <= max_iou for other in placed):
            return x, y
    return None


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ink_colour(rng: np.random.Generator, patch: U8Array) -> FloatArray:
    """Dark ink on light ground or light on dark, with a varied (sometimes weak) contrast."""
    mean = patch.reshape(-1, 3).mean(axis=0)
    contrast = rng.uniform(55, 170)
    direction = -1.0 if mean.mean() > 110 else 1.0
    colour = mean + direction * contrast + rng.normal(0, 20, size=3)
    return np.clip(colour, 0, 255)


def blend(canvas: U8Array, alpha: FloatArray, ink: FloatArray, x: int, y: int) -> None:
    h, w = alpha.shape
    region = canvas[y : y + h, x : x + w].astype(np.float64)
    mixed = region * (1 - alpha[:, :, None]) + ink[None, None, :] * alpha[:, :, None]
    canvas[y : y + h, x : x + w] = np.clip(mixed, 0, 255).astype(np.uint8)


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return r, g, b


def occlude(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float]
) -> None:
    """Cover up to ~35% of a digit from one side with a solid patch (the box stays whole)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cover = float(rng.uniform(0.15, 0.35))
    side = int(rng.integers(0, 4))
    if side == 0:
        rect = (x1 - 2, y1 - 2, x1 + cover * w, y2 + 2)
    elif side == 1:
        rect = (x2 - cover * w, y1 - 2, x2 + 2, y2 + 2)
    elif side == 2:
        rect = (x1 - 2, y1 - 2, x2 + 2, y1 + cover * h)
    else:
        rect = (x1 - 2, y2 - cover * h, x2 + 2, y2 + 2)
    if rng.random() < 0.5:
        draw.rectangle(rect, fill=random_colour(rng))
    else:
        draw.ellipse(rect, fill=random_colour(rng))


def distractor(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    size: int,
    placed: list[tuple[float, float, float, float]],
) -> None:
    """An unlabeled shape of digit scale (ring, bar, blob or scribble) away from the digits."""
    extent = float(rng.uniform(10, 40))
    for _ in range(20):
        x, y = float(rng.uniform(0, size - extent)), float(rng.uniform(0, size - extent))
        box = (x, y, x + extent, y + extent)
        if all(iou(box, other) <= 0.02 for other in placed):
            break
    else:
        return
    colour = random_colour(rng)
    kind = int(rng.integers(0, 4))
    width = int(rng.integers(1, 4))
    if kind == 0:
        draw.ellipse(box, outline=colour, width=width)
    elif kind == 1:
        draw.line((box[0], box[1], box[2], box[3]), fill=colour, width=width + 1)
    elif kind == 2:
        draw.rectangle((x, y, x + extent, y + extent * rng.uniform(0.3, 1.0)), fill=colour)
    else:
        points = [(float(px), float(py)) for px, py in rng.uniform(0, extent, size=(5, 2)) + (x, y)]
        draw.line(points, fill=colour, width=width, joint="curve")
