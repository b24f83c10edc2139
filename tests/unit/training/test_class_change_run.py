"""A real training run after the label config changed: the head grows from the live model by
name, and the gate compares candidate and live model on the classes both know."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from backend.config import Settings
from backend.labelstudio.label_config import parse_label_config
from backend.project_params import TrainParams
from backend.services import build_services
from backend.training.classes import label_aliases
from backend.training.dataset import ExportStats, LabeledImage, YoloBox
from backend.training.trainer import train_and_register
from devkit.datagen import write_images

CONFIG = parse_label_config(
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Triangle"/><Label value="Ring" predicted_values="Circle"/>'
    '<Label value="Square"/><Label value="Hexagon"/></RectangleLabels></View>'
)
CLASSES = ["Triangle", "Ring", "Square", "Hexagon"]
NEW_NAME = {"triangle": "Triangle", "circle": "Ring", "square": "Square"}


def test_a_run_after_a_class_change_grows_the_head_and_gates_on_shared_classes(
    settings: Settings, trained_weights: Path, image_root: Path
) -> None:
    settings = replace(settings, model_path=None, label_studio_url=None)
    services = build_services(settings)
    live = services.registry.create_version(1, trained_weights, {"classes": ["shapes"]})
    services.registry.promote(1, live.version, reason="the model before the change")

    labeled = []
    for i, (path, sample) in enumerate(write_images(image_root / "class-change", 10, seed=5)):
        width, height = sample.image.size
        boxes = tuple(
            YoloBox(
                CLASSES.index(NEW_NAME[b.label]),
                (b.x1 + b.x2) / 2 / width,
                (b.y1 + b.y2) / 2 / height,
                (b.x2 - b.x1) / width,
                (b.y2 - b.y1) / height,
            )
            for b in sample.boxes
        )
        labeled.append(LabeledImage(i + 1, i + 1, str(path), boxes))
    params = TrainParams.resolve(
        settings,
        {"train_epochs": 2, "train_patience": 0, "train_image_size": 160, "train_val_percent": 40},
    )
    details = train_and_register(
        settings,
        services.registry,
        services.images,
        1,
        1,
        labeled,
        CLASSES,
        ExportStats(),
        params,
        aliases=label_aliases(CONFIG.controls),
    )

    assert details["parent"] == live.version
    assert details["head_growth"]["tensors_fresh"] == 0
    assert details["head_growth"]["added"] == ["Hexagon"]
    assert details["head_growth"]["renamed"] == NEW_NAME
    gate = details["gate"]
    assert gate["classes"]["shared"] == ["Triangle", "Ring", "Square"]
    assert gate["added_ap50"] == {"Hexagon": None}  # no Hexagon box to score it on yet
    # the live model was scored on its own (lower-case) classes, the candidate on the new ones
    assert set(details["live_metrics"]["per_class_ap50"]) <= set(NEW_NAME)
    assert set(details["metrics"]["per_class_ap50"]) <= set(CLASSES) - {"Hexagon"}
    shared = gate["shared_map50"]
    live_mean = sum(details["live_metrics"]["per_class_ap50"].values()) / len(
        details["live_metrics"]["per_class_ap50"]
    )
    assert shared["live"] == live_mean > 0.0  # the live model does find shapes
    assert "shared classes" in gate["reason"]
    assert gate["passed"] == (services.registry.live(1).version == details["version"])
