"""`make demo`: a local Label Studio with this backend attached, pre-annotating synthetic shapes.

``python -m devkit.demo`` starts Label Studio (``devkit.local_label_studio``) and the backend
as a real gunicorn process (``ls-active-yolo serve``), trains the small shapes model once,
creates a project of generated images, connects the backend and retrieves its predictions, then
waits until Ctrl-C or SIGTERM and stops both servers.

The pieces that run the backend the way a user does (`BackendServer`, `retrieve_predictions`)
live here too: the end-to-end tests use them, so the demo's plumbing is what the tests prove.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from backend.analytics.cost import ActionSeconds
from backend.analytics.records import region_edits
from backend.config import ENV_NAMES, Settings
from backend.labelstudio.regions import result_boxes
from backend.labelstudio.versions import detector_version
from devkit.datagen import CLASSES, SyntheticImage, ls_regions, write_images
from devkit.demo_model import TINY_RECIPE
from devkit.local_label_studio import (
    REPO_ROOT,
    LabelStudioError,
    LocalLabelStudio,
    MLBackendConnection,
    find_free_port,
)
from devkit.processes import ManagedProcess
from devkit.processes import die_with_parent as _die_with_parent

logger = logging.getLogger(__name__)

PROJECT_TITLE = "ls-active-yolo demo"
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{name.capitalize()}"/>' for name in CLASSES)
    + "</RectangleLabels></View>"
)
DEFAULT_DEMO_DIR = REPO_ROOT / ".demo"
DEFAULT_LS_PORT = 8080
DEFAULT_BACKEND_PORT = 9090
DEFAULT_IMAGES = 40
IMAGE_SEED = 2024  # not the training seeds (0, 1): the demo shows images the model never saw
IMAGE_FOLDER = "shapes"  # under the document root: LS serves local files from subfolders only
TRAIN_EPOCHS_FILE = Path("runs") / "shapes" / "results.csv"  # one row per finished epoch
REPORT_EVERY_EPOCHS = 5


class DemoError(RuntimeError):
    """The demo could not be set up; the message says what to do."""


# -- running the backend --------------------------------------------------------------------


def serve_executable() -> Path:
    """The `ls-active-yolo` console script of the running virtualenv."""
    beside = Path(sys.executable).with_name("ls-active-yolo")
    if beside.is_file():
        return beside
    found = shutil.which("ls-active-yolo")
    if found is None:
        raise DemoError("`ls-active-yolo` is not installed: run `make install`")
    return Path(found)


def port_or_free(preferred: int) -> int:
    """`preferred` when nothing listens on 127.0.0.1:`preferred`, else any free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind: connections of a previous run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return find_free_port()
    return preferred


