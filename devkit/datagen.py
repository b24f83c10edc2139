"""Synthetic detection data with known boxes, for tests, the demo and smoke benchmarks.

Coloured shapes (square, circle, triangle) on noisy textured backgrounds: easy enough that a
tiny YOLO learns it in seconds on a CPU, real enough to exercise the whole pipeline. Seeded:
the same arguments give the same images and boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CLASSES: tuple[str, ...] = ("square", "circle", "triangle")
# Each class has its own hue (jittered per object): a cue a tiny model picks up in few epochs.
_HUES = {"square": (220, 60, 50), "circle": (50, 200, 70), "triangle": (60, 90, 230)}


@dataclass(frozen=True)
class SyntheticBox:
    """A ground-truth box in pixels."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class SyntheticImage:
    image: Image.Image
    boxes: tuple[SyntheticBox, ...]


def make_image(
    rng: np.random.Generator,
    width: int = 320,
    height: int = 256,
    max_objects: int = 4,
    classes: tuple[str, ...] = CLASSES,
) -> SyntheticImage:
    """One image with 1..max_objects non-overlapping shapes of `classes` (of CLASSES)."""
    base = np.full(3, int(rng.integers(70, 170))) + rng.integers(-15, 15, size=3)
    noise = rng.normal(0, 18, size=(height, width, 3))
    gradient = np.linspace(0, 40, width)[None, :, None]
    pixels = np.clip(base[None, None, :] + noise + gradient, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    boxes: list[SyntheticBox] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            size = int(rng.integers(min(width, height) // 7, min(width, height) // 3))
            x1 = int(rng.integers(0, width - size))
            y1 = int(rng.integers(0, height - size))
            box = (x1, y1, x1 + size, y1 + size)
            if all(_disjoint(box, (b.x1, b.y1, b.x2, b.y2)) for b in boxes):
                break
        else:
            continue
        label = classes[int(rng.integers(0, len(classes)))]
        colour = tuple(int(np.clip(c + rng.integers(-35, 35), 0, 255)) for c in _HUES[label])
        if label == "square":
            draw.rectangle(box, fill=colour)
        elif label == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon(
                [(x1 + size / 2, y1), (x1, y1 + size), (x1 + size, y1 + size)], fill=colour
            )
        boxes.append(SyntheticBox(label, *map(float, box)))
    return SyntheticImage(image=image, boxes=tuple(boxes))


def _disjoint(a: tuple[float, ...], b: tuple[float, ...], margin: float = 4.0) -> bool:
    return (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def write_images(
    folder: Path, count: int, seed: int, prefix: str = "img", classes: tuple[str, ...] = CLASSES
) -> list[tuple[Path, SyntheticImage]]:
    """Write `count` JPEGs of shapes of `classes` into `folder`; returns (path, image with
    its boxes) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for i in range(count):
        sample = make_image(rng, classes=classes)
        path = folder / f"{prefix}_{i:04d}.jpg"
        sample.image.save(path, quality=92)
        written.append((path, sample))
    return written


def yolo_label_lines(sample: SyntheticImage, classes: tuple[str, ...] = CLASSES) -> list[str]:
    """YOLO txt lines (`cls cx cy w h`, normalised) for one image."""
    width, height = sample.image.size
    lines = []
    for b in sample.boxes:
        cx, cy = (b.x1 + b.x2) / 2 / width, (b.y1 + b.y2) / 2 / height
        w, h = (b.x2 - b.x1) / width, (b.y2 - b.y1) / height
        lines.append(f"{classes.index(b.label)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_yolo_dataset(root: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A YOLO dataset (images/, labels/, data.yaml with an absolute path); returns data.yaml."""
    for split, count, split_seed in (("train", n_train, seed), ("val", n_val, seed + 1)):
        for path, sample in write_images(root / "images" / split, count, split_seed, prefix=split):
            label_dir = root / "labels" / split
            label_dir.mkdir(parents=True, exist_ok=True)
            (label_dir / f"{path.stem}.txt").write_text("\n".join(yolo_label_lines(sample)) + "\n")
    data_yaml = root / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data_yaml.write_text(
        f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return data_yaml


def ls_regions(
    sample: SyntheticImage, from_name: str = "label", to_name: str = "image"
) -> list[dict[str, object]]:
    """The ground truth as Label Studio RectangleLabels regions (labels capitalised, as in
    the demo and test configs): what an annotator would submit for this image."""
    width, height = sample.image.size
    return [
        {
            "from_name": from_name,
            "to_name": to_name,
            "type": "rectanglelabels",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": b.x1 / width * 100,
                "y": b.y1 / height * 100,
                "width": (b.x2 - b.x1) / width * 100,
                "height": (b.y2 - b.y1) / height * 100,
                "rotation": 0,
                "rectanglelabels": [b.label.capitalize()],
            },
        }
        for b in sample.boxes
    ]


# -- what Label Studio's smart tools send (interactive assist) --------------------------------
ROUGH = 0.2  # a hurried annotator's rectangle: this share of the object's size too large


def drawn_rectangle(
    box: SyntheticBox, size: tuple[int, int], label: str | None = None, rough: float = ROUGH
) -> dict[str, object]:
    """A smart RectangleLabels region as Label Studio sends it in /predict's
    `params.context`: around `box` but `rough` too large and off-centre; `label` if chosen."""
    width, height = size
    w, h = box.x2 - box.x1, box.y2 - box.y1
    return {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {
            "x": 100 * (box.x1 - rough * w) / width,
            "y": 100 * (box.y1 - rough * h / 2) / height,
            "width": 100 * w * (1 + 1.5 * rough) / width,
            "height": 100 * h * (1 + rough) / height,
            "rotation": 0,
            "rectanglelabels": [label] if label else [],
        },
    }


def drawn_click(box: SyntheticBox, size: tuple[int, int]) -> dict[str, object]:
    """A smart KeyPointLabels click at the centre of `box`."""
    width, height = size
    return {
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {
            "x": 50 * (box.x1 + box.x2) / width,
            "y": 50 * (box.y1 + box.y2) / height,
            "width": 1,
            "keypointlabels": ["Object"],
        },
    }


def region_iou(region: dict[str, Any], box: SyntheticBox, size: tuple[int, int]) -> float:
    """IoU of a rectangle region (Label Studio's percent `value`) with `box` (pixels)."""
    width, height = size
    value = region["value"]
    x1, y1 = value["x"] * width / 100, value["y"] * height / 100
    x2, y2 = x1 + value["width"] * width / 100, y1 + value["height"] * height / 100
    iw = max(0.0, min(x2, box.x2) - max(x1, box.x1))
    ih = max(0.0, min(y2, box.y2) - max(y1, box.y1))
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + (box.x2 - box.x1) * (box.y2 - box.y1) - inter
    return inter / union if union > 0 else 0.0
