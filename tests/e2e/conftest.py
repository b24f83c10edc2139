"""Fixtures for the end-to-end tests: one real Label Studio for the whole session.

Label Studio is required, never skipped: CI installs it with ``make install-ls``, and a test
run that silently skips it would prove nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.local_label_studio import DEFAULT_LS_EXECUTABLE, REPO_ROOT, LocalLabelStudio

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
