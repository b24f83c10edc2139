"""A realistic, offline, seeded detection dataset: real handwritten digits in cluttered scenes.

Why not the shapes of `devkit.datagen`: they are separable by colour alone, so every
active-learning strategy looks the same on them. Here the objects are real handwriting
(scikit-learn's bundled `load_digits`, 1,797 8x8 digits from 43 writers, no download), and
the scenes carry what makes labeling choices matter on real data:

* five digit classes (0, 1, 2, 4, 7; 1/7 the confusable pair) in a configurable mix
  (`class_weights`: mildly skewed by default, a long tail in the benchmark's long_tail pool);
* scene-level correlation: some images are "themed" (mostly one class), as objects cluster
  in real scenes;
* several objects per image at several scales (crowded images get smaller digits), slight
  rotation and aspect changes, varied ink contrast (light on dark too);
* textured backgrounds (noise, gradients, stripes, blobs, ruled paper), partial occlusion,
  unlabeled distractor shapes (rings, bars, scribbles), sensor noise and blur;
* near-duplicate images in the pool (small shifts and lighting changes of another image),
  which waste labels when chosen twice;
* or, with `cameras` > 0, frame sequences from fixed cameras (`streams`) instead of
  independent scenes.

Digit sprites are split between the splits, so test digits are unseen samples. Splits: `pool`
(the unlabeled images an annotator works through), `val` (for tuning a recipe without touching
test), `test` (the fixed yardstick), and the optional `base`: scenes of yet other digit
samples for a class-agnostic base model (one class, "digit"), the stand-in for the pretrained
weights a user brings; it learns where handwriting is, never which digit it is.
Everything comes from `seed`: image i of a split is drawn from its own generator, so the same
seed gives the same files and boxes. The ground truth (pixel boxes with labels) is stored in
`manifest.json` and converts directly to `LabeledImage`s.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

from backend.training.dataset import LabeledImage, YoloBox
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
    occlude,
)
from benchmarks.label_efficiency.streams import (
    StreamTrackConfig,
    camera_background,
    render_stream,
)
from strategies.diversity import connected_groups

logger = logging.getLogger(__name__)

# Five digits that stay apart at 8x8 (no 3/8/9 or 5/6), so a detector learns them from a few
# hundred images on a CPU; 1 and 7 are the one confusable pair.
DIGITS: tuple[int, ...] = (0, 1, 2, 4, 7)
CLASSES: tuple[str, ...] = tuple(str(d) for d in DIGITS)
CLASS_WEIGHTS: tuple[float, ...] = (0.24, 0.26, 0.2, 0.18, 0.12)  # sums to 1; 7 the rarest
SPLITS: tuple[str, ...] = ("pool", "val", "test", "base")
_SPRITE_SHARE = {"pool": 0.45, "val": 0.1, "test": 0.25, "base": 0.2}
_SPLIT_CODE = {"pool": 1, "val": 2, "test": 3, "base": 4}
_ID_BASE = {"pool": 0, "val": 1_000_000, "test": 2_000_000, "base": 3_000_000}
BASE_CLASS = "digit"
STREAM_SPLIT_STRIDE = 8
STREAM_DUPLICATE_SHIFT = 2.0  # pixels a box may move between two duplicate frames
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DigitsConfig:
    """Sizes and knobs of a generated dataset (all counts are images)."""

    n_pool: int = 360
    n_val: int = 60
    n_test: int = 150
    n_base: int = 300  # class-agnostic scenes for a base model (see module doc); 0 = none
    image_size: int = 160
    min_objects: int = 1
    max_objects: int = 15
    min_digit: int = 16  # digit height in pixels
    max_digit: int = 56
    themed_fraction: float = 0.4  # images whose objects are mostly one class
    duplicate_fraction: float = 0.08  # pool images that are near-copies of another pool image
    occlusion_prob: float = 0.3  # per digit
    max_distractors: int = 4
    class_weights: tuple[float, ...] = CLASS_WEIGHTS  # share of each class among the objects
    cameras: int = 0  # > 0: pool, val and test are frame sequences from this many cameras
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_pool, self.n_test) < 1 or min(self.n_val, self.n_base) < 0:
            raise ValueError("n_pool and n_test must be >= 1, n_val and n_base >= 0")
        if self.image_size < 64:
            raise ValueError(f"image_size must be >= 64, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("need 1 <= min_objects <= max_objects")
        if not 8 <= self.min_digit <= self.max_digit <= self.image_size // 2:
            raise ValueError("need 8 <= min_digit <= max_digit <= image_size / 2")
        for name in ("themed_fraction", "duplicate_fraction", "occlusion_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if self.seed < 0 or self.max_distractors < 0 or self.cameras < 0:
            raise ValueError("seed, max_distractors and cameras must be >= 0")
        if len(self.class_weights) != len(CLASSES) or min(self.class_weights) <= 0:
            raise ValueError(f"class_weights needs {len(CLASSES)} positive shares")

    def size(self, split: str) -> int:
        return {"pool": self.n_pool, "val": self.n_val, "test": self.n_test, "base": self.n_base}[
            split
        ]


@dataclass(frozen=True)
class DigitSample:
    """One generated image and its ground truth."""

    task_id: int  # unique across splits: the simulated Label Studio task id
    split: str
    file: str  # relative to the dataset root
    width: int
    height: int
    boxes: tuple[DigitBox, ...]
    duplicate_of: int | None = None  # task id of the image this one nearly copies
    camera: int | None = None  # the camera of a stream frame

    def to_labeled(self, root: Path, classes: Sequence[str] = CLASSES) -> LabeledImage:
        """The sample as training ground truth (normalised YOLO boxes, absolute image path).

        `classes == (BASE_CLASS,)` maps every digit to that one class (the base model's task).
        """
        index = {name: i for i, name in enumerate(classes)}
        agnostic = tuple(classes) == (BASE_CLASS,)
        boxes = tuple(
            YoloBox(
                class_index=0 if agnostic else index[b.label],
                cx=(b.x1 + b.x2) / 2 / self.width,
                cy=(b.y1 + b.y2) / 2 / self.height,
                w=(b.x2 - b.x1) / self.width,
                h=(b.y2 - b.y1) / self.height,
            )
            for b in self.boxes
        )
        return LabeledImage(
            task_id=self.task_id,
            annotation_id=self.task_id,
            image_ref=str((root / self.file).resolve()),
            boxes=boxes,
        )


@dataclass(frozen=True)
class DigitsDataset:
    """A generated dataset on disk: its root, classes, config and samples per split."""

    root: Path
    config: DigitsConfig
    classes: tuple[str, ...] = CLASSES
    splits: dict[str, tuple[DigitSample, ...]] = field(default_factory=dict)

    def labeled(self, split: str, class_agnostic: bool = False) -> list[LabeledImage]:
        """Every sample of `split` as a `LabeledImage` (one class `BASE_CLASS` if agnostic)."""
        classes = (BASE_CLASS,) if class_agnostic else self.classes
        return [s.to_labeled(self.root, classes) for s in self.splits[split]]

    def class_counts(self, split: str) -> dict[str, int]:
        """Boxes per class in `split` (every class listed, zeros included)."""
        counts = dict.fromkeys(self.classes, 0)
        for sample in self.splits[split]:
            for box in sample.boxes:
                counts[box.label] += 1
        return counts


# ------------------------------------------------------------------------------ public API
def generate(root: Path, config: DigitsConfig | None = None) -> DigitsDataset:
    """Render every split into `root/<split>/*.png` and write `root/manifest.json`.

    Reuses an existing dataset when its manifest records the same config (generation takes
    seconds, but the simulation re-opens it from several processes).
    """
    config = config or DigitsConfig()
    existing = _try_load(root, config)
    if existing is not None:
        logger.info("reusing the digits dataset at %s", root)
        return existing
    sprites = _sprite_splits(config.seed)
    splits: dict[str, tuple[DigitSample, ...]] = {}
    for split in SPLITS:
        splits[split] = _render_split(root, split, config, *sprites[split])
    dataset = DigitsDataset(root=root, config=config, splits=splits)
    manifest = {
        "config": asdict(config),
        "classes": list(CLASSES),
        "splits": {k: [asdict(s) for s in v] for k, v in splits.items()},
    }
    (root / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    logger.info(
        "digits dataset at %s: %s",
        root,
        {k: (len(v), sum(len(s.boxes) for s in v)) for k, v in splits.items()},
    )
    return dataset


def load(root: Path) -> DigitsDataset:
    """Open a dataset written by `generate`."""
    raw = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    config = DigitsConfig(
        **{**raw["config"], "class_weights": tuple(raw["config"]["class_weights"])}
    )
    splits = {
        name: tuple(
            DigitSample(**{**s, "boxes": tuple(DigitBox(**b) for b in s["boxes"])}) for s in samples
        )
        for name, samples in raw["splits"].items()
    }
    return DigitsDataset(root=root, config=config, classes=tuple(raw["classes"]), splits=splits)


def render_image(
    rng: np.random.Generator,
    sprites: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    config: DigitsConfig,
) -> tuple[U8Array, list[DigitBox]]:
    """One scene: (H, W, 3) uint8 RGB pixels and its digit boxes.

    `sprites` (k, 8, 8) in [0, 16] and `labels` (k,) are the digits this split may use.
    """
    size = config.image_size
    canvas = background(rng, size)
    n_objects = _object_count(rng, config)
    classes = _object_classes(rng, n_objects, config)
    by_class = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
    # Crowded scenes get smaller digits, so up to 15 fit in one image.
    top = min(float(config.max_digit), 0.85 * size / math.sqrt(n_objects))
    low = min(float(config.min_digit), top)
    placed: list[tuple[float, float, float, float]] = []
    boxes: list[DigitBox] = []
    for cls in classes:
        sprite = sprites[int(rng.choice(by_class[cls]))]
        height = float(np.exp(rng.uniform(np.log(low), np.log(top))))
        alpha = digit_alpha(rng, sprite, height)
        spot = find_spot(rng, alpha.shape, size, placed, max_iou=0.1)
        if spot is None:
            continue
        x, y = spot
        ink = ink_colour(rng, canvas[y : y + alpha.shape[0], x : x + alpha.shape[1]])
        blend(canvas, alpha, ink, x, y)
        ys, xs = np.nonzero(alpha > 0.25)
        box = (
            float(x + xs.min()),
            float(y + ys.min()),
            float(x + xs.max() + 1),
            float(y + ys.max() + 1),
        )
        placed.append(box)
        boxes.append(DigitBox(CLASSES[cls], *box))
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    for box in placed:
        if rng.random() < config.occlusion_prob:
            occlude(rng, draw, box)
    for _ in range(int(rng.integers(0, config.max_distractors + 1))):
        distractor(rng, draw, size, placed)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.0))))
    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels + rng.normal(0.0, rng.uniform(2.0, 10.0), size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8), boxes


# ------------------------------------------------------------------------------- internals
def _try_load(root: Path, config: DigitsConfig) -> DigitsDataset | None:
    if not (root / MANIFEST).is_file():
        return None
    try:
        dataset = load(root)
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("unreadable manifest under %s; regenerating", root)
        return None
    files_ok = all((root / s.file).is_file() for v in dataset.splits.values() for s in v)
    return dataset if dataset.config == config and files_ok else None


def _sprite_splits(seed: int) -> dict[str, tuple[FloatArray, npt.NDArray[np.int64]]]:
    """Disjoint digit samples per split (stratified by class), so test digits are unseen."""
    from sklearn.datasets import load_digits  # noqa: PLC0415  (only the generator needs it)

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64)
    target = np.asarray(digits.target, dtype=np.int64)
    rng = np.random.default_rng([seed, 0])
    chosen: dict[str, list[int]] = {s: [] for s in SPLITS}
    for digit in DIGITS:
        members = rng.permutation(np.flatnonzero(target == digit))
        shares = np.cumsum([_SPRITE_SHARE[s] for s in SPLITS])
        cuts = [0, *(int(round(len(members) * c)) for c in shares[:-1]), len(members)]
        for split, start, stop in zip(SPLITS, cuts[:-1], cuts[1:], strict=True):
            chosen[split].extend(members[start:stop].tolist())
    out = {}
    for split, members_of_split in chosen.items():
        idx = np.array(members_of_split, dtype=np.int64)
        class_index = np.array([DIGITS.index(int(d)) for d in target[idx]], dtype=np.int64)
        out[split] = (images[idx], class_index)
    return out


def _render_split(
    root: Path,
    split: str,
    config: DigitsConfig,
    sprites: FloatArray,
    labels: npt.NDArray[np.int64],
) -> tuple[DigitSample, ...]:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    if config.cameras > 0 and split != "base":
        frames = _stream_frames(split, config, sprites, labels)
    else:
        frames = _scene_frames(split, config, sprites, labels)
    samples: list[DigitSample] = []
    for i, (pixels, boxes, duplicate_of, camera) in enumerate(frames):
        name = f"{split}_{i:05d}.png"
        Image.fromarray(pixels, "RGB").save(folder / name)
        samples.append(
            DigitSample(
                task_id=_ID_BASE[split] + i + 1,
                split=split,
                file=f"{split}/{name}",
                width=config.image_size,
                height=config.image_size,
                boxes=tuple(boxes),
                duplicate_of=None if duplicate_of is None else _ID_BASE[split] + duplicate_of + 1,
                camera=camera,
            )
        )
    return tuple(samples)


_Frame = tuple[U8Array, list[DigitBox], int | None, int | None]  # pixels, boxes, copy of, camera


def _scene_frames(
    split: str, config: DigitsConfig, sprites: FloatArray, labels: npt.NDArray[np.int64]
) -> list[_Frame]:
    """Independent scenes; in the pool, some are near-copies of an earlier one."""
    frames: list[_Frame] = []
    for i in range(config.size(split)):
        rng = np.random.default_rng([config.seed, _SPLIT_CODE[split], i])
        if split == "pool" and i > 0 and rng.random() < config.duplicate_fraction:
            source = int(rng.integers(0, i))
            pixels, boxes = _near_duplicate(rng, *frames[source][:2], config.image_size)
            frames.append((pixels, boxes, source, None))
        else:
            frames.append((*render_image(rng, sprites, labels, config), None, None))
    return frames


def _stream_frames(
    split: str, config: DigitsConfig, sprites: FloatArray, labels: npt.NDArray[np.int64]
) -> list[_Frame]:
    """One sequence per camera, the split's frames shared out evenly: consecutive frames in
    the pool, every STREAM_SPLIT_STRIDE-th frame in the fixed splits (val, test), so a
    yardstick of a few dozen frames still holds many distinct objects."""
    stride = 1 if split == "pool" else STREAM_SPLIT_STRIDE
    tracks = StreamTrackConfig(clutter=config.max_distractors, stride=stride)
    frames: list[_Frame] = []
    for camera in range(config.cameras):
        total = config.size(split)
        count = total // config.cameras + (camera < total % config.cameras)
        view = camera_background(config.seed, camera, config.image_size, tracks.clutter)
        rng = np.random.default_rng([config.seed, _SPLIT_CODE[split], 1000 + camera])
        sequence = render_stream(
            rng,
            view,
            count,
            sprites,
            labels,
            CLASSES,
            config.class_weights,
            (config.min_digit, config.max_digit),
            tracks,
        )
        frames.extend((pixels, boxes, None, camera) for pixels, boxes in sequence)
    return frames


def _near_duplicate(
    rng: np.random.Generator, pixels: U8Array, boxes: list[DigitBox], size: int
) -> tuple[U8Array, list[DigitBox]]:
    """A re-shot of the same scene: shifted by a few pixels, other lighting, fresh noise."""
    dx, dy = (int(v) for v in rng.integers(-4, 5, size=2))
    shifted = np.roll(pixels.astype(np.float64), (dy, dx), axis=(0, 1))
    gain, offset = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
    out = shifted * gain + offset + rng.normal(0.0, 3.0, size=shifted.shape)
    moved: list[DigitBox] = []
    for b in boxes:
        x1, y1 = max(0.0, b.x1 + dx), max(0.0, b.y1 + dy)
        x2, y2 = min(float(size), b.x2 + dx), min(float(size), b.y2 + dy)
        # np.roll wraps pixels around: a digit pushed over an edge is cut; keep it if most stays.
        if (x2 - x1) * (y2 - y1) >= 0.6 * (b.x2 - b.x1) * (b.y2 - b.y1):
            moved.append(DigitBox(b.label, x1, y1, x2, y2))
    return np.clip(out, 0, 255).astype(np.uint8), moved


def _object_count(rng: np.random.Generator, config: DigitsConfig) -> int:
    """Mostly a few objects, sometimes a crowd: P(k) decays geometrically over the range."""
    ks = np.arange(config.min_objects, config.max_objects + 1)
    p = np.exp(-(ks - config.min_objects) / 4.0)
    return int(rng.choice(ks, p=p / p.sum()))


def _object_classes(rng: np.random.Generator, n: int, config: DigitsConfig) -> list[int]:
    weights = np.asarray(config.class_weights) / sum(config.class_weights)
    if rng.random() < config.themed_fraction:
        theme = int(rng.choice(len(CLASSES), p=weights))
        mix = 0.4 * weights
        mix[theme] += 0.6
        return [int(c) for c in rng.choice(len(CLASSES), size=n, p=mix / mix.sum())]
    return [int(c) for c in rng.choice(len(CLASSES), size=n, p=weights)]


def known_duplicates(samples: Sequence[DigitSample]) -> npt.NDArray[np.int64]:
    """(n,) the true near-duplicate group of each sample, numbered as the product numbers its
    groups (`strategies.duplicates.duplicate_groups`: a group's smallest index; a sample
    without near-duplicates, its own index).

    Scenes: an image and its near-copies (`duplicate_of`). Streams have no copies; there, two
    frames of one camera are near-duplicates when they show the same objects: the same labels
    in the same order, every box within STREAM_DUPLICATE_SHIFT pixels of the other frame's
    (objects drift under a pixel per frame, so this tells an object that stayed from one that
    left as another came). Any two frames, not only consecutive ones: an object that comes for
    one frame and leaves again leaves the frames around it alike. A group is the chain of such
    pairs: its ends may lie a few pixels apart, as the product chains its pairs.
    """
    index = {sample.task_id: i for i, sample in enumerate(samples)}
    pairs = [
        (index[sample.duplicate_of], i)
        for i, sample in enumerate(samples)
        if sample.duplicate_of is not None
    ]
    pairs += [
        (i, j)
        for i, a in enumerate(samples)
        for j in range(i + 1, len(samples))
        if a.camera is not None
        and a.camera == samples[j].camera
        and _same_objects(a.boxes, samples[j].boxes)
    ]
    return connected_groups(len(samples), np.array(pairs, dtype=np.int64).reshape(-1, 2))


def _same_objects(first: Sequence[DigitBox], second: Sequence[DigitBox]) -> bool:
    return len(first) == len(second) and all(
        a.label == b.label
        and max(abs(a.x1 - b.x1), abs(a.y1 - b.y1), abs(a.x2 - b.x2), abs(a.y2 - b.y2))
        <= STREAM_DUPLICATE_SHIFT
        for a, b in zip(first, second, strict=True)
    )


def summary(dataset: DigitsDataset) -> dict[str, Any]:
    """Image, box and per-class counts per split (for logs and the benchmark's JSON)."""
    return {
        split: {
            "images": len(samples),
            "boxes": sum(len(s.boxes) for s in samples),
            "near_duplicates": sum(s.duplicate_of is not None for s in samples),
            "class_counts": dataset.class_counts(split),
        }
        for split, samples in dataset.splits.items()
    }
