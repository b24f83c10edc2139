"""The annotation ledger against a real Label Studio: annotations posted through the REST API
(a stored prediction accepted, moved, relabeled, cut down and added to; a skipped task; boxes
drawn without a prediction) and one submitted untouched from the editor in headless Chromium
reach a running backend by webhook and land in its ledger with exactly those counts and lead
times; `analytics backfill` finds the same, and the analytics page shows them (screenshot:
test-output/analytics-page.png)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from backend.analytics.ledger import AnnotationLedger, AnnotationRecord
from backend.layout import ModelDir
from devkit.datagen import write_images
from devkit.demo import BackendServer
from devkit.local_label_studio import REPO_ROOT, LocalLabelStudio, find_free_port

from .browser import screenshot_page, submit_task_unchanged
from .conftest import BackendEnv, MakeProject


def rect(x: float, y: float, label: str, region_id: str | None = None) -> dict[str, Any]:
    return {
        **({"id": region_id} if region_id else {}),
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": x, "y": y, "width": 10, "height": 10, "rotation": 0}
        | {"rectanglelabels": [label]},
    }


def post(label_studio: LocalLabelStudio, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(
        f"{label_studio.url}{path}", json=body, headers=label_studio.auth_headers(), timeout=30
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def cli(env: dict[str, str], action: str, project: int) -> str:
    """`ls-active-yolo analytics <action> --project N` with the backend's settings."""
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "analytics", action, "--project", str(project)],
        env=os.environ | env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def wait_for_rows(path: Path, project: int, n: int, timeout: float) -> list[AnnotationRecord]:
    deadline = time.monotonic() + timeout
    rows: list[AnnotationRecord] = []
    while time.monotonic() < deadline:
        if path.exists():
            rows = AnnotationLedger(path).records(project)
            if len(rows) >= n:
                return rows
        time.sleep(0.3)
    raise AssertionError(f"the ledger holds {len(rows)} of {n} annotations after {timeout}s")


def test_annotations_reach_the_ledger_with_their_edits(
    tmp_path: Path,
    label_studio: LocalLabelStudio,
    ls_document_root: Path,
    project_backend_env: BackendEnv,
    make_project: MakeProject,
    chromium: Path,
    test_output_dir: Path,
) -> None:
    files = write_images(ls_document_root / f"analytics-{tmp_path.name}", 4, seed=41)
    project, tasks = make_project("e2e analytics", [p for p, _ in files])
    env = project_backend_env(
        {
            "TRAIN_EVERY": "1000",  # the trainer's loop runs (and syncs the ledger), never trains
            "TRAIN_QUIET_SECONDS": "86400",
        },
    )
    server = BackendServer(find_free_port(), env, tmp_path / "backend").start()
    try:
        label_studio.connect_ml_backend(project, server.url)
        shown = [
            rect(10, 10, "Square"),  # accepted
            rect(40, 10, "Square"),  # moved by 1.5 %: adjusted (IoU 0.74)
            rect(70, 10, "Circle"),  # relabeled
            rect(10, 60, "Triangle"),  # deleted
        ]
        prediction = post(
            label_studio,
            "/api/predictions/",
            {"task": tasks[0], "result": shown, "model_version": "v-e2e", "score": 0.5},
        )
        submitted = [rect(10, 10, "Square"), rect(41.5, 10, "Square"), rect(70, 10, "Triangle")]
        submitted.append(rect(60, 60, "Circle"))  # drawn
        first = post(
            label_studio,
            f"/api/tasks/{tasks[0]}/annotations/",
            {"result": submitted, "lead_time": 42.5, "parent_prediction": prediction["id"]},
        )
        skipped = post(
            label_studio,
            f"/api/tasks/{tasks[1]}/annotations/",
            {"result": [], "was_cancelled": True, "lead_time": 3.0},
        )
        by_hand = post(
            label_studio,
            f"/api/tasks/{tasks[2]}/annotations/",
            {"result": [rect(20, 20, "Circle"), rect(50, 50, "Square")], "lead_time": 51.0},
        )

        # An annotator who opens the task in the editor and submits its boxes untouched.
        editor_shown = [rect(15, 15, "Square", "pa"), rect(55, 55, "Circle", "pb")]
        editor_prediction = post(
            label_studio,
            "/api/predictions/",
            {"task": tasks[3], "result": editor_shown, "model_version": "v-e2e", "score": 0.4},
        )
        submit_task_unchanged(
            label_studio.url,
            label_studio.username,
            label_studio.password,
            project,
            tasks[3],
            2,
            test_output_dir / "analytics-editor-submit.png",
            chromium=chromium,
        )
        from_editor = requests.get(
            f"{label_studio.url}/api/tasks/{tasks[3]}/annotations/",
            headers=label_studio.auth_headers(),
            timeout=30,
        ).json()[0]
        assert from_editor["parent_prediction"] == editor_prediction["id"]
        assert from_editor["lead_time"] > 0
        # Label Studio 1.23 keeps an untouched predicted region's id in the annotation:
        assert sorted(r["id"] for r in from_editor["result"]) == ["pa", "pb"]

        ledger_path = ModelDir(tmp_path / "models").annotation_ledger
        rows = {r.annotation_id: r for r in wait_for_rows(ledger_path, project, 4, 60.0)}
        assert rows[from_editor["id"]].edits == {
            "accepted": 2,
            "adjusted": 0,
            "relabeled": 0,
            "deleted": 0,
            "drawn": 0,
        }

        assert rows[first["id"]].edits == {
            "accepted": 1,
            "adjusted": 1,
            "relabeled": 1,
            "deleted": 1,
            "drawn": 1,
        }
        assert (rows[first["id"]].model_version, rows[first["id"]].lead_time) == ("v-e2e", 42.5)
        assert rows[first["id"]].prediction_id == prediction["id"]
        assert rows[skipped["id"]].cancelled and rows[skipped["id"]].lead_time == 3.0
        assert rows[by_hand["id"]].edits == {
            "accepted": 0,
            "adjusted": 0,
            "relabeled": 0,
            "deleted": 0,
            "drawn": 2,
        }

        backfill = cli(env, "backfill", project)
        assert f"project {project}: 4 annotations recorded" in backfill
        again = {r.annotation_id: r for r in AnnotationLedger(ledger_path).records(project)}
        assert {k: (v.edits, v.lead_time) for k, v in again.items()} == {
            k: (v.edits, v.lead_time) for k, v in rows.items()
        }
        figures = requests.get(f"{server.url}/metrics", timeout=30).json()["projects"]
        overall = figures[str(project)]["annotations"]["overall"]
        assert (overall["annotations"], overall["accepted"], overall["drawn"]) == (4, 3, 3)
        report = cli(env, "report", project)
        assert "v-e2e" in report and "(none)" in report

        shot = test_output_dir / "analytics-page.png"
        text = screenshot_page(
            f"{server.url}/analytics/{project}", shot, wait_for="img", chromium=chromium
        )
        assert "By model version" in text and "v-e2e" in text
        assert shot.stat().st_size > 10_000
    finally:
        server.stop()
