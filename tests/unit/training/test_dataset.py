"""Label Studio annotations -> YOLO dataset: every edge case of the export."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.config import Settings
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import ImageLoader
from backend.labelstudio.label_config import parse_label_config
from backend.training.dataset import (
    ExportStats,
    NotEnoughData,
    YoloBox,
    latest_annotation,
    task_to_labeled,
    validation_tasks,
    write_dataset,
)

CONFIG = parse_label_config(
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="Car"/><Label value="Person"/></RectangleLabels>'
    '<Choices name="weather" toName="image"><Choice value="sunny"/></Choices></View>'
)
CLASSES = ["Car", "Person"]


def _region(x: float, y: float, w: float, h: float, label: str, rotation: float = 0.0) -> dict:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {
            "x": x,
            "y": y,
            "width": w,
            "height": h,
            "rotation": rotation,
            "rectanglelabels": [label],
        },
    }


def _task(*annotations: dict, task_id: int = 1) -> dict:
    return {
        "id": task_id,
        "data": {"image": "/data/upload/1/a.png"},
        "annotations": list(annotations),
    }


def test_boxes_become_normalised_centres() -> None:
    skipped: Counter[str] = Counter()
    task = _task({"id": 5, "result": [_region(10, 20, 30, 40, "Person")]})
    item = task_to_labeled(task, CONFIG.controls, CLASSES, skipped)
    assert item is not None
    assert item.annotation_id == 5
    assert item.image_ref == "/data/upload/1/a.png"
    assert item.boxes == (YoloBox(1, 0.25, 0.40, 0.30, 0.40),)
    assert not skipped


def test_a_label_line_reads_back_as_the_box_in_pixels() -> None:
    box = YoloBox(1, 0.25, 0.40, 0.30, 0.40)
    assert YoloBox.parse(box.line()) == box
    assert box.pixels(200, 100) == pytest.approx((20.0, 20.0, 80.0, 60.0))


def test_clipping_unknown_labels_other_controls_and_degenerate_boxes() -> None:
    skipped: Counter[str] = Counter()
    result = [
        _region(-10, 90, 30, 20, "Car"),  # clipped to x 0..20, y 90..100
        _region(10, 10, 10, 10, "Bicycle"),  # not in the config
        _region(120, 10, 10, 10, "Car"),  # entirely outside
        {"from_name": "weather", "type": "choices", "value": {"choices": ["sunny"]}},
        {"from_name": "label", "type": "rectanglelabels", "value": {"x": "a"}},  # malformed
    ]
    item = task_to_labeled(_task({"id": 1, "result": result}), CONFIG.controls, CLASSES, skipped)
    assert item is not None
    (box,) = item.boxes
    assert box.class_index == 0
    assert (box.cx, box.cy, box.w, box.h) == pytest.approx((0.10, 0.95, 0.20, 0.10))
    assert skipped == Counter(
        {
            "box clipped to the image": 1,
            "label not in the config": 1,
            "box outside the image": 1,
            "malformed box": 1,
        }
    )


def test_rotated_box_becomes_its_envelope() -> None:
    skipped: Counter[str] = Counter()
    # A 20x10 box rotated 90 degrees about its top-left corner (10, 10) covers x 0..10, y 10..30.
    task = _task({"id": 1, "result": [_region(10, 10, 20, 10, "Car", rotation=90)]})
    item = task_to_labeled(task, CONFIG.controls, CLASSES, skipped)
    assert item is not None
    (box,) = item.boxes
    assert (box.cx, box.cy, box.w, box.h) == pytest.approx((0.05, 0.20, 0.10, 0.20), abs=1e-6)


def test_newest_non_cancelled_annotation_wins_and_empty_is_negative() -> None:
    older = {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "result": [_region(0, 0, 5, 5, "Car")]}
    newer_empty = {"id": 2, "updated_at": "2026-02-01T00:00:00Z", "result": []}
    cancelled = {"id": 3, "updated_at": "2026-03-01T00:00:00Z", "was_cancelled": True, "result": []}
    assert latest_annotation(_task(older, newer_empty, cancelled))["id"] == 2
    skipped: Counter[str] = Counter()
    item = task_to_labeled(_task(older, newer_empty, cancelled), CONFIG.controls, CLASSES, skipped)
    assert item is not None and item.boxes == ()
    assert task_to_labeled(_task(cancelled), CONFIG.controls, CLASSES, skipped) is None
    assert task_to_labeled(_task(), CONFIG.controls, CLASSES, skipped) is None
    assert skipped["no non-cancelled annotation"] == 2


@pytest.mark.parametrize("start", range(0, 500, 50))
def test_small_projects_get_their_validation_share(start: int) -> None:
    # 10 labels: 2 validation tasks (20%) in every project, whatever the ids hash to
    ids = list(range(start, start + 10))
    chosen = validation_tasks(ids, 20)
    assert len(chosen) == 2 and chosen <= set(ids)
    assert validation_tasks(list(reversed(ids)), 20) == chosen  # order does not matter
    assert len(validation_tasks(ids[:2], 90)) == 1  # never every task


def test_validation_sides_stay_put_as_a_project_grows() -> None:
    before = validation_tasks(list(range(200)), 20)
    after = validation_tasks(list(range(400)), 20)
    moved = {t for t in range(200) if (t in before) != (t in after)}
    assert len(after) == 80 and len(moved) <= 12  # only tasks with keys near the share move
    with pytest.raises(ValueError):
        validation_tasks([7], 20)


def _loader(root: Path) -> ImageLoader:
    return ImageLoader(
        Settings(model_dir=root / "m", image_root=root), LabelStudioClient(None, None)
    )


def test_write_dataset_layout_and_negatives(tmp_path: Path) -> None:
    from backend.training.dataset import LabeledImage

    images = []
    for i in range(1, 7):
        path = tmp_path / f"src{i}.png"
        Image.new("RGB", (20, 10)).save(path)
        boxes = () if i == 6 else (YoloBox(i % 2, 0.5, 0.5, 0.2, 0.2),)
        images.append(LabeledImage(task_id=i, annotation_id=i, image_ref=str(path), boxes=boxes))
    stats = ExportStats()
    data_yaml = write_dataset(
        images, _loader(tmp_path), tmp_path / "ds", tmp_path / "cache", CLASSES, 20, 4, stats
    )
    text = data_yaml.read_text()
    assert 'names:\n  0: "Car"\n  1: "Person"\n' in text
    assert stats.train + stats.val == 6 and stats.train >= 1 and stats.val >= 1
    assert stats.negatives == 1 and stats.boxes == 5
    labels = sorted((tmp_path / "ds" / "labels").rglob("*.txt"))
    assert len(labels) == 6
    negative = [p for p in labels if p.name.startswith("task6-")]
    assert negative and negative[0].read_text() == ""
    assert len(list((tmp_path / "cache").iterdir())) == 6  # fetched once, reused next run


def test_not_enough_data(tmp_path: Path) -> None:
    from backend.training.dataset import LabeledImage

    missing = [LabeledImage(1, 1, str(tmp_path / "gone.png"), ()), LabeledImage(2, 2, "", ())]
    stats = ExportStats()
    with pytest.raises(NotEnoughData, match="0 usable"):
        write_dataset(
            missing, _loader(tmp_path), tmp_path / "ds", tmp_path / "c", CLASSES, 20, 4, stats
        )
    assert stats.skipped["image unavailable"] == 2


def _orientation_6_jpeg(path: Path) -> None:
    """A 60x30 photo stored sideways: red left, blue right, shown rotated 90 degrees clockwise."""
    stored = Image.new("RGB", (60, 30), (250, 0, 0))
    stored.paste((0, 0, 250), (30, 0, 60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", exif=exif)


def _sixteen_bit_png(path: Path) -> None:
    """A 256x2 gradient whose right 8-bit reading is 0, 1, ..., 255."""
    steps = np.arange(256).reshape(1, 256).repeat(2, axis=0)
    Image.fromarray((steps * 257).astype(np.uint16)).save(path, "PNG")


def test_training_cache_holds_the_displayed_8_bit_picture(tmp_path: Path) -> None:
    from backend.training.dataset import LabeledImage

    sources = {1: tmp_path / "plain.jpg", 2: tmp_path / "rotated.jpg", 3: tmp_path / "deep.png"}
    Image.new("RGB", (20, 10), (0, 128, 0)).save(sources[1], "JPEG")
    _orientation_6_jpeg(sources[2])
    _sixteen_bit_png(sources[3])
    images = [LabeledImage(i, i, str(path), ()) for i, path in sources.items()]
    loader = _loader(tmp_path)
    cache = tmp_path / "cache"
    write_dataset(images, loader, tmp_path / "ds", cache, CLASSES, 20, 3, ExportStats())
    cached = {int(p.name[4 : p.name.index("-")]): p for p in cache.iterdir()}

    # A plain 8-bit image shown as stored keeps its original bytes.
    assert cached[1].suffix == ".jpg"
    assert cached[1].read_bytes() == sources[1].read_bytes()

    # A rotated photo is cached as the picture Label Studio showed: upright, no EXIF left.
    assert cached[2].suffix == ".png"
    with Image.open(cached[2]) as rotated:
        assert rotated.size == (30, 60)
        assert rotated.getexif().get(0x0112) is None
        shown = loader.decode(sources[2].read_bytes(), "rotated.jpg")
        assert np.array_equal(np.asarray(rotated.convert("RGB"))[:, :, ::-1], shown.pixels)
        assert rotated.getpixel((15, 5))[0] > 200  # red on top

    # A 16-bit image is cached as 8 bits that keep the gradient.
    assert cached[3].suffix == ".png"
    with Image.open(cached[3]) as deep:
        assert deep.mode == "RGB"
        assert np.array_equal(np.asarray(deep)[0, :, 1], np.arange(256, dtype=np.uint8))


def test_unencodable_reference_is_an_unavailable_image(tmp_path: Path) -> None:
    from backend.training.dataset import LabeledImage

    images = [LabeledImage(1, 1, "\ud800.png", ()), LabeledImage(2, 2, "/x\x00.png", ())]
    stats = ExportStats()
    with pytest.raises(NotEnoughData):
        write_dataset(
            images, _loader(tmp_path), tmp_path / "ds", tmp_path / "c", CLASSES, 20, 2, stats
        )
    assert stats.skipped["image unavailable"] == 2


@pytest.mark.parametrize(
    ("long_sides", "box_sides", "expected"),
    [
        ([96, 96, 100], [22.0, 30.0, 40.0], 96),  # digits: the images' own size
        ([512, 512], [8.0, 8.0, 10.0], 640),  # tiny aerial objects: enlarged, capped
        ([300], [12.0], 416),  # 300 * 16 / 12 = 400 -> a multiple of 32
        ([40], [], 64),  # no boxes: the image size, at least 64
        ([], [], 640),
    ],
)
def test_a_scratch_model_trains_at_a_size_chosen_from_the_data(
    long_sides: list[int], box_sides: list[float], expected: int
) -> None:
    stats = ExportStats(long_sides=long_sides, box_short_sides=box_sides)
    assert stats.scratch_image_size() == expected


def test_a_renamed_label_s_old_name_in_predicted_values_counts_as_the_label() -> None:
    config = parse_label_config(
        '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
        '<Label value="Person"/><Label value="Auto" predicted_values="Car,Vehicle"/>'
        "</RectangleLabels></View>"
    )
    skipped: Counter[str] = Counter()
    result = [_region(0, 0, 10, 10, "Car"), _region(50, 50, 10, 10, "Bus")]
    item = task_to_labeled(
        _task({"id": 1, "result": result}), config.controls, ["Person", "Auto"], skipped
    )
    assert item is not None
    assert [b.class_index for b in item.boxes] == [1]  # annotated "Car" before the rename
    assert skipped == Counter({"label not in the config": 1})
