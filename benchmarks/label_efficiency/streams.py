"""Frame sequences from fixed cameras: the periodic device data the product is for.

Each camera has its own background and static clutter (unlabeled shapes that never move),
seeded by the camera alone, so every split sees the same cameras. Along a sequence, digit
objects ("tracks") appear, drift slowly (under a pixel per frame) and leave; each frame adds
a slow lighting drift and fresh sensor noise. Consecutive frames are therefore near-identical,
which is what makes a queue that picks similar images waste an annotator's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from benchmarks.label_efficiency.rendering import (
    DigitBox,
    FloatArray,
    U8Array,
    background,
    blend,
    digit_alpha,
    distractor,
    find_spot,
    ink_colour,
)


@dataclass(frozen=True)
class StreamTrackConfig:
    """How objects come and go in a camera's sequence."""

    mean_objects: float = 2.5  # objects in view on average
    mean_lifetime: float = 10.0  # frames an object stays, on average
    max_speed: float = 0.8  # pixels per frame
    clutter: int = 3  # static unlabeled shapes per camera
    stride: int = 1  # keep every stride-th frame (the fixed splits: fewer repeats)


@dataclass
class _Track:
    label: int
    alpha: FloatArray
    ink: FloatArray
    x: float
    y: float
    vx: float
    vy: float
    frames_left: int


def camera_background(seed: int, camera: int, size: int, clutter: int) -> U8Array:
    """The fixed view of one camera: a textured background and its static clutter."""
    rng = np.random.default_rng([seed, 77, camera])
    image = Image.fromarray(background(rng, size), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(clutter):
        distractor(rng, draw, size, [])
    return np.asarray(image, dtype=np.uint8).copy()


def render_stream(
    rng: np.random.Generator,
    view: U8Array,
    n_frames: int,
    sprites: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    class_names: Sequence[str],
    class_weights: Sequence[float],
    digit_range: tuple[int, int],
    tracks: StreamTrackConfig,
) -> list[tuple[U8Array, list[DigitBox]]]:
    """`n_frames` frames of one camera (`view`), every `tracks.stride`-th, with their boxes.

    `labels` index `class_names`, whose shares among new objects are `class_weights`."""
    size = view.shape[0]
    weights = np.asarray(class_weights, dtype=np.float64)
    by_class = [np.flatnonzero(labels == c) for c in range(len(weights))]
    birth_rate = tracks.mean_objects / tracks.mean_lifetime  # arrivals per frame (steady state)
    live: list[_Track] = []
    gain, offset = 1.0, 0.0
    frames: list[tuple[U8Array, list[DigitBox]]] = []
    for frame in range(n_frames * tracks.stride):
        arrivals = rng.poisson(tracks.mean_objects if frame == 0 else birth_rate)
        for _ in range(int(arrivals)):
            track = _new_track(rng, view, sprites, by_class, weights, digit_range, tracks, live)
            if track is not None:
                live.append(track)
        canvas = view.copy()
        boxes: list[DigitBox] = []
        for track in live:
            x, y = int(round(track.x)), int(round(track.y))
            h, w = track.alpha.shape
            blend(canvas, track.alpha, track.ink, x, y)
            ys, xs = np.nonzero(track.alpha > 0.25)
            boxes.append(
                DigitBox(
                    class_names[track.label],
                    float(x + xs.min()),
                    float(y + ys.min()),
                    float(x + xs.max() + 1),
                    float(y + ys.max() + 1),
                )
            )
        # lighting drifts slowly (a bounded random walk), noise is fresh every frame
        gain = float(np.clip(gain + rng.normal(0.0, 0.01), 0.85, 1.15))
        offset = float(np.clip(offset + rng.normal(0.0, 1.5), -15.0, 15.0))
        pixels = canvas.astype(np.float64) * gain + offset
        pixels = pixels + rng.normal(0.0, rng.uniform(2.0, 6.0), size=pixels.shape)
        if frame % tracks.stride == 0:
            frames.append((np.clip(pixels, 0, 255).astype(np.uint8), boxes))
        live = [t for t in live if _advance(t, size)]
    return frames


def _new_track(
    rng: np.random.Generator,
    view: U8Array,
    sprites: npt.NDArray[np.floating],
    by_class: list[npt.NDArray[np.intp]],
    weights: FloatArray,
    digit_range: tuple[int, int],
    tracks: StreamTrackConfig,
    live: Sequence[_Track],
) -> _Track | None:
    """A new object in a free spot (None when the view is too full)."""
    size = view.shape[0]
    label = int(rng.choice(len(weights), p=weights / weights.sum()))
    sprite = sprites[int(rng.choice(by_class[label]))]
    low, high = digit_range
    alpha = digit_alpha(rng, sprite, float(np.exp(rng.uniform(np.log(low), np.log(high)))))
    taken = [(t.x, t.y, t.x + t.alpha.shape[1], t.y + t.alpha.shape[0]) for t in live]
    spot = find_spot(rng, alpha.shape, size, taken, max_iou=0.0)
    if spot is None:
        return None
    h, w = alpha.shape
    x, y = float(spot[0]), float(spot[1])
    patch = view[int(y) : int(y) + h, int(x) : int(x) + w]
    speed, heading = rng.uniform(0.0, tracks.max_speed), rng.uniform(0.0, 2 * np.pi)
    return _Track(
        label=label,
        alpha=alpha,
        ink=ink_colour(rng, patch),
        x=x,
        y=y,
        vx=float(speed * np.cos(heading)),
        vy=float(speed * np.sin(heading)),
        frames_left=int(rng.geometric(1.0 / tracks.mean_lifetime)),
    )


def _advance(track: _Track, size: int) -> bool:
    """Move one frame on (bouncing off the edges); False once the object has left."""
    h, w = track.alpha.shape
    track.frames_left -= 1
    track.x += track.vx
    track.y += track.vy
    if not 0 <= track.x <= size - w:
        track.vx = -track.vx
        track.x = min(max(track.x, 0.0), float(size - w))
    if not 0 <= track.y <= size - h:
        track.vy = -track.vy
        track.y = min(max(track.y, 0.0), float(size - h))
    return track.frames_left > 0
