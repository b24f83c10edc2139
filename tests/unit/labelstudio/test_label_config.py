from __future__ import annotations

import pytest

from backend.errors import LabelConfigError
from backend.labelstudio.label_config import parse_label_config


def _config(body: str, image: str = '<Image name="image" value="$image"/>') -> str:
    return f"<View>{image}{body}</View>"


def test_rectangle_labels_parsed_with_attributes() -> None:
    parsed = parse_label_config(
        _config(
            '<RectangleLabels name="label" toName="image" model_score_threshold="0.4" '
            'model_path="/w/x.pt"><Label value="Car" predicted_values="car, truck"/>'
            '<Label value="Person"/></RectangleLabels>'
        )
    )
    (control,) = parsed.controls
    assert control.from_name == "label"
    assert control.to_name == "image"
    assert control.value_key == "image"
    assert control.labels == ("Car", "Person")
    assert control.score_threshold == 0.4
    assert control.model_path == "/w/x.pt"
    assert dict(control.class_to_label) == {"car": "Car", "truck": "Car", "person": "Person"}
    vehicle = parse_label_config(
        _config(
            '<RectangleLabels name="v" toName="image"><Label value="Vehicle" '
            'predicted_values="car,truck"/></RectangleLabels>'
        )
    ).controls[0]
    assert vehicle.label_for("Vehicle") == vehicle.label_for("truck") == "Vehicle"


def test_class_names_map_case_insensitively() -> None:
    parsed = parse_label_config(
        _config('<RectangleLabels name="l" toName="image"><Label value="Bus"/></RectangleLabels>')
    )
    control = parsed.controls[0]
    assert control.label_for("BUS") == "Bus"
    assert control.label_for("bus") == "Bus"
    assert control.label_for("car") is None


def test_several_controls_and_model_skip() -> None:
    parsed = parse_label_config(
        "<View>"
        '<Image name="a" value="$left"/><Image name="b" value="$right"/>'
        '<RectangleLabels name="la" toName="a"><Label value="X"/></RectangleLabels>'
        '<RectangleLabels name="lb" toName="b"><Label value="Y"/></RectangleLabels>'
        '<RectangleLabels name="skip" toName="b" model_skip="true"><Label value="Z"/>'
        "</RectangleLabels></View>"
    )
    assert [(c.from_name, c.value_key) for c in parsed.controls] == [
        ("la", "left"),
        ("lb", "right"),
    ]
    assert parsed.labels == ("X", "Y")


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("", "empty"),
        ("<View><Image", "cannot be parsed"),
        ('<View><Text name="t" value="$t"/></View>', "RectangleLabels"),
        (
            _config('<Choices name="c" toName="image"><Choice value="a"/></Choices>'),
            "RectangleLabels",
        ),
        (
            _config(
                '<RectangleLabels name="l" toName="image" model_skip="true"><Label value="a"/>'
                "</RectangleLabels>"
            ),
            "model_skip",
        ),
        (
            _config(
                '<RectangleLabels name="l" toName="image" model_score_threshold="high">'
                '<Label value="a"/></RectangleLabels>'
            ),
            "must be a number",
        ),
        (
            _config(
                '<RectangleLabels name="l" toName="image" model_score_threshold="1.5">'
                '<Label value="a"/></RectangleLabels>'
            ),
            "in [0, 1]",
        ),
        (
            _config(
                '<RectangleLabels name="l" toName="image"><Label value="A" predicted_values="x"/>'
                '<Label value="B" predicted_values="X"/></RectangleLabels>'
            ),
            "maps to both",
        ),
        (
            _config(
                '<RectangleLabels name="l" toName="image" model_path="   ">'
                '<Label value="a"/></RectangleLabels>'
            ),
            "l: model_path must be a file path",
        ),
    ],
)
def test_unservable_configs_raise_clear_errors(xml: str, message: str) -> None:
    with pytest.raises(LabelConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_label_config(xml)


def test_model_path_is_kept_as_written_and_empty_means_unset() -> None:
    def model_path(attribute: str) -> str | None:
        xml = _config(
            f'<RectangleLabels name="l" toName="image"{attribute}><Label value="a"/>'
            "</RectangleLabels>"
        )
        return parse_label_config(xml).controls[0].model_path

    # The parser only reads the attribute; whether the path may be served (under
    # MODELS_ROOT) is decided by the detector pool, so an outside path parses here.
    assert model_path(' model_path="/etc/shadow"') == "/etc/shadow"
    assert model_path(' model_path="sub/../w.pt"') == "sub/../w.pt"
    assert model_path(' model_path=""') is None
    assert model_path("") is None
