"""MODEL_PATH=yolo11n.pt: pretrained weights by name, downloaded only when allowed.

A real HTTP server on 127.0.0.1 stands in for ultralytics' release host (WEIGHTS_URL), serving
the session's tiny trained model under the released file name; the real ultralytics downloader
fetches it. Each test counts the requests, so "nothing was downloaded" is checked, not assumed.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.cli import main
from backend.config import Settings
from backend.errors import ConfigError
from backend.files import exclusive_lock
from backend.models.pretrained import (
    ULTRALYTICS_RELEASE,
    WeightsDownloadRefused,
    WeightsUnavailable,
    resolve_named_weights,
)
from backend.services import build_services
from devkit.datagen import CLASSES
from tests.support.http_fixture import CannedServer, canned_http_server

NAME = "yolo11n.pt"


@pytest.fixture
def release(trained_weights: Path) -> Iterator[CannedServer]:
    """The stand-in release host: /yolo11n.pt is the tiny trained model."""
    with canned_http_server() as server:
        server.routes[f"/{NAME}"] = (200, trained_weights.read_bytes())
        yield server


@pytest.fixture
def env(tmp_path: Path, release: CannedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no yolo11n.pt in the working directory: MODEL_PATH is a name
    return {
        "MODEL_DIR": str(tmp_path / "models"),
        "MODEL_PATH": NAME,
        "WEIGHTS_URL": release.url + "/",
        "TRAINING": "0",
    }


def test_the_release_tag_follows_the_installed_ultralytics(ultralytics_dir: Path) -> None:
    """An ultralytics upgrade that moves its assets to a new release fails here, rather than
    downloads carrying on from the old one."""
    from ultralytics.utils.downloads import attempt_download_asset

    release = inspect.signature(attempt_download_asset).parameters["release"].default
    assert ULTRALYTICS_RELEASE == release


def test_model_path_is_a_name_only_when_no_such_file_exists(
    env: dict[str, str], tmp_path: Path, trained_weights: Path
) -> None:
    settings = Settings.from_env(env)
    assert (settings.model_name, settings.model_path) == (NAME, None)
    assert settings.allow_weight_downloads is False  # off by default
    assert settings.weights_url == env["WEIGHTS_URL"].rstrip("/")
    (tmp_path / NAME).write_bytes(trained_weights.read_bytes())  # now a file of that name
    assert Settings.from_env(env).model_path == tmp_path / NAME
    for missing in ("/nowhere/yolo11n.pt", "weights/yolo11n.pt", "yolo11n.onnx"):
        with pytest.raises(ConfigError, match="does not exist"):
            Settings.from_env({**env, "MODEL_PATH": missing})
    with pytest.raises(ConfigError, match="WEIGHTS_URL must be an http"):
        Settings.from_env({**env, "WEIGHTS_URL": "ftp://mirror/weights"})


def test_a_name_is_refused_at_start_up_unless_downloads_are_allowed(
    env: dict[str, str],
    release: CannedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings.from_env(env)
    with pytest.raises(WeightsDownloadRefused, match="ALLOW_WEIGHT_DOWNLOADS=1") as refused:
        build_services(settings)
    assert str(settings.paths.pretrained / NAME) in str(refused.value)  # where to put it
    # A CLI command stops with the same message (from its build_services) before it starts.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["models", "list", "--project", "1"]) == 2
    assert "ALLOW_WEIGHT_DOWNLOADS=1" in capsys.readouterr().err
    # `serve` too, before gunicorn starts a worker
    assert main(["serve", "--port", "9"]) == 2
    assert "ALLOW_WEIGHT_DOWNLOADS=1" in capsys.readouterr().err
    assert release.paths == []
    assert not settings.paths.pretrained.exists() or not any(settings.paths.pretrained.iterdir())


def test_an_allowed_download_lands_in_model_dir_once_and_serves(
    env: dict[str, str], release: CannedServer, trained_weights: Path
) -> None:
    settings = Settings.from_env({**env, "ALLOW_WEIGHT_DOWNLOADS": "1"})
    services = build_services(settings)
    target = settings.paths.pretrained / NAME
    assert services.settings.model_path == target
    assert target.read_bytes() == trained_weights.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == [NAME]  # no part file left
    source = services.detectors.source_for(None, CLASSES)
    assert (source.kind, source.weights) == ("MODEL_PATH", target)
    assert services.detectors.get(source).names == CLASSES
    # Found on disk from now on: another process (a web worker, the training child) reuses it.
    again = build_services(Settings.from_env({**env, "ALLOW_WEIGHT_DOWNLOADS": "1"}))
    assert again.settings.model_path == target
    assert release.paths == [f"/{NAME}"]


def test_processes_starting_together_download_once(
    env: dict[str, str], release: CannedServer
) -> None:
    """gunicorn's workers each build their services: they wait for one another's download."""
    settings = Settings.from_env({**env, "ALLOW_WEIGHT_DOWNLOADS": "1"})
    resolved: list[Path | None] = []

    def start() -> None:
        resolved.append(resolve_named_weights(settings).model_path)

    starts = [threading.Thread(target=start) for _ in range(3)]
    with exclusive_lock(settings.paths.pretrained_lock) as held:  # a download under way
        assert held
        for thread in starts:
            thread.start()
        time.sleep(1.0)
        assert release.paths == []  # nobody downloads while another does
    for thread in starts:
        thread.join(timeout=60)
    assert resolved == [settings.paths.pretrained / NAME] * 3
    assert release.paths == [f"/{NAME}"]


@pytest.mark.parametrize("fault", ["missing on the host", "body cut short", "not a released name"])
def test_a_failed_download_leaves_nothing_behind(
    env: dict[str, str], release: CannedServer, fault: str
) -> None:
    allowed = {**env, "ALLOW_WEIGHT_DOWNLOADS": "1"}
    if fault == "missing on the host":
        del release.routes[f"/{NAME}"]
    elif fault == "body cut short":
        release.cut[f"/{NAME}"] = len(release.routes[f"/{NAME}"][1]) // 2
    else:  # the default host: the name is checked against ultralytics' own list first
        allowed = {**allowed, "MODEL_PATH": "yolo11n-typo.pt", "WEIGHTS_URL": ""}
    settings = Settings.from_env(allowed)
    with pytest.raises(WeightsUnavailable) as failed:
        build_services(settings)
    assert settings.model_name in str(failed.value)
    folder = settings.paths.pretrained
    assert not folder.exists() or list(folder.iterdir()) == []
    if fault == "not a released name":
        assert release.paths == []


def test_cli_fetch_bakes_weights_that_a_name_then_finds_without_downloads(
    env: dict[str, str],
    release: CannedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    trained_weights: Path,
) -> None:
    """What the image's WEIGHTS build argument runs, and what its PRETRAINED_DIR then serves."""
    for name in ("MODEL_DIR", "WEIGHTS_URL"):
        monkeypatch.setenv(name, env[name])
    baked = tmp_path / "baked"
    assert main(["weights", "fetch", "--into", str(baked), NAME]) == 0
    assert capsys.readouterr().out.strip() == str(baked / NAME)
    assert (baked / NAME).read_bytes() == trained_weights.read_bytes()
    assert main(["weights", "fetch", "--into", str(baked), NAME]) == 0  # present: no request
    assert main(["weights", "fetch", "--into", str(baked), "../outside.pt"]) == 2
    assert "no weights file name" in capsys.readouterr().err
    assert release.paths == [f"/{NAME}"]

    settings = build_services(Settings.from_env({**env, "PRETRAINED_DIR": str(baked)})).settings
    assert settings.model_path == baked / NAME  # downloads off, and none needed
    assert release.paths == [f"/{NAME}"]
