"""Resolve a task's image reference to pixels, safely.

Handles what Label Studio users put in tasks: files uploaded to LS (`/data/upload/...`), LS
local-file storage (`/data/local-files/?d=...`), LS cloud-storage proxies (`/storage-data/...`,
`/tasks/<id>/resolve/?fileuri=...`), plain http(s) URLs and local paths under IMAGE_ROOT.

Fetching follows `HostPolicy`:
- Label Studio's origin (LABEL_STUDIO_URL's scheme, host and port) serves only its media paths
  (above, checked after percent-decoding and resolving `..`), and only those get the LS token;
  any other URL there is refused.
- Other hosts must be in ALLOWED_IMAGE_HOSTS (names, IPs or CIDR networks; "*" = any public
  address). Loopback, private, link-local, unspecified, multicast and reserved addresses are
  reached only when named there explicitly, or as Label Studio's origin.
- The address is checked on the socket actually connected, before a byte is sent, and the
  host is the one the connection uses (urllib3's reading of the URL), so neither a URL that
  parsers read differently nor a DNS answer that changes between checks reaches another host.
- Redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked like the first;
  no proxy is used (it would hide the address to check).
- Limits: bytes downloaded, and pixel count, checked from the header before decoding.

Decoding gives the picture Label Studio and browsers show: EXIF orientation applied and high
bit depths (16-bit, 32-bit integer, float) scaled to 8 bits (see `_scaled_to_uint8`).

Every failure, including any parser or decoder exception on hostile input, raises ImageError
with a reason free of tokens, user info and query strings; the service turns it into an empty
prediction for that one task.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import numpy as np
import requests
import urllib3
from PIL import ExifTags, Image
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import parse_url

from backend.config import Settings
from backend.errors import ImageError
from backend.labelstudio.client import LabelStudioClient

logger = logging.getLogger(__name__)

# Relative references that name a Label Studio URL (anything else relative is a local path).
_LS_PREFIXES = ("/data/upload/", "/data/local-files/", "/storage-data/", "/tasks/")
MAX_REDIRECTS = 5
_MAX_PERCENT_DECODES = 4
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Origin = tuple[str, str, int]  # scheme, host, port


class HostNotAllowed(ImageError):
    """An image URL's host, or the address it connected to, is outside ALLOWED_IMAGE_HOSTS."""


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels (BGR, as OpenCV and ultralytics use) and their (displayed) size."""

    pixels: np.ndarray
    width: int
    height: int


@dataclass(frozen=True)
class _Target:
    """Where one request goes, as its connection will see it."""

    scheme: str
    host: str  # lower case, no IPv6 brackets, no trailing dot
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> _Target:
        """Parse a prepared URL; refuses one that urllib3 and urllib.parse read differently.

        requests picks the connection pool with urllib.parse and urllib3 builds the request
        with its own parser; both must name the same host and port.
        """
        parsed, split = parse_url(url), urlsplit(url)
        scheme = (parsed.scheme or "").lower()
        if scheme not in _DEFAULT_PORTS:
            raise ImageError(f"unsupported URL scheme {scheme!r} in {_describe(url)}")
        host = _canonical_host(parsed.host or "")
        port = parsed.port or _DEFAULT_PORTS[scheme]
        if not host:
            raise ImageError(f"{_describe(url)} has no host")
        if (_canonical_host(split.hostname or ""), split.port or _DEFAULT_PORTS[scheme]) != (
            host,
            port,
        ):
            raise ImageError(f"{_describe(url)} is ambiguous: its host reads differently")
        return cls(scheme=scheme, host=host, port=port, path=parsed.path or "/")

    @property
    def origin(self) -> Origin:
        return (self.scheme, self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


@dataclass(frozen=True)
class HostPolicy:
    """Which hosts and addresses image downloads may connect to (ALLOWED_IMAGE_HOSTS)."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]
    any_public: bool
    label_studio: Origin | None

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        names, networks = set(), []
        for entry in settings.allowed_image_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(_canonical_host(entry))
        label_studio = None
        if settings.label_studio_url:
            label_studio = _Target.of(settings.label_studio_url).origin
        return cls(
            names=frozenset(names - {"*"}),
            networks=tuple(networks),
            any_public="*" in names,
            label_studio=label_studio,
        )

    def check_target(self, target: _Target) -> None:
        """Refuse, before connecting, a host that no address it resolves to could make allowed."""
        if target.origin == self.label_studio or target.host in self.names:
            return
        try:
            address = ipaddress.ip_address(target.host)
        except ValueError:  # a name: decided on the address it connects to
            if self.any_public or self.networks:
                return
            raise HostNotAllowed(
                f"host {target.host!r} is not allowed; add it to ALLOWED_IMAGE_HOSTS"
            ) from None
        self._check_address(target.host, address)

    def check_peer(self, origin: Origin, peer: str) -> None:
        """Refuse a connection to `origin` that reached the address `peer`."""
        if origin == self.label_studio or origin[1] in self.names:
            return
        self._check_address(origin[1], ipaddress.ip_address(peer))

    def _check_address(self, host: str, address: IPAddress) -> None:
        inner = _embedded_ipv4(address) or address
        if any(address in net or inner in net for net in self.networks):
            return
        if self.any_public and _is_public(inner):
            return
        if self.any_public:
            raise HostNotAllowed(
                f"host {host!r} is at {inner}, a non-public address that '*' does not "
                "cover; name it in ALLOWED_IMAGE_HOSTS to allow it"
            )
        shown = host if host == str(inner) else f"{host} ({inner})"
        raise HostNotAllowed(f"host {shown!r} is not allowed; add it to ALLOWED_IMAGE_HOSTS")


