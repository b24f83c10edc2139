"""How the page size of the ranking's task listing (`list_tasks`) changes its time, against a
real Label Studio 1.23 holding N tasks and two queue versions of predictions.

Label Studio's task list counts the predictions and annotations of the whole filtered project
on every page it serves (`TaskPagination`), so the listing costs pages x project size: the
page size is the lever. Each size is timed twice, interleaved, in one run.

    python -m benchmarks.task_listing [--tasks 10000] [--sizes 100,1000,5000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import requests

from backend.labelstudio import predictions
from backend.labelstudio.client import LabelStudioClient
from benchmarks.queue_writes import CONFIG, import_tasks, regions
from devkit.local_label_studio import LocalLabelStudio

VERSIONS = ("v1.q1", "v1.q2")  # the served queue and the one kept one ranking longer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the project")
    parser.add_argument("--sizes", default="100,1000,5000", help="page sizes, comma-separated")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="task-listing-"))
    rng = np.random.default_rng(0)
    print(
        f"task listing: {args.tasks} tasks, {len(VERSIONS)} queue versions; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    with LocalLabelStudio(work / "ls", work / "docs") as ls:
        client = LabelStudioClient(ls.url, ls.legacy_token, timeout=900)
        project_id = ls.create_project("task listing", CONFIG)
        task_ids = import_tasks(ls, project_id, args.tasks)
        for version in VERSIONS:
            queue = [
                {"task": t, "model_version": version, "score": 0.5, "result": regions(rng)}
                for t in task_ids
            ]
            answer = requests.post(
                f"{ls.url}/api/projects/{project_id}/import/predictions",
                json=queue,
                headers=ls.auth_headers(),
                timeout=900,
            )
            answer.raise_for_status()
        default = predictions.PAGE_SIZE
        try:
            for size in sizes * 2:
                predictions.PAGE_SIZE = size
                started = time.perf_counter()
                listed = predictions.list_tasks(client, project_id)
                seconds = time.perf_counter() - started
                assert len(listed) == args.tasks, len(listed)
                print(f"page size {size:>6}: {seconds:6.1f} s", flush=True)
        finally:
            predictions.PAGE_SIZE = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
