"""Retrieve predictions, the first ranking and /predict on a large project: a real Label Studio
1.23 and the backend as `make demo` runs it (gunicorn, a tiny model trained here, CPU), at
IMAGE_SIZE 640 as for real photos.

* Retrieve, nothing ranked yet: the Data Manager's "Retrieve Predictions" on the N tasks of a
  project, once against a backend with the product's PREDICT_BUDGET_SECONDS and once
  against one without a budget (0, the design before), each in its own project and MODEL_DIR.
  Per arm: wall time, Label Studio's answer, predictions stored; the first arm is then
  retrieved again until every task holds one.
* The first ranking, detection included (`ls-active-yolo rank`, a process of its own on the
  first backend's MODEL_DIR): wall time, and its stages.
* /predict from the stored ranking: one call with the N ranked tasks (what Label Studio asks
  when their predictions are gone), and the p50 of 200 single-task calls.
* The backend's memory (its gunicorn process tree: RSS and PSS) after all this.

    python -m benchmarks.retrieve_scale [--tasks 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import requests

from backend.config import Settings
from benchmarks.queue_writes import CpuMeter, Timed, timed
from devkit.datagen import CLASSES, write_images
from devkit.demo import BackendServer, retrieve_predictions
from devkit.demo_model import train_shapes_model
from devkit.local_label_studio import LocalLabelStudio, find_free_port

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)
IMAGE_SIZE = "640"
SINGLE_CALLS = 200
CLI = str(Path(sys.executable).parent / "ls-active-yolo")


def stored(ls: LocalLabelStudio, project_id: int) -> int:
    """Predictions Label Studio holds for the project."""
    return sum(1 for _ in ls.client().predictions.list(project=project_id))


def retrieve(ls: LocalLabelStudio, project_id: int) -> dict[str, Any]:
    """One "Retrieve Predictions" on every task: seconds, answer (or error), stored after."""
    began = time.perf_counter()
    try:
        answer: Any = retrieve_predictions(ls, project_id, timeout=600)
    except Exception as exc:  # noqa: BLE001 - the figure is what failed, not a crash
        answer = f"{type(exc).__name__}: {exc}"
    return {
        "seconds": round(time.perf_counter() - began, 2),
        "answer": answer,
        "stored": stored(ls, project_id),
    }


def memory_mb(pid: int) -> dict[str, float]:
    """The process tree's RSS, and its PSS (shared pages split between the processes that
    share them: what the tree costs the machine)."""
    rss = pss = 0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per project")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.tasks < 10:
        parser.error("--tasks must be >= 10")
    work = Path(tempfile.mkdtemp(prefix="retrieve-scale-"))
    figures: dict[str, Any] = {}
    steps: list[Timed] = []
    print(
        f"retrieve scale: {args.tasks} tasks; {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    weights = train_shapes_model(work / "model", work / "ultralytics")
    documents = work / "docs"
    files = [path for path, _ in write_images(documents / "images", args.tasks, seed=3)]
    with LocalLabelStudio(work / "ls", documents) as ls:
        assert ls._process is not None
        meter = CpuMeter(ls._process.pid)
        backends: dict[str, BackendServer] = {}
        projects: dict[str, int] = {}
        try:
            for arm, budget in (
                ("budget", str(Settings().predict_budget_seconds)),
                ("no budget", "0"),
            ):
                settings = {
                    "MODEL_DIR": str(work / arm.replace(" ", "-") / "models"),
                    "MODEL_PATH": str(weights),
                    "LABEL_STUDIO_URL": ls.url,
                    "LABEL_STUDIO_API_KEY": ls.legacy_token,
                    "LOCAL_FILES_DOCUMENT_ROOT": str(documents),
                    "IMAGE_SIZE": IMAGE_SIZE,
                    "PREDICT_BUDGET_SECONDS": budget,
                    "TRAINING": "0",
                }
                backend = BackendServer(find_free_port(), settings, work / arm.replace(" ", "-"))
                backend.start()
                backends[arm] = backend
                projects[arm] = ls.create_project(f"retrieve {arm}", CONFIG)
                ls.import_images(projects[arm], files)
                ls.connect_ml_backend(projects[arm], backend.url)

            print("Retrieve Predictions, nothing ranked:", flush=True)
            for arm in ("no budget", "budget"):
                key = "retrieve_" + arm.replace(" ", "_")
                with timed(meter, f"retrieve ({arm})", args.tasks, steps):
                    figures[key] = retrieve(ls, projects[arm])
                print(f"    -> {figures[key]}", flush=True)
            rounds = [figures["retrieve_budget"]]
            while rounds[-1]["stored"] < args.tasks and len(rounds) < 10:
                rounds.append(retrieve(ls, projects["budget"]))
                print(f"    again -> {rounds[-1]}", flush=True)
            figures["retrieve_budget_rounds"] = rounds

            backend = backends["budget"]
            env = {k: v for k, v in os.environ.items() if k not in backend.settings}
            env.update(backend.settings)
            print("First ranking, detection included:", flush=True)
            began = time.perf_counter()
            ranked = subprocess.run(
                [CLI, "rank", "--project", str(projects["budget"])],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            figures["first_ranking_s"] = round(time.perf_counter() - began, 1)
            figures["first_ranking_output"] = ranked.stdout.strip().splitlines()
            print(f"    {figures['first_ranking_s']} s: {ranked.stdout.strip()}", flush=True)

            tasks = [
                {"id": int(t.id), "data": dict(t.data)}
                for t in ls.client().tasks.list(project=projects["budget"])
            ]
            body = {"project": f"{projects['budget']}.0", "label_config": CONFIG}
            began = time.perf_counter()
            answer = requests.post(
                f"{backend.url}/predict", json={**body, "tasks": tasks}, timeout=600
            )
            answer.raise_for_status()
            figures["predict_all_ranked_s"] = round(time.perf_counter() - began, 2)
            log = backend.log_path.read_text(encoding="utf-8")
            split = re.findall(r"answered \d+ tasks in [\d.]+s: .*", log)
            figures["predict_all_ranked_split"] = split[-1] if split else None
            singles = []
            for task in tasks[:SINGLE_CALLS]:
                began = time.perf_counter()
                requests.post(
                    f"{backend.url}/predict", json={**body, "tasks": [task]}, timeout=60
                ).raise_for_status()
                singles.append(time.perf_counter() - began)
            figures["predict_ranked_p50_ms"] = round(1000 * statistics.median(singles), 2)
            assert backend.pid is not None
            figures["backend_memory"] = memory_mb(backend.pid)
            print(
                f"/predict with {len(tasks)} ranked tasks: {figures['predict_all_ranked_s']} s "
                f"({figures['predict_all_ranked_split']}); one ranked task p50 "
                f"{figures['predict_ranked_p50_ms']} ms; backend memory "
                f"{figures['backend_memory']}",
                flush=True,
            )
        finally:
            for backend in backends.values():
                backend.stop()
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join(
                        ["python", "-m", "benchmarks.retrieve_scale", *(argv or sys.argv[1:])]
                    ),
                    "tasks": args.tasks,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "ls_steps": [s.__dict__ for s in steps],
                    "figures": figures,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
