"""Interactive assist as Label Studio 1.23 drives it: a backend marked for interactive
preannotations, and the editor's call (`POST /api/ml/{id}/interactive-annotating`) with the
annotator's rough rectangle or click, which Label Studio forwards to /predict's
`params.context`; what comes back is what the editor shows."""

from __future__ import annotations

from typing import Any

import requests

from devkit.datagen import CLASSES, drawn_click, drawn_rectangle, region_iou
from devkit.demo import BackendServer
from devkit.local_label_studio import LocalLabelStudio

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
