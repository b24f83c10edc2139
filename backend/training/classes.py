"""When the label config's classes change: which old class each new one continues, by name.

A project's classes are its label config's labels in config order (`export_labeled`); the live
model knows the classes it was trained on, in its own order. Classes are matched by name,
never by position: an old class continues the new class of the same name (case-insensitive),
or the label whose `predicted_values` lists the old name (the way to rename a label and keep
its model rows and its annotations). Any other rename is a removed class plus an added one.

`grow_head` turns the live model into the next fine-tune's starting weights for the new class
list: every tensor copied, the class outputs copied row by row by name, new classes starting
from the detection head's usual prior, removed ones dropped. `restricted_dataset` rewrites a
dataset for the live model's classes, so the promotion gate can compare both models on the
classes both know.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from backend.labelstudio.label_config import BoxControl
from backend.training.dataset import YoloBox, yaml_string

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassChange:
    """The live model's classes (`old`, model order) against the dataset's (`new`)."""

    old: tuple[str, ...]
    new: tuple[str, ...]
    source: tuple[int | None, ...]  # per new index: the old index it continues, or None

    @property
    def unchanged(self) -> bool:
        return self.old == self.new

    @property
    def shared(self) -> tuple[str, ...]:
        """New classes an old one continues (their new names), in new order."""
        return tuple(n for n, s in zip(self.new, self.source, strict=True) if s is not None)

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(n for n, s in zip(self.new, self.source, strict=True) if s is None)

    @property
    def removed(self) -> tuple[str, ...]:
        kept = set(self.source)
        return tuple(o for i, o in enumerate(self.old) if i not in kept)

    def old_to_new(self) -> dict[int, int]:
        """Old class index -> new class index, for the classes both know."""
        return {s: n for n, s in enumerate(self.source) if s is not None}

    def as_dict(self) -> dict[str, Any]:
        renamed = {
            self.old[s]: n
            for n, s in zip(self.new, self.source, strict=True)
            if s is not None and self.old[s] != n
        }
        return {
            "shared": list(self.shared),
            "added": list(self.added),
            "removed": list(self.removed),
            "renamed": renamed,
        }


def label_aliases(controls: Sequence[BoxControl]) -> dict[str, str]:
    """Lower-cased class name -> label over `controls`: every label's own name and its
    `predicted_values`, first control first."""
    aliases: dict[str, str] = {}
    for control in controls:
        for name, label in control.class_to_label.items():
            aliases.setdefault(name, label)
    return aliases


def class_change(
    old: Sequence[str], new: Sequence[str], aliases: Mapping[str, str] | None = None
) -> ClassChange:
    """Match the live model's classes `old` to the dataset's `new` by name.

    An old class continues the new class `aliases` maps its lower-cased name to (a label's own
    name or one of its `predicted_values`, `label_aliases`), else the new class of the same
    name ignoring case. When several old classes land on one new class, the one with the
    new class's own name wins, else the first in model order.
    """
    lowered = {name.lower(): i for i, name in reversed(list(enumerate(new)))}
    aliases = aliases or {}
    source: list[int | None] = [None] * len(new)
    exact: list[bool] = [False] * len(new)
    for i, name in enumerate(old):
        target = aliases.get(name.lower())
        n = lowered.get((target or name).lower())
        if n is None:
            continue
        is_exact = name.lower() == new[n].lower()
        if source[n] is None or (is_exact and not exact[n]):
            source[n], exact[n] = i, is_exact
    return ClassChange(tuple(old), tuple(new), tuple(source))


def model_class_names(weights: Path) -> tuple[str, ...]:
    """The class names of a YOLO checkpoint, in class-id order."""
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)

    names = YOLO(str(weights), task="detect").names
    return tuple(str(names[i]) for i in sorted(names))


def class_output_keys(model: torch.nn.Module, nc: int) -> set[str]:
    """The state-dict keys of a detection model's class outputs: the last conv of each
    `cv3` (and `one2one_cv3`) branch of its `Detect` head, whose out_channels are `nc`."""
    head = model.model[-1]  # type: ignore[index]
    keys = set()
    prefix = f"model.{len(model.model) - 1}"  # type: ignore[arg-type]
    for attr in ("cv3", "one2one_cv3"):
        for i, branch in enumerate(getattr(head, attr, None) or ()):
            last = branch[-1]
            if getattr(last, "out_channels", None) == nc:
                keys.update(
                    f"{prefix}.{attr}.{i}.{len(branch) - 1}.{p}" for p in ("weight", "bias")
                )
    return keys


def grow_head(weights: Path, change: ClassChange, target: Path) -> dict[str, Any]:
    """Write `target`: the model at `weights` with its class outputs fitted to `change.new`.

    The model is rebuilt from its own yaml for the new class count; every tensor of the same
    shape is copied, and each class-output row of a shared class is copied from its old row
    (by name, `change.source`). Added classes keep the fresh head's rows: random weights and
    the prior bias ultralytics' `Detect.bias_init` gives (log(5 / nc / (640 / stride)^2));
    removed classes' rows are dropped. Returns what was copied, for the run's meta.
    """
    from ultralytics import YOLO  # noqa: PLC0415  (after prepare_ultralytics)
    from ultralytics.nn.tasks import DetectionModel  # noqa: PLC0415

    yolo = YOLO(str(weights), task="detect")
    source = yolo.model
    if len(source.names) != len(change.old):
        raise ValueError(f"{weights} has {len(source.names)} classes, expected {len(change.old)}")
    grown = DetectionModel(copy.deepcopy(source.yaml), nc=len(change.new), verbose=False)
    grown.names = dict(enumerate(change.new))
    old_state, new_state = source.float().state_dict(), grown.state_dict()
    class_keys = class_output_keys(grown, len(change.new))
    if class_keys != class_output_keys(source, len(change.old)):
        raise ValueError(f"{weights}: its class outputs are not those of a rebuilt model")
    rows = torch.tensor([s for s in change.source if s is not None], dtype=torch.long)
    kept = torch.tensor([s is not None for s in change.source], dtype=torch.bool)
    copied, fresh = 0, []
    with torch.no_grad():
        for key, tensor in new_state.items():
            old_tensor = old_state.get(key)
            if old_tensor is None:
                fresh.append(key)
            elif key in class_keys:
                if old_tensor.shape[1:] != tensor.shape[1:]:
                    fresh.append(key)
                    continue
                tensor[kept] = old_tensor[rows].to(tensor.dtype)
                copied += 1
            elif old_tensor.shape == tensor.shape:
                tensor.copy_(old_tensor)
                copied += 1
            else:
                fresh.append(key)
    yolo.model = grown
    target.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(target)
    if fresh:
        logger.warning("%s: %d tensors restart from a fresh init: %s", target, len(fresh), fresh)
    return {"tensors_copied": copied, "tensors_fresh": len(fresh), **change.as_dict()}


def restricted_dataset(data_yaml: Path, change: ClassChange, target: Path) -> Path:
    """A copy of the dataset at `data_yaml` for a model of `change.old`'s classes: the same
    validation images (linked), labels re-indexed to the old classes, boxes of added classes
    left out; returns its data.yaml.

    Per-class AP only ever matches a class's predictions with boxes of that class, so a
    shared class's AP here equals what the same model would score on the full dataset.
    """
    root = data_yaml.parent
    old_index = {n: o for o, n in change.old_to_new().items()}
    # Each image linked, not the folder: ultralytics resolves the split's folder, and through
    # a linked folder it would read the labels next to the original images.
    images = target / "images" / "val"
    images.mkdir(parents=True, exist_ok=True)
    for image in sorted((root / "images" / "val").iterdir()):
        if not (images / image.name).exists():
            os.symlink(image.resolve(), images / image.name)
    labels = target / "labels" / "val"
    labels.mkdir(parents=True, exist_ok=True)
    for source in sorted((root / "labels" / "val").glob("*.txt")):
        lines = []
        for line in source.read_text().splitlines():
            if not line.strip():
                continue
            box = YoloBox.parse(line)
            if box.class_index in old_index:
                lines.append(
                    YoloBox(old_index[box.class_index], box.cx, box.cy, box.w, box.h).line()
                )
        (labels / source.name).write_text("".join(f"{line}\n" for line in lines))
    names = "".join(f"  {i}: {yaml_string(name)}\n" for i, name in enumerate(change.old))
    out = target / "data.yaml"
    out.write_text(
        f"path: {yaml_string(str(target.resolve()))}\ntrain: images/val\nval: images/val\n"
        f"names:\n{names}"
    )
    return out
