"""Interactive assist as Label Studio 1.23 drives it: a backend marked for interactive
preannotations, and the editor's call (`POST /api/ml/{id}/interactive-annotating`) with the
annotator's rough rectangle or click, which Label Studio forwards to /predict's
`params.context`; what comes back is what the editor shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from devkit.datagen import CLASSES, drawn_click, drawn_rectangle, region_iou
from devkit.demo import BackendServer
from devkit.local_label_studio import LocalLabelStudio

from .browser import draw_smart_rectangle
from .conftest import ShapesProject

SMART_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" smart="true">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + '</RectangleLabels><KeyPointLabels name="click" toName="image" smart="true">'
    '<Label value="Object"/></KeyPointLabels></View>'
)


def test_label_studio_forwards_a_rough_rectangle_and_a_click_and_gets_the_object(
    label_studio: LocalLabelStudio, ml_backend: BackendServer, shapes_project: ShapesProject
) -> None:
    source = min(shapes_project.files)
    sample = shapes_project.truth[source]
    width, height = sample.image.size
    project_id = label_studio.create_project("e2e interactive assist", SMART_CONFIG)
    [task_id] = label_studio.import_images(project_id, [shapes_project.files[source]])
    connection = label_studio.connect_ml_backend(project_id, ml_backend.url, interactive=True)
    headers = label_studio.auth_headers()

    def assist(region: dict[str, Any]) -> list[dict[str, Any]]:
        answer = requests.post(
            f"{label_studio.url}/api/ml/{connection.id}/interactive-annotating",
            json={"task": task_id, "context": {"result": [region]}},
            headers=headers,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "errors" not in body, body
        return list(body["data"]["result"])

    for box in sample.boxes:
        [region] = assist(drawn_rectangle(box, (width, height)))
        assert region["value"]["rectanglelabels"] == [box.label.capitalize()]
        assert region_iou(region, box, (width, height)) >= 0.6, (region, box)
    box = sample.boxes[0]
    [region] = assist(drawn_click(box, (width, height)))
    assert region["from_name"] == "label" and region_iou(region, box, (width, height)) >= 0.6


def test_in_the_editor_a_rough_smart_rectangle_comes_back_as_the_object(
    label_studio: LocalLabelStudio,
    ml_backend: BackendServer,
    shapes_project: ShapesProject,
    chromium: Path,
    test_output_dir: Path,
) -> None:
    """Headless Chromium: Auto-Annotation on, the smart rectangle tool, a rough drag around an
    object; the editor lists the backend's box as a suggestion (screenshot)."""
    source = max(shapes_project.files)
    sample = shapes_project.truth[source]
    box = sample.boxes[0]
    project_id = label_studio.create_project("e2e assist in the editor", SMART_CONFIG)
    [task_id] = label_studio.import_images(project_id, [shapes_project.files[source]])
    headers = label_studio.auth_headers()
    unshown = requests.patch(  # no pre-annotation in the editor: only what assist brings
        f"{label_studio.url}/api/projects/{project_id}",
        json={"show_collab_predictions": False},
        headers=headers,
        timeout=60,
    )
    assert unshown.status_code == 200, unshown.text
    label_studio.connect_ml_backend(project_id, ml_backend.url, interactive=True)
    rough = drawn_rectangle(box, sample.image.size)["value"]
    width, height = sample.image.size
    corners = (
        rough["x"] * width / 100,
        rough["y"] * height / 100,
        (rough["x"] + rough["width"]) * width / 100,
        (rough["y"] + rough["height"]) * height / 100,
    )
    screenshot = test_output_dir / "e2e-interactive-assist.png"

    answer = draw_smart_rectangle(
        label_studio.url,
        label_studio.username,
        label_studio.password,
        project_id,
        task_id,
        corners,
        width,
        box.label.capitalize(),
        screenshot,
        chromium=chromium,
    )

    [region] = answer["data"]["result"]
    assert region["value"]["rectanglelabels"] == [box.label.capitalize()]
    assert region_iou(region, box, sample.image.size) >= 0.6
    assert screenshot.stat().st_size > 10_000
