"""Webhook answer latency while a training job runs (issue 4's target: p99 < 50 ms).

One run measures, against the same backend (gunicorn, 1 worker x 8 threads, loopback):
  1. a baseline: N webhook events from C concurrent clients, with the trainer idle;
  2. the same load while a real training job runs (a child process fine-tuning YOLO on a
     real Label Studio project's annotations, on the same 2 cores).
Latency is client-side wall time per POST /webhook (connection reused). Bounded: N events,
then it stops.

    python -m benchmarks.webhook_latency [--events 500] [--clients 8] [--images 40]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from devkit.datagen import CLASSES, ls_regions, write_images
from devkit.demo import BackendServer
from devkit.local_label_studio import LocalLabelStudio, find_free_port

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c.capitalize()}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)


def _fire(url: str, project: int, events: int, clients: int, first_id: int) -> list[float]:
    ids = itertools.count(first_id)
    lock = threading.Lock()

    def client(count: int) -> list[float]:
        session = requests.Session()
        out = []
        for _ in range(count):
            with lock:
                annotation = next(ids)
            body = {
                "action": "ANNOTATION_UPDATED",
                "project": {"id": project},
                "annotation": {"id": annotation, "result": [], "task": 1},
            }
            started = time.perf_counter()
            answer = session.post(f"{url}/webhook", json=body, timeout=10)
            out.append(time.perf_counter() - started)
            if answer.status_code != 201:
                raise SystemExit(f"webhook answered {answer.status_code}: {answer.text}")
        return out

    shares = [events // clients + (i < events % clients) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        return [x for part in pool.map(client, shares) for x in part]


def _summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return (
        f"n={len(ms):4d}  p50={statistics.median(ms):6.1f} ms  p95={pick(0.95):6.1f} ms  "
        f"p99={pick(0.99):6.1f} ms  max={ms[-1]:6.1f} ms"
    )


def _training_state(url: str, project: int) -> str | None:
    info = requests.get(f"{url}/metrics", timeout=10).json()["projects"].get(str(project), {})
    last = info.get("last_training")
    return last["state"] if last else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500, help="events per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--images", type=int, default=40, help="annotated images to train on")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="webhook-latency-"))
    files = write_images(work / "docs" / "shapes", args.images, seed=11)
    with LocalLabelStudio(work / "ls", work / "docs") as ls:
        project = ls.create_project("webhook latency", CONFIG)
        client = ls.client()
        for task_id, (_, sample) in zip(
            ls.import_images(project, [p for p, _ in files]), files, strict=True
        ):
            client.annotations.create(id=task_id, result=ls_regions(sample))
        settings = {
            "MODEL_DIR": str(work / "models"),
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.legacy_token,
            "LOCAL_FILES_DOCUMENT_ROOT": str(work / "docs"),
            "THREADS": "8",
            "LOG_LEVEL": "WARNING",
            "TRAIN_EVERY": "1000000",
            "TRAIN_QUIET_SECONDS": "86400",
            "TRAIN_POLL_SECONDS": "0.5",
            "TRAIN_EPOCHS": "200",
            "TRAIN_IMAGE_SIZE": "320",
        }
        with BackendServer(find_free_port(), settings, work / "backend") as backend:
            url = backend.url
            _fire(url, project + 1, 50, args.clients, 1)  # warm-up, another project
            idle = _fire(url, project + 1, args.events, args.clients, 100_000)
            requests.post(
                f"{url}/webhook",
                json={"action": "START_TRAINING", "project": {"id": project}},
                timeout=10,
            ).raise_for_status()
            deadline = time.monotonic() + 60
            while _training_state(url, project) != "running":
                if time.monotonic() > deadline:
                    raise SystemExit("the training run did not start within 60 s")
                time.sleep(0.2)
            time.sleep(5.0)  # let the child get into its epochs
            busy = _fire(url, project + 1, args.events, args.clients, 200_000)
            state_after = _training_state(url, project)
            requests.get(f"{url}/metrics", timeout=10)

    print(f"{args.events} events x 2 phases, {args.clients} concurrent clients, loopback")
    print(f"trainer idle      {_summary(idle)}")
    print(f"training running  {_summary(busy)}   (training still {state_after} at the end)")
    ratio = sorted(busy)[int(0.99 * len(busy))] / sorted(idle)[int(0.99 * len(idle))]
    print(f"p99 ratio busy/idle: {ratio:.2f}   target: p99 < 50 ms while training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