def _canonical_host(host: str) -> str:
    return host.strip("[]").lower().rstrip(".")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4 or NAT64), else None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, unspecified, ..."""
    return address.is_global and not address.is_multicast and not address.is_reserved


class _PeerChecked:
    """Mixin for urllib3 connections: ask the policy about the address reached, before sending."""

    host_policy: ClassVar[HostPolicy]
    url_scheme: ClassVar[str]
    host: str
    port: int

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        try:
            origin = (self.url_scheme, _canonical_host(self.host), self.port)
            self.host_policy.check_peer(origin, sock.getpeername()[0])
        except BaseException:
            sock.close()
            raise
        return sock


def _peer_checked_pools(policy: HostPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections check every peer address against `policy`."""

    class PeerCheckedHTTPConnection(_PeerChecked, HTTPConnection):
        host_policy = policy
        url_scheme = "http"

    class PeerCheckedHTTPSConnection(_PeerChecked, HTTPSConnection):
        host_policy = policy
        url_scheme = "https"

    class PeerCheckedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = PeerCheckedHTTPConnection

    class PeerCheckedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = PeerCheckedHTTPSConnection

    return {"http": PeerCheckedHTTPConnectionPool, "https": PeerCheckedHTTPSConnectionPool}


class PolicyAdapter(HTTPAdapter):
    """A requests adapter that connects only where `policy` allows (see `_PeerChecked`)."""

    def __init__(self, policy: HostPolicy) -> None:
        self.policy = policy  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]
        self.poolmanager.pool_classes_by_scheme = _peer_checked_pools(self.policy)


