"""A label config's classes change: matched by name, the head grown by name, the live model
scored on its own classes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from backend.labelstudio.label_config import parse_label_config
from backend.training.classes import (
    class_change,
    class_output_keys,
    grow_head,
    label_aliases,
    restricted_dataset,
)
from backend.training.dataset import YoloBox
from devkit.datagen import CLASSES


def _config(*labels: str) -> str:
    return (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image">'
        + "".join(labels)
        + "</RectangleLabels></View>"
    )


def test_an_added_class_keeps_every_old_one_by_name() -> None:
    change = class_change(["Car", "Person"], ["Car", "Van", "Person"])
    assert change.source == (0, None, 1)
    assert change.shared == ("Car", "Person")
    assert change.added == ("Van",)
    assert change.removed == ()
    assert change.old_to_new() == {0: 0, 1: 2}
    assert not change.unchanged


def test_reordering_and_removing_follow_names_not_positions() -> None:
    change = class_change(["Car", "Person", "Bike"], ["Bike", "Car"])
    assert change.source == (2, 0)
    assert change.removed == ("Person",)
    assert change.added == ()
    assert change.old_to_new() == {2: 0, 0: 1}


def test_same_classes_are_unchanged() -> None:
    change = class_change(["Car", "Person"], ["Car", "Person"])
    assert change.unchanged
    assert change.source == (0, 1)
    assert change.as_dict() == {
        "shared": ["Car", "Person"],
        "added": [],
        "removed": [],
        "renamed": {},
    }


def test_a_plain_rename_is_a_removed_and_an_added_class() -> None:
    change = class_change(["Car", "Person"], ["Car", "Pedestrian"])
    assert change.source == (0, None)
    assert change.removed == ("Person",)
    assert change.added == ("Pedestrian",)


def test_a_rename_listed_in_predicted_values_is_the_same_class() -> None:
    config = parse_label_config(
        _config('<Label value="Car"/>', '<Label value="Pedestrian" predicted_values="Person"/>')
    )
    aliases = label_aliases(config.controls)
    change = class_change(["Person", "Car"], ["Car", "Pedestrian"], aliases)
    assert change.source == (1, 0)
    assert change.added == change.removed == ()
    assert change.as_dict()["renamed"] == {"Person": "Pedestrian"}


def test_names_match_ignoring_case_and_the_label_s_own_name_wins() -> None:
    # a model trained on lower-case names (the synthetic shapes) serves capitalised labels
    assert class_change(["square", "circle"], ["Circle", "Square"]).source == (1, 0)
    aliases = label_aliases(
        parse_label_config(_config('<Label value="Car" predicted_values="Auto"/>')).controls
    )
    # "Auto" and "Car" both land on Car: the class named Car keeps it, wherever it stands
    assert class_change(["Auto", "Car"], ["Car"], aliases).source == (1,)
    assert class_change(["Auto", "Bus"], ["Car"], aliases).source == (0,)


def _dataset(root: Path, classes: list[str], labels: dict[str, list[YoloBox]]) -> Path:
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for stem, boxes in labels.items():
        (root / "images" / "val" / f"{stem}.jpg").write_bytes(b"jpeg")
        (root / "labels" / "val" / f"{stem}.txt").write_text(
            "".join(b.line() + "\n" for b in boxes)
        )
    data_yaml = root / "data.yaml"
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(classes))
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return data_yaml


def test_the_restricted_dataset_speaks_the_live_model_s_classes(
    tmp_path: Path, ultralytics_dir: Path
) -> None:
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    new = ["Bike", "Van", "Car"]
    data_yaml = _dataset(
        tmp_path / "data",
        new,
        {
            "a": [YoloBox(0, 0.5, 0.5, 0.2, 0.2), YoloBox(1, 0.1, 0.1, 0.1, 0.1)],
            "b": [YoloBox(2, 0.3, 0.3, 0.2, 0.1)],
            "c": [YoloBox(1, 0.6, 0.6, 0.1, 0.1)],  # only the added class: a negative now
        },
    )
    change = class_change(["Car", "Person", "Bike"], new)
    out = restricted_dataset(data_yaml, change, tmp_path / "live")
    labels = out.parent / "labels" / "val"
    assert [YoloBox.parse(x) for x in (labels / "a.txt").read_text().splitlines()] == [
        YoloBox(2, 0.5, 0.5, 0.2, 0.2)
    ]
    assert [YoloBox.parse(x) for x in (labels / "b.txt").read_text().splitlines()] == [
        YoloBox(0, 0.3, 0.3, 0.2, 0.1)
    ]
    assert (labels / "c.txt").read_text() == ""
    assert sorted(p.name for p in (out.parent / "images" / "val").iterdir()) == [
        "a.jpg",
        "b.jpg",
        "c.jpg",
    ]
    assert 'names:\n  0: "Car"\n  1: "Person"\n  2: "Bike"\n' in out.read_text()
    # what ultralytics reads: its own labels, not those beside the original images
    data = check_det_dataset(str(out))
    images = sorted(str(p) for p in Path(data["val"]).iterdir())
    assert [Path(p).parent for p in img2label_paths(images)] == [labels.resolve()] * 3


def _head_rows(weights: Path) -> dict[str, torch.Tensor]:
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect").model.float()
    keys = class_output_keys(model, len(model.names))
    return {k: v for k, v in model.state_dict().items() if k in keys} | {"stride": model.stride}


def test_the_grown_head_copies_rows_by_name_and_starts_new_classes_at_the_prior(
    tmp_path: Path, trained_weights: Path, ultralytics_dir: Path
) -> None:
    from ultralytics import YOLO

    assert CLASSES == ("square", "circle", "triangle")
    change = class_change(CLASSES, ("Circle", "Hexagon", "Square"))  # triangle removed
    report = grow_head(trained_weights, change, tmp_path / "parent.pt")
    assert report["added"] == ["Hexagon"] and report["removed"] == ["Triangle".lower()]
    assert report["tensors_fresh"] == 0

    old, grown = _head_rows(trained_weights), _head_rows(tmp_path / "parent.pt")
    class_keys = sorted(k for k in grown if k != "stride")
    assert len(class_keys) == 6  # weight and bias of the three levels' class convs
    for key in class_keys:
        assert grown[key].shape[0] == 3
        assert torch.equal(grown[key][0], old[key][1])  # circle
        assert torch.equal(grown[key][2], old[key][0])  # square
    for level, stride in enumerate(grown["stride"].tolist()):
        bias = next(k for k in class_keys if k.endswith("bias") and f"cv3.{level}." in k)
        prior = math.log(5 / 3 / (640 / stride) ** 2)
        assert grown[bias][1].item() == pytest.approx(prior, abs=1e-2)  # saved in half

    # every other tensor is the live model's
    live_state = YOLO(str(trained_weights)).model.float().state_dict()
    grown_state = YOLO(str(tmp_path / "parent.pt")).model.float().state_dict()
    others = [k for k in grown_state if k not in class_keys]
    assert others and all(torch.equal(grown_state[k], live_state[k]) for k in others)
    assert YOLO(str(tmp_path / "parent.pt")).names == {0: "Circle", 1: "Hexagon", 2: "Square"}


def test_the_grown_model_finds_the_old_classes_as_before(
    tmp_path: Path, trained_weights: Path, image_root: Path
) -> None:
    from ultralytics import YOLO

    change = class_change(CLASSES, ("triangle", "hexagon", "square", "circle"))
    grow_head(trained_weights, change, tmp_path / "parent.pt")
    images = sorted((image_root / "shapes").glob("*.jpg"))
    found = 0
    for image in images:
        before = YOLO(str(trained_weights)).predict(image, imgsz=160, verbose=False)[0]
        after = YOLO(str(tmp_path / "parent.pt")).predict(image, imgsz=160, verbose=False)[0]
        names_before = [before.names[int(c)] for c in before.boxes.cls]
        names_after = [after.names[int(c)] for c in after.boxes.cls]
        assert names_after == names_before
        assert torch.allclose(after.boxes.xyxy, before.boxes.xyxy, atol=0.5)
        assert torch.allclose(after.boxes.conf, before.boxes.conf, atol=1e-3)
        found += len(names_before)
    assert found >= len(images)  # the model does find shapes: the comparison is not empty
