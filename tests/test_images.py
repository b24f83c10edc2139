"""Image resolution: local paths, Label Studio URLs with auth, plain URLs, and every refusal."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import ultralytics  # noqa: F401  (the server always runs with ultralytics' PIL.Image.open patch)
from PIL import Image

from backend.config import Settings
from backend.errors import ImageError
from backend.images import ImageLoader
from backend.ls_client import LabelStudioClient
from tests.http_fixture import CannedServer, canned_http_server


def _png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with canned_http_server() as canned:
        canned.routes["/data/upload/1/a.png"] = (200, _png())
        canned.routes["/data/local-files/?d=pics/b.png"] = (200, _png(20, 10))
        canned.routes["/plain.png"] = (200, _png(8, 8))
        canned.routes["/broken.png"] = (200, b"not an image")
        canned.routes["/big.png"] = (200, _png(400, 400))
        yield canned


def _loader(root: Path, ls_url: str | None = None, **changes: object) -> ImageLoader:
    settings = replace(
        Settings(model_dir=root / "models", image_root=root, label_studio_url=ls_url), **changes
    )
    return ImageLoader(settings, LabelStudioClient(ls_url, "legacy-token-123" if ls_url else None))


def test_local_path_under_root(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(_png(40, 30))
    image = _loader(tmp_path).load(str(tmp_path / "x.png"))
    assert (image.width, image.height) == (40, 30)
    assert image.pixels.shape == (30, 40, 3)
    assert tuple(image.pixels[0, 0]) == (30, 200, 10)  # BGR


def test_local_path_outside_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(_png())
    with pytest.raises(ImageError, match="outside the allowed root"):
        _loader(root).load(str(root / ".." / "secret.png"))


def test_local_path_without_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(_png())
    with pytest.raises(ImageError, match="IMAGE_ROOT is not set"):
        _loader(tmp_path, image_root=None).load(str(tmp_path / "x.png"))


def test_label_studio_upload_sends_token_only_to_label_studio(
    tmp_path: Path, server: CannedServer
) -> None:
    loader = _loader(tmp_path, server.url, allowed_image_hosts=("*",))
    assert loader.load("/data/upload/1/a.png").width == 40
    assert server.seen_headers["/data/upload/1/a.png"]["Authorization"] == "Token legacy-token-123"
    assert loader.load(f"{server.url}/data/local-files/?d=pics/b.png").width == 20
    # Another host (localhost is not 127.0.0.1 by name) never receives the token.
    other = server.url.replace("127.0.0.1", "localhost")
    assert loader.load(f"{other}/plain.png").width == 8
    assert "Authorization" not in server.seen_headers["/plain.png"]


def test_local_files_read_from_disk_when_root_known(tmp_path: Path, server: CannedServer) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "c.png").write_bytes(_png(12, 34))
    loader = _loader(tmp_path, server.url, local_files_root=tmp_path)
    image = loader.load("/data/local-files/?d=pics/c.png")
    assert (image.width, image.height) == (12, 34)
    assert "/data/local-files/?d=pics/c.png" not in server.seen_headers


def test_label_studio_url_without_settings(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="LABEL_STUDIO_URL"):
        _loader(tmp_path).load("/data/upload/1/a.png")


def test_foreign_host_needs_allow_list(tmp_path: Path, server: CannedServer) -> None:
    with pytest.raises(ImageError, match="not allowed"):
        _loader(tmp_path).load(f"{server.url}/plain.png")
    allowed = _loader(tmp_path, allowed_image_hosts=("127.0.0.1",))
    assert allowed.load(f"{server.url}/plain.png").width == 8


@pytest.mark.parametrize(
    ("path", "changes", "message"),
    [
        ("/missing.png", {}, "HTTP 404"),
        ("/broken.png", {}, "not a decodable image"),
        ("/big.png", {"max_image_bytes": 100}, "limit|over"),
        ("/big.png", {"max_image_pixels": 400 * 399}, "MAX_IMAGE_PIXELS"),
    ],
)
def test_bad_downloads(
    tmp_path: Path, server: CannedServer, path: str, changes: dict[str, object], message: str
) -> None:
    loader = _loader(tmp_path, allowed_image_hosts=("*",), **changes)
    with pytest.raises(ImageError, match=message):
        loader.load(server.url + path)


def test_unreachable_host(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loader = _loader(tmp_path, allowed_image_hosts=("*",), fetch_timeout=2.0)
    with pytest.raises(ImageError, match="failed"):
        loader.load(f"http://127.0.0.1:{port}/x.png")


@pytest.mark.parametrize("ref", ["", None, 42, "s3://bucket/key.png", "ftp://host/x.png"])
def test_unsupported_references(tmp_path: Path, ref: object) -> None:
    with pytest.raises(ImageError):
        _loader(tmp_path).load(ref)