class ImageLoader:
    """Turns task image references into `LoadedImage`s under the configured limits."""

    def __init__(self, settings: Settings, ls: LabelStudioClient) -> None:
        self._settings = settings
        self._ls = ls
        self._policy = HostPolicy.from_settings(settings)
        self._ls_base = _resolved_segments(urlsplit(settings.label_studio_url or "").path) or []
        # An adapter, not a Session: no cookies, no .netrc, no environment proxies, and a
        # redirect's body is never read.
        self._adapter = PolicyAdapter(self._policy)

    # -- public API ------------------------------------------------------------------------

    def load(self, ref: object) -> LoadedImage:
        """Resolve, read and decode one image reference; raises ImageError."""
        data = self.read(ref)
        return self.decode(data, str(ref).strip())

    def read(self, ref: object) -> bytes:
        """Resolve and read one image reference's bytes (undecoded); raises ImageError."""
        if not isinstance(ref, str):
            raise ImageError(f"image reference must be a string, got {type(ref).__name__}")
        text = ref.strip()
        if not text:
            raise ImageError("image reference is empty")
        try:
            return self._read(text)
        except ImageError:
            raise
        except (OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
            # OSError covers requests' exceptions; ValueError covers UnicodeError and URL
            # parsers. The exception's text may quote the URL, so only its type is reported.
            raise ImageError(f"{_describe(text)} could not be read ({type(exc).__name__})") from exc

    def image_size(self, data: bytes, ref: str) -> tuple[int, int]:
        """Displayed (width, height) from the header alone; raises ImageError.

        Swapped for EXIF orientations 5-8; over MAX_IMAGE_PIXELS or unreadable is an error.
        """
        with _decoder_errors(ref), self._open(data, ref) as image:
            width, height = image.size
            return (height, width) if _orientation(image) in (5, 6, 7, 8) else (width, height)

    def decode(self, data: bytes, ref: str) -> LoadedImage:
        """The displayed picture (EXIF orientation applied, 8-bit BGR); raises ImageError."""
        with _decoder_errors(ref), self._open(data, ref) as image:
            picture = _displayed_rgb8(image)
            pixels = np.ascontiguousarray(np.asarray(picture)[:, :, ::-1])  # RGB -> BGR
        return LoadedImage(pixels=pixels, width=picture.width, height=picture.height)

    def training_file(self, data: bytes, ref: str) -> tuple[bytes, str]:
        """The image as training must see it, with its file suffix; raises ImageError.

        Annotations are drawn on the displayed picture, so anything that is not a plain 8-bit
        file in a format training reads, shown as stored, is re-encoded: a PNG of `decode`'s
        picture, without EXIF. A plain file keeps its original bytes.
        """
        with _decoder_errors(ref), self._open(data, ref) as image:
            suffix = _TRAINING_SUFFIXES.get(image.format or "")
            if suffix and image.mode in _PLAIN_MODES and _orientation(image) == 1:
                image.load()  # refuse undecodable bytes here, not in the middle of training
                return data, suffix
            buffer = io.BytesIO()
            _displayed_rgb8(image).save(buffer, "PNG")
        return buffer.getvalue(), ".png"

    # -- resolving and fetching -----------------------------------------------------------

    def _read(self, ref: str) -> bytes:
        if ref.startswith(_LS_PREFIXES):  # relative Label Studio URL
            local = self._local_files_copy(urlsplit(ref).path, urlsplit(ref).query, ref)
            if local is not None:
                return local
            if not self._settings.label_studio_url:
                raise ImageError(
                    f"{_describe(ref)} is a Label Studio URL but LABEL_STUDIO_URL is not set"
                )
            return self._fetch(self._settings.label_studio_url.rstrip("/") + ref)
        scheme = urlsplit(ref).scheme.lower()
        if scheme in ("http", "https"):
            return self._fetch(ref)
        if scheme in ("", "file"):
            path = unquote(urlsplit(ref).path) if scheme == "file" else ref
            return self._read_under(Path(path), self._settings.image_root, ref)
        raise ImageError(
            f"unsupported image URL scheme {scheme!r} in {_describe(ref)}: cloud storage URLs "
            "must be served through Label Studio"
        )

    def _fetch(self, url: str) -> bytes:
        """GET `url`, following redirects by hand; every hop is checked like the first."""
        for _hop in range(MAX_REDIRECTS + 1):
            request = requests.Request("GET", url, headers={"Accept-Encoding": "identity"})
            prepared = request.prepare()
            target = _Target.of(prepared.url or "")
            if target.origin == self._policy.label_studio:
                segments = self._media_segments(target)
                if segments[:2] == ["data", "local-files"]:
                    query = parse_url(prepared.url or "").query or ""
                    local = self._local_files_copy("/data/local-files/", query, url)
                    if local is not None:
                        return local
                prepared.headers.update(self._label_studio_auth(target))
            else:
                self._policy.check_target(target)
            with self._adapter.send(
                prepared, stream=True, timeout=self._settings.fetch_timeout, verify=True
            ) as response:
                if not response.is_redirect:
                    return self._body(response, target)
                location = response.headers["Location"]
            url = urljoin(prepared.url or "", location)
        raise ImageError(f"GET {target} redirected more than {MAX_REDIRECTS} times")

    def _media_segments(self, target: _Target) -> list[str]:
        """The path under LABEL_STUDIO_URL of a Label Studio media URL; refuses any other."""
        segments = _resolved_segments(target.path)
        base = len(self._ls_base)
        if segments is None or segments[:base] != self._ls_base:
            segments = []
        if not _is_media_route(segments[base:]):
            raise ImageError(
                f"{target} is on Label Studio but not a media path ({', '.join(_LS_PREFIXES)}"
                "<id>/resolve/); refused, so the API token goes nowhere else"
            )
        return segments[base:]

    def _label_studio_auth(self, target: _Target) -> dict[str, str]:
        if not self._ls.configured:
            raise ImageError(
                f"{target} is a Label Studio URL but LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY "
                "are not set"
            )
        return self._ls.auth_headers()

    def _local_files_copy(self, path: str, query: str, ref: str) -> bytes | None:
        """LS local-files storage read from disk when LOCAL_FILES_DOCUMENT_ROOT has the file."""
        root = self._settings.local_files_root
        if root is None or _resolved_segments(path) != ["data", "local-files"]:
            return None
        relative = parse_qs(query).get("d", [""])[0]
        if not relative:
            raise ImageError(f"local-files URL without ?d= in {_describe(ref)}")
        candidate = root / relative.lstrip("/")
        return self._read_under(candidate, root, ref) if candidate.is_file() else None

    def _body(self, response: requests.Response, target: _Target) -> bytes:
        if response.status_code != 200:
            raise ImageError(f"GET {target} answered HTTP {response.status_code}")
        limit = self._settings.max_image_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise ImageError(f"{target} is {declared} bytes, over MAX_IMAGE_BYTES={limit}")
        body = bytearray()
        for chunk in response.iter_content(chunk_size=1 << 16):
            body.extend(chunk)
            if len(body) > limit:
                raise ImageError(f"{target} is over the MAX_IMAGE_BYTES={limit} limit")
        return bytes(body)

    def _read_under(self, path: Path, root: Path | None, ref: str) -> bytes:
        if root is None:
            raise ImageError(f"local path {_describe(ref)} refused: IMAGE_ROOT is not set")
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            raise ImageError(f"local path {_describe(ref)} is outside the allowed root {root}")
        if not resolved.is_file():
            raise ImageError(f"local file {_describe(ref)} does not exist")
        limit = self._settings.max_image_bytes
        with resolved.open("rb") as handle:
            data = handle.read(limit + 1)  # bounded, even if the file grows meanwhile
        if len(data) > limit:
            raise ImageError(f"{_describe(ref)} is over the MAX_IMAGE_BYTES={limit} limit")
        return data

    # -- decoding -------------------------------------------------------------------------

    @contextmanager
    def _open(self, data: bytes, ref: str) -> Iterator[Image.Image]:
        """The image with only its header read, after the pixel limit check."""
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > self._settings.max_image_pixels:
                raise ImageError(
                    f"{_describe(ref)} has {width}x{height} pixels, over MAX_IMAGE_PIXELS="
                    f"{self._settings.max_image_pixels}"
                )
            yield image


def _is_media_route(segments: Sequence[str]) -> bool:
    """Is this path (under LABEL_STUDIO_URL) one of Label Studio's media routes?

    `/data/upload/...`, `/data/local-files/...`, `/storage-data/...`, `/tasks/<id>/resolve/...`.
    """
    return (
        list(segments[:2]) in (["data", "upload"], ["data", "local-files"])
        or list(segments[:1]) == ["storage-data"]
        or (
            len(segments) >= 3
            and segments[0] == "tasks"
            and re.fullmatch("[0-9]+", segments[1]) is not None
            and segments[2] == "resolve"
        )
    )


def _resolved_segments(path: str) -> list[str] | None:
    """A URL path's segments as a lenient server may read them; None if decoding never settles.

    Percent-decoded until stable (so `%2e%2e` and `%252e%252e` count as `..`), `\\` read as
    `/`, empty and `.` segments dropped, and `..` resolved (never above the root).
    """
    for _ in range(_MAX_PERCENT_DECODES):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return None
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return segments


def _describe(ref: str) -> str:
    """`ref` for messages and logs, quoted: no user info, query or fragment, at most 120 chars."""
    text = ref.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = text.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        text = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return repr(text if len(text) <= 120 else text[:117] + "...")


@contextmanager
def _decoder_errors(ref: str) -> Iterator[None]:
    """Turn any exception from Pillow's decoders into ImageError.

    Pillow's plugins raise many kinds of exception on hostile bytes (OSError, ValueError,
    SyntaxError, struct.error, IndexError, DecompressionBombError, ...), and each means only
    "this image cannot be decoded", so here, and only here, all of them are caught, chained and
    reported with their type.
    """
    try:
        yield
    except ImageError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:200]
        raise ImageError(f"{_describe(ref)} is not a decodable image ({reason})") from exc


