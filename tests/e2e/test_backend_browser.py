"""What an annotator sees: the backend's boxes drawn in the editor, in headless Chromium."""

from __future__ import annotations

from pathlib import Path

from devkit.local_label_studio import LocalLabelStudio

from .browser import count_task_regions
from .conftest import Retrieval, ShapesProject

SCREENSHOT = "e2e-backend-predictions.png"


def test_editor_shows_the_backend_regions(
    label_studio: LocalLabelStudio,
    shapes_project: ShapesProject,
    retrieved: Retrieval,
    chromium: Path,
    test_output_dir: Path,
) -> None:
    # The task with the most boxes: a count that cannot match by accident.
    task, [prediction] = max(retrieved.predictions.items(), key=lambda kv: len(kv[1][0].result))
    assert len(prediction.result) >= 2
    screenshot = test_output_dir / SCREENSHOT

    shown = count_task_regions(
        label_studio.url,
        label_studio.username,
        label_studio.password,
        shapes_project.project_id,
        task,
        screenshot,
        expected_regions=len(prediction.result),
        chromium=chromium,
    )

    assert shown == len(prediction.result)
    assert screenshot.stat().st_size > 10_000
