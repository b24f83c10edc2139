"""Reading a RectangleLabels region as a box in percent."""

from __future__ import annotations

import pytest

from backend.labelstudio.regions import RegionSkipped, region_box, result_boxes


def rect(**value: object) -> dict:
    base = {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["Car"]}
    return {"id": "r1", "from_name": "label", "type": "rectanglelabels", "value": base | value}


def test_a_plain_box() -> None:
    box = region_box(rect())
    assert (box.x1, box.y1, box.x2, box.y2, box.label) == (10, 20, 40, 60, "Car")
    assert (box.region_id, box.clipped) == ("r1", False)


def test_a_box_over_the_edge_is_clipped_and_a_rotated_one_is_its_envelope() -> None:
    clipped = region_box(rect(x=90))
    assert (clipped.x2, clipped.clipped) == (100.0, True)
    turned = region_box(rect(x=50, y=50, width=10, height=10, rotation=90))
    # turned a quarter about its top-left corner: it now extends left of x
    assert (turned.x1, turned.y1, turned.x2, turned.y2) == pytest.approx((40, 50, 50, 60))


@pytest.mark.parametrize(
    ("region", "reason"),
    [
        (rect(rectanglelabels=[]), "malformed box"),
        (rect(width="wide"), "malformed box"),
        ({"type": "rectanglelabels", "value": "x"}, "malformed box"),
        (rect(x=120), "box outside the image"),
    ],
)
def test_regions_without_a_box_say_why(region: dict, reason: str) -> None:
    with pytest.raises(RegionSkipped, match=reason):
        region_box(region)


def test_a_result_keeps_the_boxes_of_its_controls() -> None:
    other = rect() | {"from_name": "other"}
    choice = {"from_name": "label", "type": "choices", "value": {"choices": ["a"]}}
    boxes = result_boxes([rect(), other, choice, rect(x=500), "junk"], {"label"})
    assert boxes == [region_box(rect())]
    assert result_boxes(None, {"label"}) == []
