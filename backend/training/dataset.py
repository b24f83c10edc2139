"""Label Studio annotations -> a YOLO dataset on disk, for fine-tuning.

Annotations are pulled fresh from Label Studio (so updates and deletions are honoured), the
newest non-cancelled annotation of each task is the ground truth, and RectangleLabels regions
become YOLO boxes: rotated boxes are replaced by their axis-aligned envelope (the SDK's
converter does that geometry), boxes are clipped to the image, labels outside the config are
skipped with a warning (a label's old name listed in its `predicted_values` counts as the
label), and an annotation with no box stays as a negative image. Each task's train/validation
split is a hash of its id: stable across runs, so the promotion gate always compares models
on the same kind of split.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from backend.audit import split_key
from backend.errors import BackendError, ImageError
from backend.files import atomic_write
from backend.labelstudio.images import ImageLoader
from backend.labelstudio.label_config import BoxControl
from backend.labelstudio.regions import RegionSkipped, region_box

logger = logging.getLogger(__name__)


class NotEnoughData(BackendError):
    """Too few usable annotated images to train and validate."""

    status = 409
    code = "not_enough_data"


@dataclass(frozen=True)
class YoloBox:
    """One box in YOLO form: class index and normalised centre/size."""

    class_index: int
    cx: float
    cy: float
    w: float
    h: float

    def line(self) -> str:
        return f"{self.class_index} {self.cx:.6f} {self.cy:.6f} {self.w:.6f} {self.h:.6f}"

    @classmethod
    def parse(cls, line: str) -> YoloBox:
        """The box a `line()` wrote."""
        index, cx, cy, w, h = line.split()
        return cls(int(index), float(cx), float(cy), float(w), float(h))

    def pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """x1, y1, x2, y2 in the pixels of an image `width` x `height`."""
        x, y = self.cx * width, self.cy * height
        half_w, half_h = self.w * width / 2, self.h * height / 2
        return x - half_w, y - half_h, x + half_w, y + half_h


@dataclass(frozen=True)
class LabeledImage:
    """A task's ground truth for training."""

    task_id: int
    annotation_id: int
    image_ref: str
    boxes: tuple[YoloBox, ...]


MIN_OBJECT_PX = 16  # the median box's short side a from-scratch training size aims for


