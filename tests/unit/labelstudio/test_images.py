"""Image resolution: local paths, Label Studio URLs with auth, plain URLs, and every refusal."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import ultralytics  # noqa: F401  (the server always runs with ultralytics' PIL.Image.open patch)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.config import Settings
from backend.errors import ImageError
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.images import (
    MAX_REDIRECTS,
    HostNotAllowed,
    HostPolicy,
    ImageLoader,
    LoadedImage,
)
from tests.support.http_fixture import CannedServer, canned_http_server

TOKEN = "legacy-token-123"


def _png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with canned_http_server() as canned:
        canned.routes["/data/upload/1/a.png"] = (200, _png())
        canned.routes["/data/local-files/?d=pics/b.png"] = (200, _png(20, 10))
        canned.routes["/storage-data/s3/c.png"] = (200, _png(21, 10))
        canned.routes["/tasks/7/resolve/?fileuri=czM6Ly9iL2QucG5n"] = (200, _png(22, 10))
        canned.routes["/plain.png"] = (200, _png(8, 8))
        canned.routes["/broken.png"] = (200, b"not an image")
        canned.routes["/big.png"] = (200, _png(400, 400))
        yield canned


@pytest.fixture
def second_host() -> Iterator[CannedServer]:
    """Another host (127.0.0.2 is loopback too, but a different address and host name)."""
    with canned_http_server("127.0.0.2") as canned:
        canned.routes["/img.png"] = (200, _png(9, 9))
        yield canned


def _loader(root: Path, ls_url: str | None = None, **changes: object) -> ImageLoader:
    settings = replace(
        Settings(model_dir=root / "models", image_root=root, label_studio_url=ls_url), **changes
    )
    return ImageLoader(settings, LabelStudioClient(ls_url, TOKEN if ls_url else None))


def _tokens_sent(*servers: CannedServer) -> list[str]:
    return [
        path
        for canned in servers
        for path, headers in canned.seen_headers.items()
        if "Authorization" in headers
    ]


# -- local paths and the basic cases --------------------------------------------------------


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
    loader = _loader(tmp_path, server.url, allowed_image_hosts=("localhost",))
    assert loader.load("/data/upload/1/a.png").width == 40
    assert server.seen_headers["/data/upload/1/a.png"]["Authorization"] == f"Token {TOKEN}"
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
    assert loader.load(f"{server.url}/data/local-files/?d=pics/c.png").width == 12
    assert server.paths == []


def test_label_studio_url_without_settings(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="LABEL_STUDIO_URL"):
        _loader(tmp_path).load("/data/upload/1/a.png")


def test_foreign_host_needs_allow_list(tmp_path: Path, server: CannedServer) -> None:
    with pytest.raises(HostNotAllowed, match="not allowed"):
        _loader(tmp_path).load(f"{server.url}/plain.png")
    allowed = _loader(tmp_path, allowed_image_hosts=("127.0.0.1",))
    assert allowed.load(f"{server.url}/plain.png").width == 8


@pytest.mark.parametrize(
    ("path", "changes", "message"),
    [
        ("/missing.png", {}, "HTTP 404"),
        ("/broken.png", {}, "not a decodable image"),
        ("/big.png", {"max_image_bytes": 100}, "MAX_IMAGE_BYTES"),
        ("/big.png", {"max_image_pixels": 400 * 399}, "MAX_IMAGE_PIXELS"),
    ],
)
def test_bad_downloads(
    tmp_path: Path, server: CannedServer, path: str, changes: dict[str, object], message: str
) -> None:
    loader = _loader(tmp_path, allowed_image_hosts=("127.0.0.1",), **changes)
    with pytest.raises(ImageError, match=message):
        loader.load(server.url + path)


def test_unreachable_host(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loader = _loader(tmp_path, allowed_image_hosts=("127.0.0.1",), fetch_timeout=2.0)
    with pytest.raises(ImageError, match="failed|could not be read"):
        loader.load(f"http://127.0.0.1:{port}/x.png")


@pytest.mark.parametrize("ref", ["", "  ", None, 42, "s3://bucket/key.png", "ftp://host/x.png"])
def test_unsupported_references(tmp_path: Path, ref: object) -> None:
    with pytest.raises(ImageError):
        _loader(tmp_path).load(ref)


# -- 1. the host checked is the host connected to ------------------------------------------


def test_backslash_in_user_info_cannot_reach_another_host(
    tmp_path: Path, server: CannedServer
) -> None:
    # urllib.parse reads host 127.0.0.3 here; requests/urllib3 connect to 127.0.0.1.
    server.routes["/%5C@127.0.0.3/x.png"] = (200, _png(8, 8))
    loader = _loader(tmp_path, allowed_image_hosts=("127.0.0.3",))
    with pytest.raises(HostNotAllowed, match="'127.0.0.1' is not allowed"):
        loader.load(f"http://127.0.0.1:{server.port}\\@127.0.0.3/x.png")
    assert server.paths == []


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),  # by IP
        ("127.0.0.0/8", "localhost"),  # a name, allowed by the network it resolves into
        ("localhost", "localhost"),  # by name
        ("LocalHost.", "localhost"),
        ("127.0.0.1", "[::ffff:127.0.0.1]"),  # the same address, mapped into IPv6
    ],
)
def test_internal_address_reachable_when_named(
    tmp_path: Path, server: CannedServer, allowed: str, host: str
) -> None:
    loader = _loader(tmp_path, allowed_image_hosts=("*", allowed))
    assert loader.load(f"http://{host}:{server.port}/plain.png").width == 8


# -- 4. "*" means public addresses only ----------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "0x7f.1",
        "0177.0.0.1",
        "2130706433",
        "127.0.0.3",
        "localhost",
        "LOCALHOST",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",  # NAT64
        "[2002:7f00:1::]",  # 6to4
        "0.0.0.0",
        "0",
        "[::]",
        "169.254.169.254",
        "[fe80::1]",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "[fc00::1]",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
    ],
)
def test_wildcard_never_reaches_internal_addresses(
    tmp_path: Path, server: CannedServer, host: str
) -> None:
    loader = _loader(tmp_path, allowed_image_hosts=("*",), fetch_timeout=1.0)
    with pytest.raises(HostNotAllowed, match="non-public address"):
        loader.load(f"http://{host}:{server.port}/plain.png")
    assert server.paths == []


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),  # NAT64 of a public address
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1%2", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("0.0.0.0", False),
        ("::", False),
    ],
)
def test_wildcard_policy_on_peer_addresses(tmp_path: Path, address: str, public: bool) -> None:
    settings = Settings(model_dir=tmp_path, allowed_image_hosts=("*",))
    policy = HostPolicy.from_settings(settings)
    if public:
        policy.check_peer(("https", "cdn.example.com", 443), address)
    else:
        with pytest.raises(HostNotAllowed):
            policy.check_peer(("https", "cdn.example.com", 443), address)


def test_label_studio_origin_is_reachable_without_allow_list(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path, label_studio_url="http://10.0.0.5:8080")
    policy = HostPolicy.from_settings(settings)
    policy.check_peer(("http", "10.0.0.5", 8080), "10.0.0.5")
    with pytest.raises(HostNotAllowed):  # another port on that host is another service
        policy.check_peer(("http", "10.0.0.5", 6379), "10.0.0.5")


# -- 2. redirects --------------------------------------------------------------------------


def test_redirect_to_an_unlisted_host_is_refused(
    tmp_path: Path, server: CannedServer, second_host: CannedServer
) -> None:
    server.redirect("/data/upload/moved.png", f"{second_host.url}/img.png")
    with pytest.raises(HostNotAllowed, match="127.0.0.2"):
        _loader(tmp_path, server.url).load("/data/upload/moved.png")
    assert second_host.paths == []


def test_redirect_keeps_the_token_on_label_studio_only(
    tmp_path: Path, server: CannedServer, second_host: CannedServer
) -> None:
    server.redirect("/data/upload/old.png", "/data/upload/1/a.png", status=301)
    server.redirect("/data/upload/moved.png", f"{second_host.url}/img.png", status=307)
    loader = _loader(tmp_path, server.url, allowed_image_hosts=("127.0.0.2",))
    assert loader.load("/data/upload/old.png").width == 40
    assert server.seen_headers["/data/upload/1/a.png"]["Authorization"] == f"Token {TOKEN}"
    assert loader.load("/data/upload/moved.png").width == 9
    assert "Authorization" not in second_host.seen_headers["/img.png"]


def test_redirect_hops_are_checked_like_the_first(
    tmp_path: Path, server: CannedServer, second_host: CannedServer
) -> None:
    # From an allowed host to Label Studio's API, and to a host nobody allowed.
    second_host.redirect("/to-api.png", f"{server.url}/api/projects/1/export")
    second_host.redirect("/to-other.png", "http://127.0.0.3:9/x.png")
    loader = _loader(tmp_path, server.url, allowed_image_hosts=("127.0.0.2",))
    with pytest.raises(ImageError, match="not a media path"):
        loader.load(f"{second_host.url}/to-api.png")
    with pytest.raises(HostNotAllowed, match="127.0.0.3"):
        loader.load(f"{second_host.url}/to-other.png")
    assert server.paths == []


def test_redirects_are_bounded(tmp_path: Path, server: CannedServer) -> None:
    server.redirect("/data/upload/loop.png", "/data/upload/loop.png")
    with pytest.raises(ImageError, match=f"more than {MAX_REDIRECTS}"):
        _loader(tmp_path, server.url).load("/data/upload/loop.png")
    assert len(server.paths) == MAX_REDIRECTS + 1


# -- 3. the token only for Label Studio media paths ----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/1/export",
        "/data/upload/../../api/projects/1/export",
        "/data/upload/%2e%2e/%2e%2e/api/projects/1/export",
        "/data/upload/..%2F..%2Fapi/projects/1/export",
        "/data/upload/..%5C..%5Capi/projects/1/export",
        "/data/upload/%252e%252e/%252e%252e/api/projects/1/export",
        "/storage-data/../api/projects",
        "/tasks/1/export",
        "/tasks/abc/resolve/",
        "/tasks/1/../../api/resolve/",
        "/data/uploads/x.png",
        "/storage-datax/x.png",
    ],
)
@pytest.mark.parametrize("absolute", [False, True])
def test_token_only_for_media_paths(
    tmp_path: Path, server: CannedServer, path: str, absolute: bool
) -> None:
    server.routes["/api/projects/1/export"] = (200, _png(8, 8))
    loader = _loader(tmp_path, server.url)
    ref = server.url + path if absolute else path
    ls_relative = path.startswith(
        ("/data/upload/", "/data/local-files/", "/storage-data/", "/tasks/")
    )
    with pytest.raises(
        ImageError,
        match="not a media path" if absolute or ls_relative else "outside the allowed root",
    ):
        loader.load(ref)
    assert server.paths == []


@pytest.mark.parametrize(
    ("path", "width"),
    [
        ("/data/upload/1/a.png", 40),
        ("/data/upload/1/../1/a.png", 40),
        ("/data/local-files/?d=pics/b.png", 20),
        ("/storage-data/s3/c.png", 21),
        ("/tasks/7/resolve/?fileuri=czM6Ly9iL2QucG5n", 22),
    ],
)
def test_media_paths_get_the_token(
    tmp_path: Path, server: CannedServer, path: str, width: int
) -> None:
    assert _loader(tmp_path, server.url).load(path).width == width
    assert _tokens_sent(server) == [path.replace("/1/../1/", "/1/")]


def test_label_studio_under_a_base_path(tmp_path: Path, server: CannedServer) -> None:
    server.routes["/ls/data/upload/1/a.png"] = (200, _png(5, 5))
    loader = _loader(tmp_path, f"{server.url}/ls")
    assert loader.load("/data/upload/1/a.png").width == 5
    with pytest.raises(ImageError, match="not a media path"):
        loader.load(f"{server.url}/data/upload/1/a.png")  # outside the base path
    assert _tokens_sent(server) == ["/ls/data/upload/1/a.png"]


# -- 5. every failure is an ImageError ------------------------------------------------------


def test_malformed_references_are_image_errors(tmp_path: Path) -> None:
    loader = _loader(tmp_path, "http://127.0.0.1:9", local_files_root=tmp_path)
    refs: list[object] = [
        "/x\x00.jpg",
        "\ud800",
        "http://[::1",
        "http://[::1]:99999/x.png",
        "http://h\ud800st/x.png",
        "http://exa mple.com/x.png",
        "http://%zz/x.png",
        "http://:80/x.png",
        "http:///x.png",
        "file:///\x00",
        "//evil.example/x.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "/data/local-files/?d=" + "a" * 300,
        "/data/local-files/?d=%00",
        "/data/local-files/",
        str(tmp_path / ("a" * 300 + ".png")),  # ENAMETOOLONG
        b"/x.png",
        ["/x.png"],
        {"url": "/x.png"},
        3.5,
    ]
    for ref in refs:
        with pytest.raises(ImageError):
            loader.load(ref)


def test_messages_hold_no_secrets(tmp_path: Path, server: CannedServer) -> None:
    loader = _loader(tmp_path, allowed_image_hosts=("127.0.0.1",))
    refs = [
        f"http://user:pw-secret@127.0.0.1:{server.port}/missing.png?X-Amz-Signature=sig-secret",
        "http://user:pw-secret@127.0.0.9/x.png?sig=sig-secret",
        "http://user:pw-secret@[::1/x.png?sig=sig-secret",
        "/data/upload/x.png?token=tok-secret",
    ]
    for ref in refs:
        with pytest.raises(ImageError) as caught:
            loader.load(ref)
        assert "secret" not in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x07IHDR\x00\x00\x00\x01\x00\x00\x00",  # ValueError
        _png()[:40],  # truncated pixel data
        b"GIF89a\x10\x00\x10\x00",
        b"BM" + b"\xff" * 60,
        b"II*\x00" + b"\xff" * 60,
        "not bytes",
    ],
)
def test_malformed_bytes_are_image_errors(tmp_path: Path, data: bytes) -> None:
    loader = _loader(tmp_path)
    for call in (loader.image_size, loader.decode, loader.training_file):
        try:
            call(data, "x.png")
        except ImageError:
            continue
        assert call is loader.image_size, "only the header may be readable"


_REF_STARTS = [
    "",
    "/",
    "http://",
    "https://",
    "http://[",
    "http://127.0.0.1:9/",
    "file://",
    "/data/upload/",
    "/data/local-files/?d=",
    "/tasks/",
    "/storage-data/",
    "s3://",
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ref=st.one_of(
        st.text(st.characters(exclude_categories=())),
        st.builds(
            str.__add__,
            st.sampled_from(_REF_STARTS),
            st.text(st.characters(exclude_categories=()), max_size=60),
        ),
    )
)
def test_any_text_reference_gives_an_image_or_an_image_error(tmp_path: Path, ref: str) -> None:
    # Label Studio on a port nothing answers on; no host allowed, so no DNS lookups.
    loader = _loader(tmp_path, "http://127.0.0.1:9", local_files_root=tmp_path)
    try:
        image = loader.load(ref)
    except ImageError:
        return
    assert isinstance(image, LoadedImage)


def _seed_images() -> list[bytes]:
    gradient = Image.fromarray(np.arange(48 * 32, dtype=np.uint8).reshape(32, 48) % 251)
    rgb = gradient.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    deep = Image.fromarray((np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8))
    return [
        _encoded(rgb, "PNG"),
        _encoded(rgb, "PNG", exif=exif),
        _encoded(rgb, "JPEG", exif=exif),
        _encoded(gradient, "GIF"),
        _encoded(rgb, "BMP"),
        _encoded(rgb, "WEBP", lossless=True),
        _encoded(rgb, "TIFF", exif=exif),
        _encoded(deep, "PNG"),
        _encoded(deep.convert("F"), "TIFF"),
    ]


_SEEDS = _seed_images()


@st.composite
def _mutated_image(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def _image_or_error(call: Callable[[], object]) -> object | None:
    try:
        return call()
    except ImageError:
        return None


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(st.binary(max_size=512), _mutated_image()))
def test_any_bytes_give_an_image_or_an_image_error(tmp_path: Path, data: bytes) -> None:
    loader = _loader(tmp_path, max_image_pixels=100 * 100)
    size = _image_or_error(lambda: loader.image_size(data, "x"))
    image = _image_or_error(lambda: loader.decode(data, "x"))
    training = _image_or_error(lambda: loader.training_file(data, "x"))
    if isinstance(image, LoadedImage):
        assert image.pixels.shape == (image.height, image.width, 3)
        assert image.pixels.dtype == np.uint8
        assert size == (image.width, image.height)
        if training is not None:  # training sees exactly the picture that was predicted on
            retrained = loader.decode(training[0], "x")  # type: ignore[index]
            assert np.array_equal(retrained.pixels, image.pixels)


# -- 6. EXIF orientation --------------------------------------------------------------------

# The picture each EXIF orientation displays, for an array A of rows x columns (EXIF 2.3,
# Orientation tag), written independently of Pillow's transposition table.
_DISPLAYED: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, k=-1),  # rotated 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the anti-diagonal
    8: lambda a: np.rot90(a, k=1),  # rotated 90 degrees counter-clockwise
}


def _asymmetric(width: int = 6, height: int = 4) -> np.ndarray:
    """RGB pixels, every one different, so any flip or rotation shows."""
    values = np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3)
    return values * 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_displayed_picture(tmp_path: Path, orientation: int) -> None:
    stored = _asymmetric()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encoded(Image.fromarray(stored), "PNG", exif=exif)
    loader = _loader(tmp_path)
    image = loader.decode(data, "x.png")
    expected = _DISPLAYED[orientation](stored)
    assert np.array_equal(image.pixels[:, :, ::-1], expected)  # BGR -> RGB
    assert (image.width, image.height) == (expected.shape[1], expected.shape[0])
    assert loader.image_size(data, "x.png") == (expected.shape[1], expected.shape[0])


def test_rotated_jpeg_photo(tmp_path: Path) -> None:
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = (250, 0, 0)  # red left half, blue right half as stored
    stored[:, 40:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    (tmp_path / "photo.jpg").write_bytes(_encoded(Image.fromarray(stored), "JPEG", exif=exif))
    image = _loader(tmp_path).load(str(tmp_path / "photo.jpg"))
    assert (image.width, image.height) == (40, 80)
    rgb = image.pixels[:, :, ::-1].astype(int)
    assert np.abs(rgb[10, 20] - (250, 0, 0)).max() < 12  # red on top
    assert np.abs(rgb[70, 20] - (0, 0, 250)).max() < 12  # blue below


def test_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    header_only = _encoded(Image.new("RGB", (400, 300)), "PNG", exif=exif)[:120]
    loader = _loader(tmp_path, max_image_pixels=400 * 299)
    for call in (loader.image_size, loader.decode, loader.training_file):
        with pytest.raises(ImageError, match="MAX_IMAGE_PIXELS"):
            call(header_only, "x.png")
    assert _loader(tmp_path).image_size(header_only, "x.png") == (300, 400)
    with pytest.raises(ImageError, match="not a decodable image"):
        _loader(tmp_path).decode(header_only, "x.png")


# -- 7. high bit depths ---------------------------------------------------------------------


def _gradient_file(kind: str) -> bytes:
    """256 steps of a gradient whose right 8-bit reading is 0, 1, ..., 255."""
    steps = np.arange(256).reshape(1, 256).repeat(2, axis=0)
    if kind == "I;16 PNG":
        return _encoded(Image.fromarray((steps * 257).astype(np.uint16)), "PNG")
    if kind == "I;16B TIFF":
        return _encoded(Image.fromarray((steps * 257).astype(">u2")), "TIFF")
    if kind == "I TIFF, 16-bit range":
        return _encoded(Image.fromarray((steps * 257).astype(np.int32)), "TIFF")
    if kind == "I TIFF, wide range":
        return _encoded(Image.fromarray((steps * 1_000_000 - 5_000_000).astype(np.int32)), "TIFF")
    if kind == "F TIFF, 0..1":
        return _encoded(Image.fromarray((steps / 255).astype(np.float32)), "TIFF")
    if kind == "F TIFF, 0..1020":
        return _encoded(Image.fromarray((steps * 4.0).astype(np.float32)), "TIFF")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("I;16 PNG", "I;16"),
        ("I;16B TIFF", "I;16B"),
        ("I TIFF, 16-bit range", "I"),
        ("I TIFF, wide range", "I"),
        ("F TIFF, 0..1", "F"),
        ("F TIFF, 0..1020", "F"),
    ],
)
def test_high_bit_depth_keeps_its_gradient(tmp_path: Path, kind: str, mode: str) -> None:
    data = _gradient_file(kind)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == mode
    image = _loader(tmp_path).decode(data, "x")
    expected = np.arange(256, dtype=np.uint8)
    for channel in range(3):
        assert np.array_equal(image.pixels[0, :, channel], expected)


def test_float_image_with_nan_and_infinity(tmp_path: Path) -> None:
    values = np.array([[np.nan, 0.0, 0.5, 1.0, np.inf, -np.inf]], dtype=np.float32)
    image = _loader(tmp_path).decode(_encoded(Image.fromarray(values), "TIFF"), "x")
    assert image.pixels[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


def test_local_file_over_the_byte_limit(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(_png(400, 400))
    with pytest.raises(ImageError, match="MAX_IMAGE_BYTES=100 limit"):
        _loader(tmp_path, max_image_bytes=100).load(str(tmp_path / "x.png"))
