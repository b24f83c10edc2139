"""Fixtures for the end-to-end tests: one real Label Studio and real backends per session.

Label Studio is required, never skipped: CI installs it with ``make install-ls``, and a test
run that silently skips it would prove nothing.

Backends run as real ``ls-active-yolo serve`` (gunicorn) processes on 127.0.0.1, one per
configuration and session (`BackendFactory`). A failing test's report ends with the log tails
of the servers it used; every backend log is copied to ``test-output/e2e-backend-<name>.log``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devkit.datagen import SyntheticImage, write_images
from devkit.demo import BackendServer, retrieve_predictions
from devkit.local_label_studio import (
    DEFAULT_LS_EXECUTABLE,
    REPO_ROOT,
    LocalLabelStudio,
    MLBackendConnection,
    find_free_port,
)
from tests.conftest import BOX_CONFIG

from .browser import find_chromium

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e as ``e2e`` so ``-m "not e2e"`` leaves them out."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def ls_document_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory Label Studio serves as ``/data/local-files/?d=<relative path>``."""
    return tmp_path_factory.mktemp("ls-documents")


@pytest.fixture(scope="session")
def label_studio(
    tmp_path_factory: pytest.TempPathFactory, ls_document_root: Path
) -> Iterator[LocalLabelStudio]:
    """A running Label Studio with an admin user and legacy tokens on; stopped at the end."""
    if not DEFAULT_LS_EXECUTABLE.is_file():
        pytest.fail(
            f"{DEFAULT_LS_EXECUTABLE} is missing: run `make install-ls` to install Label Studio",
            pytrace=False,
        )
    server = LocalLabelStudio(tmp_path_factory.mktemp("ls-data"), ls_document_root)
    with server:
        yield server


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system Chromium for browser tests; skips them, saying why, when it is missing."""
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium not found at /usr/bin/chromium: run `bash scripts/system-deps.sh`")
    return path


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """``<repo>/test-output``: screenshots and other artefacts kept after the run."""
    path = REPO_ROOT / "test-output"
    path.mkdir(exist_ok=True)
    return path


# -- the backend, as a real gunicorn process -------------------------------------------------

BACKEND_IMAGE_SIZE = "160"  # the size `trained_weights` was trained at
SHAPES_SEED = 7  # neither of the training seeds (0, 1): images the model never saw
SHAPES_IMAGES = 8


BackendEnv = Callable[[Mapping[str, str]], dict[str, str]]


@pytest.fixture
def project_backend_env(
    tmp_path: Path, label_studio: LocalLabelStudio, ls_document_root: Path, trained_weights: Path
) -> BackendEnv:
    """The settings of a backend a test starts for its own project: MODEL_DIR under
    `tmp_path`, `trained_weights` as MODEL_PATH at their size, images read from the session's
    document root, the trainer polling fast; the argument (TRAIN_EVERY and the like) on top."""

    def settings(more: Mapping[str, str]) -> dict[str, str]:
        return {
            "MODEL_DIR": str(tmp_path / "models"),
            "MODEL_PATH": str(trained_weights),
            "IMAGE_SIZE": BACKEND_IMAGE_SIZE,
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.legacy_token,
            "LOCAL_FILES_DOCUMENT_ROOT": str(ls_document_root),
            "TRAIN_POLL_SECONDS": "0.3",
            **more,
        }

    return settings


class BackendFactory:
    """Starts `ls-active-yolo serve` processes wired to the session's Label Studio.

    Each backend gets its own MODEL_DIR (so its SQLite event store is its own) and log file;
    `stop_all` stops them and copies the logs to test-output/ for a look after the run.
    """

    def __init__(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        weights: Path,
        label_studio: LocalLabelStudio,
        output_dir: Path,
    ) -> None:
        self._tmp = tmp_path_factory
        self._weights = weights
        self._ls = label_studio
        self._output_dir = output_dir
        self._started: list[tuple[str, BackendServer]] = []

    def start(
        self,
        name: str,
        *,
        api_key: str,
        document_root: Path | None,
        basic_auth: tuple[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> BackendServer:
        """A running backend; `document_root=None` makes it download images from LS; `env`,
        more settings."""
        state_dir = self._tmp.mktemp(f"backend-{name}")
        settings = {
            "MODEL_DIR": str(state_dir / "models"),
            "MODEL_PATH": str(self._weights),
            "IMAGE_SIZE": BACKEND_IMAGE_SIZE,
            "LABEL_STUDIO_URL": self._ls.url,
            "LABEL_STUDIO_API_KEY": api_key,
            # No background trainer: these scenarios read the queued events and need the base
            # model's version to stay put. Retraining has its own tests (test_retraining.py).
            "TRAINING": "0",
        }
        if document_root is not None:
            settings["LOCAL_FILES_DOCUMENT_ROOT"] = str(document_root)
        if basic_auth is not None:
            settings["BASIC_AUTH_USER"], settings["BASIC_AUTH_PASS"] = basic_auth
        settings.update(env or {})
        server = BackendServer(find_free_port(), settings, state_dir)
        server.start()
        self._started.append((name, server))
        return server

    def stop_all(self) -> None:
        # Concurrently: each gunicorn takes a second or two to stop gracefully.
        with ThreadPoolExecutor(max_workers=max(1, len(self._started))) as pool:
            list(pool.map(lambda started: started[1].stop(), self._started))
        for name, server in self._started:
            if server.log_path.exists():
                shutil.copyfile(server.log_path, self._output_dir / f"e2e-backend-{name}.log")
        self._started.clear()


@pytest.fixture(scope="session")
def backend_factory(
    tmp_path_factory: pytest.TempPathFactory,
    trained_weights: Path,
    label_studio: LocalLabelStudio,
    test_output_dir: Path,
) -> Iterator[BackendFactory]:
    factory = BackendFactory(tmp_path_factory, trained_weights, label_studio, test_output_dir)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def ml_backend(
    backend_factory: BackendFactory, label_studio: LocalLabelStudio, ls_document_root: Path
) -> BackendServer:
    """The backend as `make demo` runs it: legacy token, images read from LS's document root."""
    return backend_factory.start(
        "main", api_key=label_studio.legacy_token, document_root=ls_document_root
    )


