"""What the backend serves for a label config: one `BoxControl` per RectangleLabels tag.

Parsing is done by `label_studio_sdk.label_interface`; this module only turns its tags into
small frozen dataclasses the rest of the backend uses, and validates the attributes users set
on the tags (`model_score_threshold`, `model_path`, `model_skip`, `predicted_values`).

Pure: nothing here touches the file system. Whether a `model_path` may be served (it must lie
under MODELS_ROOT) is decided where the weights are loaded, `backend.models.detector`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from label_studio_sdk.label_interface import LabelInterface

from backend.errors import LabelConfigError

_TRUE = {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class BoxControl:
    """A RectangleLabels tag over an Image tag."""

    from_name: str  # the RectangleLabels tag's name
    to_name: str  # the Image tag's name
    value_key: str  # the task data field holding the image URL ("image" for value="$image")
    labels: tuple[str, ...]
    class_to_label: Mapping[str, str]  # lower-cased model class name -> label (the label's own
    # name always maps to itself, so a model retrained on these labels keeps serving them)
    score_threshold: float | None  # model_score_threshold attribute, if set
    model_path: str | None  # model_path attribute, if set
    queue_attributes: Mapping[str, str] = field(default_factory=dict)  # al_* attributes

    def label_for(self, class_name: str) -> str | None:
        """The label a model class maps to (case-insensitive), or None to drop the box."""
        return self.class_to_label.get(class_name.lower())


@dataclass(frozen=True)
class ParsedConfig:
    """Every servable control of one label config."""

    controls: tuple[BoxControl, ...]

    @property
    def primary_controls(self) -> tuple[BoxControl, ...]:
        """The controls over the first control's image field: training, ranking and the
        annotation analytics read boxes of that image only."""
        field_key = self.controls[0].value_key
        return tuple(c for c in self.controls if c.value_key == field_key)

    @property
    def labels(self) -> tuple[str, ...]:
        """All labels over all controls, first occurrence order, no repeats."""
        return tuple(dict.fromkeys(label for c in self.controls for label in c.labels))


@functools.lru_cache(maxsize=128)
def parse_label_config(xml: str) -> ParsedConfig:
    """Parse and validate `xml`; raises LabelConfigError when nothing can be served.

    Cached: Label Studio sends the same config with every request.
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("label config is empty")
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # the SDK raises assorted XML / validation errors
        raise LabelConfigError(f"label config cannot be parsed: {exc}") from exc
    controls = []
    for tag in interface.controls:
        if tag.tag != "RectangleLabels":
            continue
        attrs = tag.attr or {}
        if str(attrs.get("model_skip", "")).lower() in _TRUE:
            continue
        images = [o for o in tag.objects if o.tag == "Image"]
        if not images:
            continue
        image = images[0]
        value = str(image.value or "")
        if not value.startswith("$") or len(value) < 2:
            raise LabelConfigError(
                f'Image tag {image.name!r} must take its URL from task data (value="$field")'
            )
        labels = tuple(tag.labels)
        if not labels:
            raise LabelConfigError(f"RectangleLabels {tag.name!r} has no Label")
        controls.append(
            BoxControl(
                from_name=tag.name,
                to_name=image.name,
                value_key=value[1:],
                labels=labels,
                class_to_label=_class_map(tag.name, tag.labels_attrs),
                score_threshold=_threshold(tag.name, attrs.get("model_score_threshold")),
                model_path=_model_path(tag.name, attrs.get("model_path")),
                queue_attributes=MappingProxyType(
                    {k: str(v) for k, v in attrs.items() if k.startswith("al_")}
                ),
            )
        )
    if not controls:
        raise LabelConfigError(
            "label config has no RectangleLabels over an Image (without model_skip); "
            "this backend serves bounding boxes only"
        )
    return ParsedConfig(tuple(controls))


def _class_map(control: str, label_tags: Mapping[str, object]) -> Mapping[str, str]:
    mapping: dict[str, str] = {}
    for label, label_tag in label_tags.items():
        attrs = getattr(label_tag, "attr", None) or {}
        predicted = attrs.get("predicted_values")
        names = [label] + ([n.strip() for n in predicted.split(",")] if predicted else [])
        for name in filter(None, names):
            key = name.lower()
            if mapping.get(key, label) != label:
                raise LabelConfigError(
                    f"{control}: model class {name!r} maps to both {mapping[key]!r} and {label!r}"
                )
            mapping[key] = label
    return MappingProxyType(mapping)


def _threshold(control: str, raw: object) -> float | None:
    if raw in (None, ""):
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise LabelConfigError(
            f"{control}: model_score_threshold must be a number, got {raw!r}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise LabelConfigError(f"{control}: model_score_threshold must be in [0, 1], got {value}")
    return value


def _model_path(control: str, raw: object) -> str | None:
    """The model_path attribute as written; unset or "" means none. Blank or NUL: refused."""
    if raw in (None, ""):
        return None
    value = str(raw)
    if not value.strip() or "\0" in value:
        raise LabelConfigError(f"{control}: model_path must be a file path, got {raw!r}")
    return value
