"""Re-ranking a large project's queue in Label Studio: the queue-version writes against the
one-by-one writes they replaced, measured in the same run against the same Label Studio.

A real Label Studio 1.23 (started as the tests start it) gets N tasks whose image URLs are
never downloaded: the ranking's detections count as cached, so what is timed is its Label
Studio side. Each ranking orders the N tasks anew and writes one prediction (two boxes, the
queue score) for each of the first L (`--queue-length`, the product's `al_queue_length`:
default 1,000; 0: all N).

* fetch: `list_tasks`, the ranking's first stage, over the N tasks.
* queue versions (the product, `backend.ranking.publish`): three rankings of one model. Each
  publishes a new queue version (bulk import in chunks, counted, then one PATCH switching the
  project) and removes the old ones; the first two remove nothing (the version served until a
  switch stays one ranking longer), the third removes the first (L predictions, one DELETE):
  the steady state of every re-rank.
* one by one (the design before queue versions): one `POST /api/predictions/` per task with
  its cluster (a ranking after retraining) and one `PATCH` of score and cluster per task (a
  re-rank without retraining), on 4 threads as it ran, timed on a subset of S tasks and
  extrapolated to N.
* Label Studio's CPU seconds (its process tree, psutil) during each.

The ratios compare the two designs' re-ranks, with and without the fetch.

    python -m benchmarks.queue_writes [--tasks 10000] [--queue-length 1000] [--subset 300]
        [--out FILE]

Label Studio inherits the environment, so its feature flags can be set for a run, e.g.
`fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short=true` (an import then
recounts only the tasks it touches, not every task of the project).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.predictions import DesiredPrediction, list_tasks, read_project
from backend.labelstudio.versions import retired_versions
from backend.ranking.publish import publish_queue, remove_old_versions
from backend.ranking.queue_config import DEFAULT_QUEUE_LENGTH
from devkit.datagen import CLASSES
from devkit.local_label_studio import LocalLabelStudio

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)

MODEL_VERSION = "v1"
IMPORT_BATCH = 5000  # tasks per import request (setup, not timed)
WRITERS = 4  # the one-by-one writer's threads


@dataclass
class Timed:
    """One measured step: wall seconds and Label Studio's CPU seconds meanwhile."""

    what: str
    seconds: float
    ls_cpu_s: float
    count: int = 0  # items written or read

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


class CpuMeter:
    """Label Studio's CPU seconds: its process and every child, user + system."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def seconds(self) -> float:
        total = 0.0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


@contextmanager
def timed(meter: CpuMeter, what: str, count: int, into: list[Timed]) -> Iterator[None]:
    cpu, began = meter.seconds(), time.perf_counter()
    yield
    step = Timed(what, time.perf_counter() - began, meter.seconds() - cpu, count)
    into.append(step)
    print(
        f"  {what:<44} {step.seconds:8.2f} s   LS CPU {step.ls_cpu_s:7.2f} s"
        + (f"   {step.per_s:8.0f}/s" if count else ""),
        flush=True,
    )


def regions(rng: np.random.Generator) -> list[dict[str, Any]]:
    """Two boxes, as the ranking writes a pre-annotation."""
    found = []
    for _ in range(2):
        x, y = rng.uniform(0, 80, size=2)
        found.append(
            {
                "from_name": "label",
                "to_name": "image",
                "type": "rectanglelabels",
                "original_width": 320,
                "original_height": 256,
                "image_rotation": 0,
                "value": {
                    "x": round(float(x), 2),
                    "y": round(float(y), 2),
                    "width": 12.5,
                    "height": 10.0,
                    "rotation": 0,
                    "rectanglelabels": ["Square"],
                },
                "score": round(float(rng.uniform(0.3, 0.95)), 4),
            }
        )
    return found


def queue(
    task_ids: Sequence[int], boxes: dict[int, list[dict[str, Any]]], seed: int
) -> list[tuple[int, DesiredPrediction]]:
    """A ranking's queue: the tasks in a new order, scores position / n."""
    order = np.random.default_rng(seed).permutation(len(task_ids))
    n = len(task_ids)
    return [
        (task_ids[i], DesiredPrediction(boxes[task_ids[i]], position / n))
        for position, i in enumerate(order)
    ]