@dataclass
class ExportStats:
    """What went into a dataset, and what was left out and why."""

    tasks: int = 0
    train: int = 0
    val: int = 0
    boxes: int = 0
    val_boxes: int = 0
    negatives: int = 0
    class_counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    long_sides: list[int] = field(default_factory=list)  # per image, pixels
    box_short_sides: list[float] = field(default_factory=list)  # per box, pixels

    def scratch_image_size(self) -> int:
        """The training size for a model with no size of its own (a random init): the median
        image's long side, enlarged until the median box's short side reaches MIN_OBJECT_PX
        (tiny objects vanish at YOLO's stride 8), as a multiple of 32 in [64, 640]."""
        if not self.long_sides:
            return 640
        size = float(np.median(self.long_sides))
        if self.box_short_sides:
            size *= max(1.0, MIN_OBJECT_PX / max(float(np.median(self.box_short_sides)), 1.0))
        return int(min(640, max(64, math.ceil(size / 32) * 32)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "train_images": self.train,
            "val_images": self.val,
            "boxes": self.boxes,
            "val_boxes": self.val_boxes,
            "negative_images": self.negatives,
            "class_counts": dict(self.class_counts),
            "skipped": dict(self.skipped),
        }


def fetch_annotated_tasks(
    sdk: Any, project_id: int, page_size: int = 100
) -> Iterator[dict[str, Any]]:
    """Every annotated task of the project with its annotations (the SDK pages for us)."""
    pager = sdk.tasks.list(
        project=project_id, fields="all", only_annotated=True, page_size=page_size
    )
    for task in pager:
        yield task.model_dump() if hasattr(task, "model_dump") else dict(task)


def fetch_unlabeled_refs(
    sdk: Any, project_id: int, value_key: str, page_size: int = 100
) -> list[str]:
    """The image references (`data[value_key]`) of the project's tasks without annotations
    (skipped ones included: Label Studio's `total_annotations` leaves them out): the
    unlabeled pictures a first model's backbone pretrains on."""
    pager = sdk.tasks.list(
        project=project_id, fields="all", include="id,data,total_annotations", page_size=page_size
    )
    refs = []
    for task in pager:
        item = task.model_dump() if hasattr(task, "model_dump") else dict(task)
        ref = (item.get("data") or {}).get(value_key)
        if not item.get("total_annotations") and isinstance(ref, str) and ref:
            refs.append(ref)
    return refs


def latest_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The newest annotation that was not cancelled (skipped), or None."""
    candidates = [
        a
        for a in task.get("annotations") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda a: (str(a.get("updated_at") or ""), int(a.get("id") or 0)))


def task_to_labeled(
    task: dict[str, Any],
    controls: Sequence[BoxControl],
    classes: Sequence[str],
    skipped: Counter[str],
) -> LabeledImage | None:
    """A task's YOLO ground truth from its newest annotation; None if it has none usable.

    `controls` must share one image field (the first control's); reasons for anything left
    out are counted in `skipped`.
    """
    annotation = latest_annotation(task)
    if annotation is None:
        skipped["no non-cancelled annotation"] += 1
        return None
    value_key = controls[0].value_key
    ref = (task.get("data") or {}).get(value_key)
    if not isinstance(ref, str) or not ref:
        skipped[f"task data has no {value_key!r}"] += 1
        return None
    names = {c.from_name for c in controls}
    index = {name: i for i, name in enumerate(classes)}
    # A region may carry a label's old name that the config now lists in the label's
    # `predicted_values` (a rename that keeps the class): it counts as that label.
    for control in controls:
        for alias, label in control.class_to_label.items():
            if label in index:
                index.setdefault(alias, index[label])
    boxes = []
    for region in annotation.get("result") or []:
        if not isinstance(region, dict) or region.get("from_name") not in names:
            continue
        if region.get("type") != "rectanglelabels":
            continue
        box = _region_box(region, index, skipped, task.get("id"))
        if box is not None:
            boxes.append(box)
    return LabeledImage(
        task_id=int(task["id"]),
        annotation_id=int(annotation.get("id") or 0),
        image_ref=ref,
        boxes=tuple(boxes),
    )


def _region_box(
    region: dict[str, Any], index: dict[str, int], skipped: Counter[str], task_id: object
) -> YoloBox | None:
    try:
        box = region_box(region)
    except RegionSkipped as skip:
        skipped[skip.reason] += 1
        if skip.reason == "malformed box":
            logger.warning("task=%s: malformed rectangle %s; box skipped", task_id, region)
        return None
    class_index = index.get(box.label, index.get(box.label.lower()))
    if class_index is None:
        skipped["label not in the config"] += 1
        logger.warning(
            "task=%s: label %s is not in the label config; box skipped", task_id, box.label
        )
        return None
    if box.clipped:
        skipped["box clipped to the image"] += 1
    return YoloBox(
        class_index=class_index,
        cx=(box.x1 + box.x2) / 200.0,
        cy=(box.y1 + box.y2) / 200.0,
        w=(box.x2 - box.x1) / 100.0,
        h=(box.y2 - box.y1) / 100.0,
    )


def validation_tasks(task_ids: Sequence[int], val_percent: int) -> set[int]:
    """The validation tasks: the share of tasks (at least one, never all) with the lowest
    hash keys.

    The keys are the audit slice's (`backend.audit`): with the queue serving the slice at
    this share, the validation tasks are the labeled audit tasks. A hash threshold alone
    leaves small projects to chance (10 labels gave 5 validation tasks
    in one project and 1 in another); taking the lowest keys gives every project its share,
    and as a project grows only tasks whose keys lie near the share move sides.
    """
    ids = sorted(set(task_ids), key=split_key)
    if len(ids) < 2:
        raise ValueError("a split needs at least two tasks")
    wanted = min(len(ids) - 1, max(1, round(len(ids) * val_percent / 100.0)))
    return set(ids[:wanted])


def write_dataset(
    images: Iterable[LabeledImage],
    loader: ImageLoader,
    out_dir: Path,
    cache_dir: Path,
    classes: Sequence[str],
    val_percent: int,
    min_images: int,
    stats: ExportStats,
) -> Path:
    """Fetch (or reuse cached) images, write images/ + labels/ + data.yaml; returns data.yaml.

    Raises NotEnoughData when fewer than `min_images` usable images remain, or when no split
    can hold at least one image.
    """
    usable: list[tuple[LabeledImage, Path]] = []
    for item in images:
        try:
            usable.append((item, _cached_image(item, loader, cache_dir)))
        except ImageError as exc:
            stats.skipped["image unavailable"] += 1
            logger.warning(
                "task=%s: image unavailable, left out of training: %s", item.task_id, exc
            )
    if len(usable) < max(2, min_images):
        raise NotEnoughData(
            f"{len(usable)} usable annotated images; training needs at least {max(2, min_images)}"
        )
    validation = validation_tasks([item.task_id for item, _ in usable], val_percent)
    for item, cached in usable:
        split = "val" if item.task_id in validation else "train"
        image_dir, label_dir = out_dir / "images" / split, out_dir / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        target = image_dir / cached.name
        if not target.exists():
            _link_or_copy(cached, target)
        (label_dir / f"{cached.stem}.txt").write_text("".join(b.line() + "\n" for b in item.boxes))
        stats.val += split == "val"
        stats.train += split == "train"
        stats.boxes += len(item.boxes)
        stats.val_boxes += len(item.boxes) if split == "val" else 0
        stats.negatives += not item.boxes
        width, height = _pixel_size(cached)
        stats.long_sides.append(max(width, height))
        stats.box_short_sides.extend(min(b.w * width, b.h * height) for b in item.boxes)
        stats.class_counts.update(classes[b.class_index] for b in item.boxes)
    data_yaml = out_dir / "data.yaml"
    names = "".join(f"  {i}: {yaml_string(name)}\n" for i, name in enumerate(classes))
    data_yaml.write_text(
        f"path: {yaml_string(str(out_dir.resolve()))}\ntrain: images/train\nval: images/val\n"
        f"names:\n{names}"
    )
    return data_yaml


def _cached_image(item: LabeledImage, loader: ImageLoader, cache_dir: Path) -> Path:
    """The task's image in the per-project cache, fetched once per (task, URL).

    Cached as training must see it (`ImageLoader.training_file`): the boxes were drawn on the
    displayed picture, so a rotated (EXIF) or high-bit-depth image is stored as that 8-bit
    picture; a plain file keeps its bytes.
    """
    key = hashlib.sha256(item.image_ref.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = f"task{item.task_id}-{key}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(cache_dir.glob(f"{stem}.*"))
    if found:
        return found[0]
    data, suffix = loader.training_file(loader.read(item.image_ref), item.image_ref)
    return atomic_write(cache_dir / f"{stem}{suffix}", data)


def _pixel_size(path: Path) -> tuple[int, int]:
    """(width, height) of a cached training image, from its header."""
    with Image.open(path) as image:
        return image.size


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


def yaml_string(text: str) -> str:
    """A double-quoted YAML scalar (label names may hold ':' or '#')."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
