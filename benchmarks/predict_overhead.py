"""Server overhead: `/predict` through gunicorn vs a raw `YOLO.predict`, same weights and images.

Prints, in one run: per-image latency at batch 1 (median of N requests) and images/s for one
32-task request, each against the raw ultralytics call on the same images with the same
settings (imgsz, confidence floor), and the ratios. Targets (issue 2): latency ratio <= 1.10
at batch 1; 32-task throughput within 10% of raw.

    python -m benchmarks.predict_overhead [--weights W.pt] [--requests 30] [--imgsz 640]
                                          [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from backend.config import Settings
from backend.models.offline import prepare_ultralytics, set_torch_threads
from devkit.datagen import CLASSES, write_images
from devkit.demo_model import train_shapes_model

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{c}"/>' for c in CLASSES)
    + "</RectangleLabels></View>"
)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(workdir: Path, weights: Path, image_root: Path, imgsz: int) -> tuple:
    port = _free_port()
    env = {
        **os.environ,
        "MODEL_DIR": str(workdir / "models"),
        "MODEL_PATH": str(weights),
        "IMAGE_ROOT": str(image_root),
        "IMAGE_SIZE": str(imgsz),
        "LOG_LEVEL": "WARNING",
    }
    cli = Path(sys.executable).with_name("ls-active-yolo")
    command = [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command + ["--workers", "1", "--threads", "1"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return process, url
        except requests.RequestException:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the backend did not start within 120 s")


def _body(paths: list[Path]) -> dict:
    tasks = [{"id": i, "data": {"image": str(p)}} for i, p in enumerate(paths)]
    return {"tasks": tasks, "project": "1.0", "label_config": CONFIG}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="a .pt to serve (default: train the demo)")
    parser.add_argument("--requests", type=int, default=30, help="batch-1 requests to time")
    parser.add_argument("--imgsz", type=int, default=640, help="inference size, both sides")
    parser.add_argument("--repeats", type=int, default=3, help="32-task runs (median taken)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="predict-overhead-"))
    prepare_ultralytics(workdir / "ultralytics")
    set_torch_threads()
    weights = args.weights or train_shapes_model(workdir / "model", workdir / "ultralytics")
    images = [p for p, _ in write_images(workdir / "images", 32, seed=7)]
    floor = Settings().detect_conf_floor

    from ultralytics import YOLO

    raw = YOLO(str(weights), task="detect")
    predict = dict(imgsz=args.imgsz, conf=floor, verbose=False, device="cpu")
    raw.predict(str(images[0]), **predict)  # warm-up
    raw_latency = []
    for i in range(args.requests):
        started = time.perf_counter()
        raw.predict(str(images[i % len(images)]), **predict)
        raw_latency.append(time.perf_counter() - started)
    raw_32 = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        raw.predict([str(p) for p in images], batch=Settings().predict_batch, **predict)
        raw_32.append(time.perf_counter() - started)

    process, url = _start_server(workdir, weights, workdir / "images", args.imgsz)
    try:
        session = requests.Session()
        session.post(f"{url}/predict", json=_body(images[:1]), timeout=120).raise_for_status()
        server_latency = []
        for i in range(args.requests):
            body = _body([images[i % len(images)]])
            started = time.perf_counter()
            answer = session.post(f"{url}/predict", json=body, timeout=120)
            server_latency.append(time.perf_counter() - started)
            answer.raise_for_status()
        server_32 = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            answer = session.post(f"{url}/predict", json=_body(images), timeout=300)
            server_32.append(time.perf_counter() - started)
            answer.raise_for_status()
            if len(answer.json()["results"]) != len(images):
                raise SystemExit("the server answered a wrong number of results")
    finally:
        process.terminate()
        process.wait(timeout=30)

    raw_med, server_med = statistics.median(raw_latency), statistics.median(server_latency)
    print(f"weights: {weights}  imgsz: {args.imgsz}  conf floor: {floor}  cores: {os.cpu_count()}")
    print(f"{'':28}{'raw YOLO.predict':>18}{'server /predict':>18}{'ratio':>8}")
    print(
        f"{'batch 1, median s/image':28}{raw_med:>18.4f}{server_med:>18.4f}"
        f"{server_med / raw_med:>8.3f}   (target <= 1.10)"
    )
    raw_ips = len(images) / statistics.median(raw_32)
    server_ips = len(images) / statistics.median(server_32)
    print(
        f"{'32 tasks, images/s':28}{raw_ips:>18.2f}{server_ips:>18.2f}"
        f"{server_ips / raw_ips:>8.3f}   (target >= 0.90; median of {args.repeats} runs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