def one_by_one(calls: Sequence[Callable[[], Any]], workers: int = WRITERS) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), calls))


def import_tasks(ls: LocalLabelStudio, project_id: int, n: int) -> list[int]:
    task_ids: list[int] = []
    for start in range(0, n, IMPORT_BATCH):
        items = [
            {"image": f"http://example.invalid/{i}.png"}
            for i in range(start, min(n, start + IMPORT_BATCH))
        ]
        answer = requests.post(
            f"{ls.url}/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=items,
            headers=ls.auth_headers(),
            timeout=600,
        )
        answer.raise_for_status()
        task_ids += [int(t) for t in answer.json()["task_ids"]]
    return task_ids


def ls_flags() -> dict[str, str]:
    """The Label Studio feature flags this environment sets (Label Studio inherits it)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("fflag_", "ff_", "feat_"))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks in the project")
    parser.add_argument(
        "--subset", type=int, default=300, help="tasks the one-by-one writes are timed on"
    )
    parser.add_argument(
        "--queue-length",
        type=int,
        default=DEFAULT_QUEUE_LENGTH,
        help="tasks each ranking writes, the queue's head (0: all; default %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    written = min(args.queue_length or args.tasks, args.tasks)
    if args.tasks < 1 or not 1 <= args.subset <= args.tasks or args.queue_length < 0:
        parser.error("need 1 <= --subset <= --tasks and --queue-length >= 0")

    work = Path(tempfile.mkdtemp(prefix="queue-writes-"))
    steps: list[Timed] = []
    rng = np.random.default_rng(0)
    print(
        f"queue writes: {args.tasks} tasks, {written} written per ranking, "
        f"one-by-one subset {args.subset}; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start; Label Studio feature "
        f"flags from the environment: {ls_flags() or 'none'}",
        flush=True,
    )
    with LocalLabelStudio(work / "ls", work / "docs") as ls:
        assert ls._process is not None
        meter = CpuMeter(ls._process.pid)
        client = LabelStudioClient(ls.url, ls.legacy_token, timeout=600)
        sdk = client.sdk

        project_id = ls.create_project("queue writes", CONFIG)
        with timed(meter, "setup: import tasks", args.tasks, steps):
            task_ids = import_tasks(ls, project_id, args.tasks)
        boxes = {t: regions(rng) for t in task_ids}

        with timed(meter, "fetch: list tasks", args.tasks, steps):
            fetched = list_tasks(client, project_id)
        assert len(fetched) == args.tasks

        print("queue versions (bulk import + switch, then removal):", flush=True)
        for ranking in (1, 2, 3):
            before = read_project(client, project_id)
            wanted = queue(task_ids, boxes, seed=ranking)[:written]
            with timed(meter, f"ranking {ranking}: publish (import + switch)", written, steps):
                published = publish_queue(client, project_id, before, MODEL_VERSION, wanted)
            old = retired_versions(published.before, published.version, before.model_version)
            removing = sum(published.before[v] for v in old)
            with timed(meter, f"ranking {ranking}: remove old versions", removing, steps):
                removed = remove_old_versions(
                    client, project_id, published.before, published.version, before
                )
            print(
                f"    -> {published.version} served; removed {list(removed.versions)} "
                f"({removed.predictions} predictions)",
                flush=True,
            )
        served = requests.get(
            f"{ls.url}/api/projects/{project_id}/next", headers=ls.auth_headers(), timeout=60
        ).json()
        assert served["id"] == wanted[0][0], "Label Studio does not serve the queue's head"

        print(f"one by one (4 threads), {args.subset} tasks:", flush=True)
        subset = task_ids[: args.subset]
        first = queue(subset, boxes, seed=10)
        creates = [
            lambda t=t, w=w, i=i: sdk.predictions.create(
                task=t,
                result=w.result,
                score=w.score,
                cluster=i % 10,
                model_version="one-by-one",
                project=project_id,
            )
            for i, (t, w) in enumerate(first)
        ]
        with timed(meter, "create: POST per task, with cluster", len(creates), steps):
            created = one_by_one(creates)
        again = queue(subset, boxes, seed=11)
        ids = {int(p.task): int(p.id) for p in created}
        patches = [
            lambda p=ids[t], w=w, i=i: sdk.predictions.update(p, score=w.score, cluster=i % 10)
            for i, (t, w) in enumerate(again)
        ]
        with timed(meter, "re-rank: PATCH per task (score, cluster)", len(patches), steps):
            one_by_one(patches)

    figures = summarise(steps, args.tasks, args.subset)
    print_summary(figures)
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join(
                        [
                            Path(sys.executable).name,
                            "-m",
                            "benchmarks.queue_writes",
                            *(argv or sys.argv[1:]),
                        ]
                    ),
                    "tasks": args.tasks,
                    "written": written,
                    "label_studio_flags": ls_flags(),
                    "subset": args.subset,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "steps": [asdict(s) for s in steps],
                    "figures": figures,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


def summarise(steps: Sequence[Timed], n: int, subset: int) -> dict[str, float]:
    by = {s.what: s for s in steps}
    fetch = by["fetch: list tasks"]
    new = [by["ranking 3: publish (import + switch)"], by["ranking 3: remove old versions"]]
    scale = n / subset
    create = by["create: POST per task, with cluster"]
    patch = by["re-rank: PATCH per task (score, cluster)"]
    new_s = sum(s.seconds for s in new)
    old_patch_s = patch.seconds * scale
    old_create_s = create.seconds * scale
    return {
        "fetch_s": fetch.seconds,
        "new_publish_s": new[0].seconds,
        "new_remove_s": new[1].seconds,
        "new_rerank_writes_s": new_s,
        "new_rerank_ls_cpu_s": sum(s.ls_cpu_s for s in new),
        "new_served_after_s": fetch.seconds + new[0].seconds,  # fetch + import + switch
        "old_rerank_writes_s_extrapolated": old_patch_s,
        "old_rerank_ls_cpu_s_extrapolated": patch.ls_cpu_s * scale,
        "old_after_retraining_writes_s_extrapolated": old_create_s,
        "writes_speedup_vs_patch": old_patch_s / new_s,
        "writes_speedup_vs_create": old_create_s / new_s,
        "rerank_with_fetch_new_s": fetch.seconds + new_s,
        "rerank_with_fetch_old_s": fetch.seconds + old_patch_s,
        "rerank_with_fetch_speedup": (fetch.seconds + old_patch_s) / (fetch.seconds + new_s),
        "ls_cpu_ratio_old_over_new": (patch.ls_cpu_s * scale)
        / max(sum(s.ls_cpu_s for s in new), 1e-9),
    }


def print_summary(f: dict[str, float]) -> None:
    print(
        "\nre-rank (steady state), writes only; one by one writes every task:\n"
        f"  queue versions  {f['new_rerank_writes_s']:8.1f} s  (publish {f['new_publish_s']:.1f}"
        f" + remove {f['new_remove_s']:.1f}); LS CPU {f['new_rerank_ls_cpu_s']:.1f} s\n"
        f"  one by one      {f['old_rerank_writes_s_extrapolated']:8.1f} s  (PATCH, extrapolated);"
        f" LS CPU {f['old_rerank_ls_cpu_s_extrapolated']:.1f} s\n"
        f"  ratio           {f['writes_speedup_vs_patch']:8.1f}x faster "
        f"({f['writes_speedup_vs_create']:.1f}x against a ranking after retraining, which "
        f"created every prediction: {f['old_after_retraining_writes_s_extrapolated']:.1f} s)\n"
        f"  LS CPU          {f['ls_cpu_ratio_old_over_new']:8.1f}x less\n"
        f"with the fetch ({f['fetch_s']:.1f} s): {f['rerank_with_fetch_new_s']:.1f} s vs "
        f"{f['rerank_with_fetch_old_s']:.1f} s ({f['rerank_with_fetch_speedup']:.1f}x); "
        f"the new queue is served after {f['new_served_after_s']:.1f} s (fetch, import, switch)",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