@dataclass(frozen=True)
class ShapesProject:
    """A project of generated images, connected to `ml_backend`."""

    project_id: int
    truth: dict[int, SyntheticImage]  # task id -> the image and its ground-truth boxes
    files: dict[int, Path]  # task id -> image file
    connection: MLBackendConnection


@pytest.fixture(scope="session")
def shapes_images(ls_document_root: Path) -> list[tuple[Path, SyntheticImage]]:
    return write_images(ls_document_root / "shapes", SHAPES_IMAGES, seed=SHAPES_SEED)


@pytest.fixture(scope="session")
def shapes_project(
    label_studio: LocalLabelStudio,
    ml_backend: BackendServer,
    shapes_images: list[tuple[Path, SyntheticImage]],
) -> ShapesProject:
    project_id = label_studio.create_project("e2e shapes", BOX_CONFIG)
    task_ids = label_studio.import_images(project_id, [path for path, _ in shapes_images])
    connection = label_studio.connect_ml_backend(project_id, ml_backend.url)
    return ShapesProject(
        project_id=project_id,
        truth={task: sample for task, (_, sample) in zip(task_ids, shapes_images, strict=True)},
        files={task: path for task, (path, _) in zip(task_ids, shapes_images, strict=True)},
        connection=connection,
    )


@dataclass(frozen=True)
class Retrieval:
    """The "Retrieve Predictions" action's answer and what LS stored, per task."""

    answer: dict[str, Any]
    predictions: dict[int, list[Any]]  # task id -> label_studio_sdk Prediction objects


def stored_predictions(label_studio: LocalLabelStudio, project_id: int) -> dict[int, list[Any]]:
    """Every prediction of a project, grouped by task id."""
    grouped: dict[int, list[Any]] = {}
    for prediction in label_studio.client().predictions.list(project=project_id):
        grouped.setdefault(int(prediction.task), []).append(prediction)
    return grouped


@pytest.fixture(scope="session")
def retrieved(label_studio: LocalLabelStudio, shapes_project: ShapesProject) -> Retrieval:
    """Predictions for every task of `shapes_project`, retrieved once through the DM action."""
    answer = retrieve_predictions(label_studio, shapes_project.project_id)
    return Retrieval(answer, stored_predictions(label_studio, shapes_project.project_id))


MakeProject = Callable[[str, Sequence[Path]], tuple[int, list[int]]]


@pytest.fixture
def make_project(label_studio: LocalLabelStudio) -> MakeProject:
    """Create a project of the given image files: returns (project id, task ids)."""

    def make(title: str, files: Sequence[Path]) -> tuple[int, list[int]]:
        project_id = label_studio.create_project(title, BOX_CONFIG)
        return project_id, label_studio.import_images(project_id, files)

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the log tails of the servers the test used."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        server = getattr(value, "server", value)
        if isinstance(server, BackendServer):
            report.sections.append((f"backend log: {name} ({server.log_path})", server.log_tail()))
        elif isinstance(server, LocalLabelStudio):
            report.sections.append((f"Label Studio log ({server.log_path})", server.log_tail()))