# 8-bit modes that training (OpenCV) reads as `decode` does; other modes are re-encoded.
_PLAIN_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"})
# Formats kept as they are for training, with the suffix ultralytics recognises.
_TRAINING_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp"}
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = as stored, 2-8 = flipped and/or rotated), from the header.

    A PNG's eXIf chunk counts only before the pixel data (as the PNG spec requires): finding a
    later one would mean decoding the whole image.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# EXIF orientation -> the transpose that shows the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _displayed_rgb8(image: Image.Image) -> Image.Image:
    """The picture as Label Studio shows it: EXIF orientation applied, 8-bit RGB.

    The orientation is read from the header, as `image_size` reads it, before any pixel is
    decoded (a damaged TIFF can read differently once loaded), so the two always agree.
    """
    method = _UPRIGHT.get(_orientation(image))
    if method is not None:
        image = image.transpose(method)
    if image.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_scaled_to_uint8(np.asarray(image))).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _scaled_to_uint8(values: np.ndarray) -> np.ndarray:
    """One channel of 16-bit, 32-bit integer or float samples, as 8 bits (Pillow clips instead).

    - unsigned 16-bit: the high byte (v >> 8, so 257 * k becomes k);
    - 32-bit integers (Pillow's mode "I", which some 16-bit files open as): the 16-bit rule when
      all values are in 0..65535, else min-max scaled;
    - float: values in [0, 1] times 255 (the usual convention for float images), else min-max
      scaled (there is no standard range); NaN counts as the minimum, infinities are clipped.
    A constant image outside those ranges becomes black.
    """
    if values.dtype.kind == "u":
        return (values >> 8).astype(np.uint8)
    if values.dtype.kind == "i":
        smallest, largest = int(values.min()), int(values.max())
        if smallest >= 0 and largest <= 65535:
            return (values >> 8).astype(np.uint8)
        return _min_max_scaled(values.astype(np.float64), smallest, largest)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    clean = np.clip(np.nan_to_num(values.astype(np.float64), nan=low), low, high)
    if low >= 0.0 and high <= 1.0:
        return np.round(clean * 255.0).astype(np.uint8)
    return _min_max_scaled(clean, low, high)


def _min_max_scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
