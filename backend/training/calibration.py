"""Which of a model version's boxes annotators are shown: the display threshold that costs
them the fewest seconds on the validation split.

A fixed MODEL_SCORE_THRESHOLD suits one model and not the next. A model trained on a few
dozen labels is under-confident: at 0.25 most of its right boxes are hidden and drawn by hand
(25 s each), while at 0.1 they would only need adjusting. A confident model shown at 0.1
adds boxes to delete. So every trained version is priced at each threshold of a grid on its
validation split (the audit slice, `backend.audit`) with the annotator-cost model
(`analytics.cost`), and the cheapest threshold is stored with the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.analytics.cost import ActionSeconds
from backend.analytics.matching import LabeledBox, edit_counts, match_boxes
from backend.config import Settings
from backend.labelstudio.images import ImageLoader
from backend.models.detector import Detector, ImageDetections, ModelSource
from backend.training.dataset import YoloBox

THRESHOLD_GRID: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7)


def shown_boxes(found: ImageDetections, names: Sequence[str], threshold: float) -> list[LabeledBox]:
    """The pre-annotation an annotator sees: the boxes at or above `threshold`, labelled."""
    return [
        LabeledBox(b.x1, b.y1, b.x2, b.y2, names[b.class_id])
        for b in found.boxes
        if b.conf >= threshold
    ]


def cheapest_threshold(
    found: Sequence[ImageDetections],
    truth: Sequence[Sequence[LabeledBox]],
    names: Sequence[str],
    costs: ActionSeconds,
    default: float,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[float, dict[float, float]]:
    """The grid threshold whose shown boxes cost the fewest annotator seconds over the images,
    and the seconds at every threshold. Among equally cheap thresholds the one nearest
    `default` (MODEL_SCORE_THRESHOLD) wins, then the higher: a few validation images where
    every threshold costs the same must not move the display to an extreme.

    Args:
        found: the model's detections per image (every kept box, with its confidence).
        truth: the labeled boxes per image, in the same unit as `found`'s boxes.
        names: the model's class names, by class id.
        costs: seconds per edit.
        default: MODEL_SCORE_THRESHOLD, which ties resolve towards.
        grid: thresholds to try, each at or above the detector's confidence floor.
    """
    if len(found) != len(truth):
        raise ValueError(f"{len(found)} detections for {len(truth)} labeled images")
    if not grid:
        raise ValueError("the threshold grid is empty")
    seconds: dict[float, float] = {}
    for threshold in grid:
        total = 0.0
        for detections, boxes in zip(found, truth, strict=True):
            shown = shown_boxes(detections, names, threshold)
            total += costs.image_seconds(edit_counts(match_boxes(shown, boxes)))
        seconds[float(threshold)] = total
    best = min(seconds.values())
    cheapest = [t for t, s in seconds.items() if s <= best + 1e-9]
    return min(cheapest, key=lambda t: (abs(t - default), -t)), seconds


def calibrate(
    settings: Settings,
    loader: ImageLoader,
    weights: Path,
    data_dir: Path,
    classes: Sequence[str],
) -> dict[str, Any] | None:
    """The display threshold of `weights` on the dataset's validation split (the YOLO folder
    `write_dataset` wrote), or None when that split holds no box to price."""
    images = sorted((data_dir / "images" / "val").glob("*"))
    pictures, truth = [], []
    for path in images:
        picture = loader.decode(path.read_bytes(), path.name)
        label_file = data_dir / "labels" / "val" / f"{path.stem}.txt"
        boxes = []
        for line in label_file.read_text(encoding="utf-8").splitlines():
            box = YoloBox.parse(line)
            x1, y1, x2, y2 = box.pixels(picture.width, picture.height)
            boxes.append(LabeledBox(x1, y1, x2, y2, classes[box.class_index]))
        pictures.append(picture.pixels)
        truth.append(boxes)
    if not any(truth):
        return None
    detector = Detector(
        ModelSource(version="candidate", weights=weights, kind="registry"), settings
    )
    found = detector.predict(pictures)
    grid = [t for t in THRESHOLD_GRID if t >= settings.detect_conf_floor]
    threshold, seconds = cheapest_threshold(
        found, truth, list(detector.names), ActionSeconds(), settings.score_threshold, grid
    )
    return {
        "threshold": threshold,
        "images": len(pictures),
        "seconds_by_threshold": {f"{t:g}": round(s, 1) for t, s in seconds.items()},
    }