class BackendServer(ManagedProcess):
    """`ls-active-yolo serve` on 127.0.0.1, in its own process group, logging to a file.

    `settings` are the backend's environment variables (MODEL_PATH, LABEL_STUDIO_URL, ...); the
    caller's own values of those names are dropped. `stop` ends the whole process group, and
    Linux ends the server if the thread that started it dies first, so nothing outlives its
    owner. gunicorn 27 puts a control socket at one fixed path per user
    (``~/.gunicorn/gunicorn.ctl``) that concurrent servers would fight over, so each server
    here gets its own ``XDG_RUNTIME_DIR`` under `state_dir`.
    """

    name = "the backend"
    error = DemoError
    poll_interval = 0.2

    def __init__(
        self,
        port: int,
        settings: Mapping[str, str],
        state_dir: Path,
        *,
        executable: Path | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        unknown = set(settings) - ENV_NAMES
        if unknown:
            raise ValueError(f"not backend settings: {sorted(unknown)}")
        self.port = port
        self.settings = dict(settings)
        self.state_dir = Path(state_dir).resolve()
        self.log_path = self.state_dir / "backend.log"
        self.executable = executable
        self.startup_timeout = startup_timeout
        self._process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def returncode(self) -> int | None:
        """None while the server runs (or before it started), else its exit status."""
        return self._process.poll() if self._process is not None else None

    def start(self) -> BackendServer:
        """Start the server and wait until `/health` answers 200."""
        self._refuse_if_running()
        runtime_dir = self.state_dir / "runtime"
        runtime_dir.mkdir(parents=True, exist_ok=True)
        runtime_dir.chmod(0o700)
        # Exactly the caller's settings, never stray values from its shell: an inherited
        # LOCAL_FILES_DOCUMENT_ROOT would silently turn image downloads off, for instance.
        env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        env.update(self.settings)
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
        command = [
            str(self.executable or serve_executable()),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._launch(command, lambda: self._wait_for_health(self.startup_timeout), env=env)
        return self

    def health(self) -> dict[str, Any]:
        """The backend's `/health` answer (open even with basic auth on)."""
        answer = requests.get(f"{self.url}/health", timeout=10)
        answer.raise_for_status()
        return dict(answer.json())

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group (gunicorn's graceful stop); SIGKILL what outlives it."""
        return super().stop(timeout)


def retrieve_predictions(
    ls: LocalLabelStudio,
    project_id: int,
    task_ids: Sequence[int] | None = None,
    timeout: float = 150.0,
) -> dict[str, Any]:
    """The Data Manager's "Retrieve Predictions" action, as the UI sends it; returns LS's answer.

    All tasks unless `task_ids` are given. LS calls the backend's /predict once with every
    selected task that has no prediction of the backend's current model version, and waits.
    """
    selected: dict[str, Any] = (
        {"all": True, "excluded": []}
        if task_ids is None
        else {"all": False, "included": list(task_ids)}
    )
    answer = requests.post(
        f"{ls.url}/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": project_id},
        json={"project": str(project_id), "selectedItems": selected},
        headers=ls.auth_headers(),
        timeout=timeout,
    )
    if answer.status_code != 200:
        raise LabelStudioError(
            f"retrieving predictions for project {project_id} failed: HTTP "
            f"{answer.status_code}: {answer.text[:500]}"
        )
    return dict(answer.json())


# -- the demo model ---------------------------------------------------------------------------


def _train_in_child(workdir: str, config_dir: str) -> None:
    """Body of the training process; the parent decides when it stops (Ctrl-C included)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    from devkit.demo_model import train_shapes_model  # noqa: PLC0415  (child only)

    train_shapes_model(Path(workdir), Path(config_dir))


class ModelTraining:
    """Trains the demo model in a child process, so Label Studio can start meanwhile.

    The weights appear at `target` only once training succeeded (an atomic rename), so an
    interrupted run never leaves a half-written model behind for the next one.
    """

    def __init__(self, target: Path, config_dir: Path) -> None:
        self.target = target
        self.workdir = target.parent / "training"
        self.config_dir = config_dir
        self.epochs = int(str(TINY_RECIPE["epochs"]))
        self._process: multiprocessing.process.BaseProcess | None = None
        self._began = 0.0

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        self._process = context.Process(
            target=_train_in_child,
            args=(str(self.workdir), str(self.config_dir)),
            name="demo-training",
            daemon=True,
        )
        self._began = time.monotonic()
        self._process.start()

    def wait(self, report: Callable[[str], None]) -> Path:
        """Block until training ends, reporting progress; returns the weights."""
        process = self._process
        if process is None:
            raise DemoError("training was not started")
        reported = -1
        while process.is_alive():
            process.join(timeout=1.0)
            done = self._finished_epochs()
            if done != reported and (done % REPORT_EVERY_EPOCHS == 0 or done == self.epochs):
                reported = done
                elapsed = time.monotonic() - self._began
                report(f"  training: epoch {done}/{self.epochs} ({elapsed:.0f} s)")
        if process.exitcode != 0:
            raise DemoError(
                f"training the demo model failed (exit {process.exitcode}); see the output above"
            )
        os.replace(self.workdir / "shapes.pt", self.target)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self._process = None
        return self.target

    def stop(self) -> None:
        """End a training still running (when the demo is interrupted)."""
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.terminate()
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def _finished_epochs(self) -> int:
        try:
            rows = (self.workdir / TRAIN_EPOCHS_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return 0
        return max(0, len(rows) - 1)  # the first row is the header


# -- the demo itself ------------------------------------------------------------------------


@dataclass
class Demo:
    """What the set-up steps share: the servers, the project and the images behind its tasks."""

    ls: LocalLabelStudio
    backend: BackendServer
    images: list[tuple[Path, SyntheticImage]]  # generated files and their ground-truth boxes
    say: Callable[[str], None] = print
    project_id: int = 0
    tasks: dict[int, Path] = field(default_factory=dict)  # task id -> image file
    connection: MLBackendConnection | None = None
    model_version: str = ""


def create_or_reuse_project(demo: Demo) -> None:
    """The project titled PROJECT_TITLE, with one task per demo image (missing ones imported)."""
    client = demo.ls.client()
    found = [p for p in client.projects.list() if p.title == PROJECT_TITLE]
    if found:
        demo.project_id = int(found[0].id)
        demo.say(f"Reusing project {demo.project_id} ({PROJECT_TITLE!r}).")
    else:
        demo.project_id = demo.ls.create_project(PROJECT_TITLE, LABEL_CONFIG)
        demo.say(f"Created project {demo.project_id} ({PROJECT_TITLE!r}).")
    by_url = {demo.ls.local_file_url(path): path for path, _ in demo.images}
    for task in client.tasks.list(project=demo.project_id, fields="all"):
        path = by_url.get(str((task.data or {}).get("image", "")))
        if path is not None:
            demo.tasks[int(task.id)] = path
    missing = sorted(set(by_url.values()) - set(demo.tasks.values()))
    if missing:
        ids = demo.ls.import_images(demo.project_id, missing)
        demo.tasks.update(zip(ids, missing, strict=True))
        demo.say(f"Imported {len(missing)} generated images as tasks.")


def connect_backend(demo: Demo) -> None:
    """Attach the running backend; drop backends (and their webhooks) left by older runs."""
    client = demo.ls.client()
    for ml in client.ml.list(project=demo.project_id):
        if ml.url == demo.backend.url:
            state = client.ml.get(int(ml.id)).state  # GET re-checks /health and /setup
            demo.connection = MLBackendConnection(id=int(ml.id), state=str(state))
            continue
        logger.info("removing ML backend %s at %s from an earlier run", ml.id, ml.url)
        client.ml.delete(int(ml.id))
        for hook in client.webhooks.list(project=str(demo.project_id)):
            if hook.url == f"{str(ml.url).rstrip('/')}/webhook":
                client.webhooks.delete(int(hook.id))
    if demo.connection is None:
        demo.connection = demo.ls.connect_ml_backend(demo.project_id, demo.backend.url)
    if demo.connection.state != "CO":
        raise DemoError(
            f"Label Studio reports the backend at {demo.backend.url} as {demo.connection.state!r}"
            f", not connected; backend log {demo.backend.log_path}:\n{demo.backend.log_tail()}"
        )
    # What /setup answered for this project: the base model, or the project's live version
    # once a retraining was promoted.
    demo.model_version = str(client.ml.get(demo.connection.id).model_version)
    demo.say(f"Connected the ML backend (model {demo.model_version}).")


def prelabel_tasks(demo: Demo) -> None:
    """Retrieve predictions for every task: the pre-drawn boxes an annotator starts from."""
    began = time.monotonic()
    retrieve_predictions(demo.ls, demo.project_id)
    predictions = demo.ls.client().predictions.list(project=demo.project_id)
    current = [p for p in predictions if p.model_version == demo.model_version]
    boxes = sum(len(p.result or []) for p in current)
    demo.say(
        f"Pre-annotated {len(current)} tasks with {boxes} boxes "
        f"in {time.monotonic() - began:.1f} s."
    )


def label_a_few_tasks(demo: Demo) -> None:
    """Submit TRAIN_EVERY annotations from the generator's ground truth, as an annotator
    would: their webhooks make the backend retrain, promote and re-rank the queue."""
    client = demo.ls.client()
    labeled = {
        int(t.id)
        for t in client.tasks.list(project=demo.project_id, fields="all")
        if (t.total_annotations or 0) > 0
    }
    wanted = Settings().train_every
    truth = {path: sample for path, sample in demo.images}
    budget = min(wanted, len(demo.tasks) // 2) - len(labeled)  # leave a queue to rank
    todo = [t for t in sorted(demo.tasks) if t not in labeled][: max(0, budget)]
    shown = {
        int(p.task): p
        for p in client.predictions.list(project=demo.project_id)
        if p.model_version == demo.model_version
    }
    for task_id in todo:
        regions = ls_regions(truth[demo.tasks[task_id]])
        body: dict[str, Any] = {"result": regions}
        prediction = shown.get(task_id)
        if prediction is not None:  # started from the pre-annotation, as in the editor
            body["parent_prediction"] = int(prediction.id)
            body["lead_time"] = simulated_seconds(prediction.result or [], regions)
        answer = requests.post(
            f"{demo.ls.url}/api/tasks/{task_id}/annotations/",
            json=body,
            headers=demo.ls.auth_headers(),
            timeout=30,
        )
        answer.raise_for_status()
    if todo:
        demo.say(
            f"Labelled {len(todo)} tasks from the ground truth, starting from their "
            "pre-annotations (lead times simulated with the cost model)."
        )
    if todo and len(labeled) + len(todo) < wanted:  # too few for TRAIN_EVERY: ask, as the
        requests.post(  # "Start Training" button in Label Studio does
            f"{demo.backend.url}/webhook",
            json={"action": "START_TRAINING", "project": {"id": demo.project_id}},
            timeout=10,
        ).raise_for_status()


def simulated_seconds(shown: list[dict[str, Any]], submitted: list[dict[str, Any]]) -> float:
    """The seconds an annotator would spend turning `shown` regions into `submitted` ones,
    by the published cost model: the demo's stand-in for a real lead_time."""
    names = {"label"}
    edits, _ = region_edits(result_boxes(shown, names), result_boxes(submitted, names))
    return round(ActionSeconds().image_seconds(edits), 1)


def wait_for_retrained_queue(demo: Demo, timeout: float = 600.0) -> None:
    """Wait until a retrained model is live and Label Studio's queue is ranked with it."""
    began = time.monotonic()
    client = demo.ls.client()
    said = ""
    while time.monotonic() - began < timeout:
        info = requests.get(f"{demo.backend.url}/metrics", timeout=10).json()["projects"]
        project = info.get(str(demo.project_id)) or {}
        live = project.get("live_version")
        last = project.get("last_training") or {}
        served = str(client.projects.get(id=demo.project_id).model_version or "")
        if live and detector_version(served) == live:  # the queue ranked by `live`
            metrics = last.get("metrics") or {}
            demo.model_version = live
            demo.say(
                f"Retrained: model {live} is live (validation mAP50 "
                f"{metrics.get('map50', float('nan')):.2f}) and the queue is ranked with it "
                f"({time.monotonic() - began:.0f} s)."
            )
            return
        if last.get("state") in ("skipped", "rejected", "failed", "cancelled"):
            why = last.get("error") or (last.get("gate") or {}).get("reason") or ""
            demo.say(f"Retraining ended {last['state']} {why}".rstrip() + "; see /metrics.")
            return
        status = f"  waiting for retraining: {last.get('state') or 'queued'}"
        if status != said:
            demo.say(status)
            said = status
        time.sleep(1.0)
    demo.say("Retraining is still running; the queue will update when it finishes.")


# Run in order once both servers are up; each step is one function taking the `Demo`.
SETUP_STEPS: tuple[Callable[[Demo], None], ...] = (
    create_or_reuse_project,
    connect_backend,
    prelabel_tasks,
    label_a_few_tasks,
    wait_for_retrained_queue,
)


def _instructions(demo: Demo, ready_s: float) -> str:
    ls = demo.ls
    every = Settings().train_every  # the backend's default TRAIN_EVERY (the demo keeps it)
    return f"""
ls-active-yolo demo ready in {ready_s:.0f} s.

  Label Studio  {ls.url}/projects/{demo.project_id}/data
  Log in as     {ls.username}
  Password      {ls.password}
  ML backend    {demo.backend.url}  (model {demo.model_version}; log {demo.backend.log_path})

What to try
  1. "Label All Tasks": Label Studio serves the active-learning queue (uncertainty +
     diversity, ranked by model {demo.model_version}); the boxes are already drawn.
     The Data Manager tab "Active learning queue" shows the same order.
  2. Fix a box or a label and press Submit. Every submit, update and delete reaches the
     backend's /webhook: `curl {demo.backend.url}/metrics` shows the queued events.
  3. After {every} changed annotations the backend fine-tunes a new model version in the
     background, serves it if it is at least as good (/metrics shows the run and the live
     version), and re-ranks the queue with it.
  4. What the pre-annotations saved, per model version and annotator:
     {demo.backend.url}/analytics/{demo.project_id}

Press Ctrl-C to stop Label Studio and the backend.
"""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.demo",
        description="Start a local Label Studio and the ls-active-yolo backend, create a project "
        "of generated shapes images with the backend's boxes pre-drawn, and wait; Ctrl-C stops "
        "both servers. Run by `make demo`.",
    )
    parser.add_argument(
        "--ls-port",
        type=int,
        default=DEFAULT_LS_PORT,
        help="Label Studio's port, if free; else any free port (default: %(default)s)",
    )
    parser.add_argument(
        "--backend-port",
        type=int,
        default=DEFAULT_BACKEND_PORT,
        help="the ML backend's port, if free; else any free port (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        help="generated images in the project (default: %(default)s; a rerun adds missing "
        "ones, never removes tasks)",
    )
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="never train the demo model: without <dir>/models/base/shapes.pt the backend "
        "starts from a randomly initialised YOLO, whose boxes are noise",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DEMO_DIR,
        help="where Label Studio's data, the images and the models live (default: .demo in the "
        "repository)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens inside")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1:
        raise SystemExit("--images must be at least 1")
    from backend.logs import configure_logging  # noqa: PLC0415  (entry point only)

    configure_logging("INFO" if args.verbose else "WARNING")
    # Explicit, because a shell starting the demo in the background (`&`) ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 0
    except (DemoError, LabelStudioError) as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1


def _say(message: str) -> None:
    print(message, flush=True)


def _run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    root = Path(args.dir).resolve()
    model_dir = root / "models"
    weights = model_dir / "base" / "shapes.pt"
    training: ModelTraining | None = None
    ls: LocalLabelStudio | None = None
    backend: BackendServer | None = None
    try:
        if not weights.is_file() and not args.no_train:
            weights.parent.mkdir(parents=True, exist_ok=True)
            training = ModelTraining(weights, model_dir / ".ultralytics")
            training.start()
            _say("Training the demo model once (about 1-2 minutes on a laptop CPU)...")
        document_root = root / "files"
        ls = LocalLabelStudio(root / "label-studio", document_root, port=port_or_free(args.ls_port))
        _say(f"Starting Label Studio on {ls.url} ...")
        ls.start()
        if training is not None:
            training.wait(_say)
            training = None
            _say(f"Demo model saved to {weights}.")
        settings = {
            "MODEL_DIR": str(model_dir),
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.legacy_token,
            "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),  # same machine: read, not download
            "IMAGE_SIZE": "160",  # the size the demo model was trained at
        }
        if weights.is_file():
            settings["MODEL_PATH"] = str(weights)
        else:
            _say("No demo model and --no-train: the backend uses a randomly initialised YOLO.")
        backend = BackendServer(port_or_free(args.backend_port), settings, root / "backend")
        _say(f"Starting the ML backend on {backend.url} ...")
        backend.start()
        images = write_images(document_root / IMAGE_FOLDER, args.images, seed=IMAGE_SEED)
        demo = Demo(ls=ls, backend=backend, images=images, say=_say)
        for step in SETUP_STEPS:
            step(demo)
        _say(_instructions(demo, time.monotonic() - began))
        return _wait_while_running(demo)
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _say("Stopping ...")
        if training is not None:
            training.stop()
        if backend is not None:
            backend.stop()
        if ls is not None:
            ls.stop()
        _say("Stopped.")


def _wait_while_running(demo: Demo) -> int:
    """Sleep until interrupted; fail if a server dies on its own."""
    while True:
        time.sleep(2.0)
        code = demo.backend.returncode()
        if code is not None:
            print(
                f"the ML backend exited (code {code}); log {demo.backend.log_path}:\n"
                f"{demo.backend.log_tail()}",
                file=sys.stderr,
            )
            return 1
        try:
            requests.get(f"{demo.ls.url}/health", timeout=10).raise_for_status()
        except requests.RequestException as error:
            print(
                f"Label Studio stopped answering ({type(error).__name__}); log "
                f"{demo.ls.log_path}:\n{demo.ls.log_tail()}",
                file=sys.stderr,
            )
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
