"""Pretrained weights by name: MODEL_PATH=yolo11n.pt rather than a path to a file.

A name is looked for in PRETRAINED_DIR (weights baked into an image at build time, see
docker/Dockerfile's WEIGHTS) and then in MODEL_DIR/pretrained/ (an earlier download). Found in
neither, it is downloaded only when ALLOW_WEIGHT_DOWNLOADS=1; otherwise start-up stops with
`WeightsDownloadRefused`, which says how to allow it or where to put the file. Nothing is
downloaded by default.

Downloads go through ultralytics' own downloader (`safe_download`): the body is written to a
hidden part file and renamed to its name only once whole, and a failed or short download is
removed, so a later start never mistakes a partial file for the weights. The URL is
`<WEIGHTS_URL>/<name>`; unset, WEIGHTS_URL is the GitHub release ultralytics itself fetches
its assets from (a mirror or a local server can stand in for it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from backend.config import WEIGHTS_NAME, Settings
from backend.errors import ConfigError
from backend.files import exclusive_lock
from backend.models.offline import prepare_ultralytics

logger = logging.getLogger(__name__)

MIN_WEIGHTS_BYTES = 10_000  # a smaller body is an error page, not a checkpoint

# The GitHub release ultralytics fetches its assets from: the default of `release` in
# ultralytics.utils.downloads.attempt_download_asset. It must follow the ultralytics pin in
# requirements.txt; tests/unit/models/test_pretrained.py fails when the two part.
ULTRALYTICS_RELEASE = "v8.4.0"


class WeightsDownloadRefused(ConfigError):
    """MODEL_PATH names pretrained weights that are not on disk, and downloads are off."""


class WeightsUnavailable(ConfigError):
    """Named weights could not be downloaded (unknown name, unreachable host, short body)."""


def find_named(name: str, settings: Settings) -> Path | None:
    """The named weights already on disk: PRETRAINED_DIR first, then MODEL_DIR/pretrained."""
    for folder in (settings.pretrained_dir, settings.paths.pretrained):
        if folder is not None and (folder / name).is_file():
            return folder / name
    return None


def download_named(name: str, settings: Settings, into: Path) -> Path:
    """Download the named weights into `into` (ultralytics' downloader); return the file.

    With the default WEIGHTS_URL the name must be one of ultralytics' release assets, so a
    typo is named here rather than as a 404. WeightsUnavailable when the download fails; the
    folder then holds no file of that name and no part file.
    """
    if not WEIGHTS_NAME.fullmatch(name):
        raise WeightsUnavailable(f"{name!r} is no weights file name (such as yolo11n.pt)")
    prepare_ultralytics(settings.paths.ultralytics)
    from ultralytics.utils.downloads import (  # noqa: PLC0415  (after prepare_ultralytics)
        GITHUB_ASSETS_NAMES,
        GITHUB_ASSETS_REPO,
        safe_download,
    )

    if settings.weights_url is None and name not in GITHUB_ASSETS_NAMES:
        raise WeightsUnavailable(
            f"{name} is not one of ultralytics' released weights (e.g. yolo11n.pt, yolov8s.pt); "
            "set WEIGHTS_URL to download it from elsewhere, or MODEL_PATH to a file"
        )
    base = f"https://github.com/{GITHUB_ASSETS_REPO}/releases/download/{ULTRALYTICS_RELEASE}"
    url = f"{settings.weights_url or base}/{name}"
    into.mkdir(parents=True, exist_ok=True)
    logger.info("downloading pretrained weights %s from %s into %s", name, url, into)
    try:
        found = safe_download(
            url=url, dir=into, file=name, unzip=False, min_bytes=MIN_WEIGHTS_BYTES, progress=False
        )
    except (ConnectionError, OSError) as exc:
        raise WeightsUnavailable(f"cannot download {name} from {url}: {exc}") from exc
    return Path(found)


def resolve_named_weights(settings: Settings) -> Settings:
    """`settings` with MODEL_PATH's named weights resolved to a file (downloaded if allowed).

    Unchanged when MODEL_PATH is unset, a file, or already resolved. Every process resolves
    for itself (`build_services`): processes starting together (gunicorn's workers) take
    turns under a file lock, so the first downloads and the others find its file.
    """
    name = settings.model_name
    if name is None or settings.model_path is not None:
        return settings
    found = find_named(name, settings)
    if found is None:
        if not settings.allow_weight_downloads:
            places = ", ".join(
                str(folder / name)
                for folder in (settings.pretrained_dir, settings.paths.pretrained)
                if folder is not None
            )
            raise WeightsDownloadRefused(
                f"MODEL_PATH {name!r} is no file, and pretrained weights are not downloaded "
                f"by default: set ALLOW_WEIGHT_DOWNLOADS=1 to download {name}, put the file at "
                f"{places}, or point MODEL_PATH at a weights file"
            )
        with exclusive_lock(settings.paths.pretrained_lock, wait=_retry_later):
            found = find_named(name, settings)  # downloaded while this process waited?
            if found is None:
                found = download_named(name, settings, settings.paths.pretrained)
    logger.info("MODEL_PATH %s: %s", name, found)
    return replace(settings, model_path=found)


def _retry_later() -> bool:
    """Between tries for the download lock: another process is downloading; wait for it."""
    time.sleep(0.5)
    return True
