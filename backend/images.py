"""Resolve a task's image reference to pixels, safely.

Handles what Label Studio users put in tasks: files uploaded to LS (`/data/upload/...`), LS
local-file storage (`/data/local-files/?d=...`), plain http(s) URLs and local paths. Every
failure raises ImageError with a reason; the service turns that into an empty prediction for
that one task. Limits: bytes downloaded, pixel count (checked from the header, before
decoding), hosts (the LS token is only ever sent to the LS host).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import numpy as np
import requests
from PIL import Image, UnidentifiedImageError

from backend.config import Settings
from backend.errors import ImageError
from backend.ls_client import LabelStudioClient

logger = logging.getLogger(__name__)

_LS_PREFIXES = ("/data/upload/", "/data/local-files/", "/storage-data/", "/tasks/")


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels (BGR, as OpenCV and ultralytics use) and the original size."""

    pixels: np.ndarray
    width: int
    height: int


class ImageLoader:
    """Turns task image references into `LoadedImage`s under the configured limits."""

    def __init__(self, settings: Settings, ls: LabelStudioClient) -> None:
        self._settings = settings
        self._ls = ls
        self._ls_host = urlsplit(settings.label_studio_url or "").netloc.lower()
        self._http = requests.Session()

    def load(self, ref: object) -> LoadedImage:
        """Resolve, read and decode one image reference; raises ImageError."""
        return self._decode(self.read(ref), str(ref))

    def read(self, ref: object) -> bytes:
        """Resolve and read one image reference's bytes (undecoded); raises ImageError."""
        if not isinstance(ref, str) or not ref.strip():
            raise ImageError(f"image reference must be a non-empty string, got {ref!r}")
        ref = ref.strip()
        parts = urlsplit(ref)
        if parts.scheme in ("http", "https"):
            if parts.netloc.lower() == self._ls_host:
                return self._from_label_studio(parts.path, parts.query, ref)
            return self._fetch(ref, headers={})
        if parts.scheme == "" and ref.startswith(_LS_PREFIXES):
            return self._from_label_studio(parts.path, parts.query, ref)
        if parts.scheme in ("", "file"):
            path = unquote(parts.path) if parts.scheme == "file" else ref
            return self._read_under(Path(path), self._settings.image_root, ref)
        raise ImageError(
            f"unsupported image URL scheme {parts.scheme!r} in {ref!r}: cloud storage URLs "
            "must be served through Label Studio"
        )

    def file_suffix(self, data: bytes, ref: str) -> str:
        """The file suffix for image bytes (".jpg", ".png", ...), checking the pixel limit."""
        try:
            with Image.open(io.BytesIO(data)) as header:
                self._check_pixels(header.size, ref)
                fmt = (header.format or "").lower()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{ref!r} is not a decodable image: {exc}") from exc
        return {"jpeg": ".jpg", "mpo": ".jpg"}.get(fmt, f".{fmt}" if fmt else ".jpg")

    def _check_pixels(self, size: tuple[int, int], ref: str) -> None:
        width, height = size
        if width * height > self._settings.max_image_pixels:
            raise ImageError(
                f"{ref!r} has {width}x{height} pixels, over MAX_IMAGE_PIXELS="
                f"{self._settings.max_image_pixels}"
            )

    def _from_label_studio(self, path: str, query: str, ref: str) -> bytes:
        root = self._settings.local_files_root
        if path.startswith("/data/local-files") and root is not None:
            relative = parse_qs(query).get("d", [""])[0]
            if not relative:
                raise ImageError(f"local-files URL without ?d= in {ref!r}")
            candidate = root / relative.lstrip("/")
            if candidate.is_file():
                return self._read_under(candidate, root, ref)
        if not self._ls.configured:
            raise ImageError(
                f"{ref!r} is a Label Studio URL but LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY "
                "are not set"
            )
        url = urljoin(self._ls.url + "/", path.lstrip("/")) + (f"?{query}" if query else "")
        return self._fetch(url, headers=self._ls.auth_headers(), trusted=True)

    def _fetch(self, url: str, headers: dict[str, str], trusted: bool = False) -> bytes:
        host = (urlsplit(url).hostname or "").lower()
        allowed = self._settings.allowed_image_hosts
        if not trusted and "*" not in allowed and host not in allowed:
            raise ImageError(
                f"host {host!r} is not allowed; add it to ALLOWED_IMAGE_HOSTS (or '*')"
            )
        limit = self._settings.max_image_bytes
        try:
            with self._http.get(
                url,
                headers=headers,
                stream=True,
                timeout=self._settings.fetch_timeout,
                allow_redirects=trusted,
            ) as response:
                if response.status_code != 200:
                    raise ImageError(f"GET {_safe(url)} answered HTTP {response.status_code}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise ImageError(f"{_safe(url)} is {declared} bytes, over {limit}")
                body = bytearray()
                for chunk in response.iter_content(chunk_size=1 << 16):
                    body.extend(chunk)
                    if len(body) > limit:
                        raise ImageError(f"{_safe(url)} is over the {limit}-byte limit")
                return bytes(body)
        except requests.RequestException as exc:
            raise ImageError(f"GET {_safe(url)} failed: {type(exc).__name__}") from exc

    def _read_under(self, path: Path, root: Path | None, ref: str) -> bytes:
        if root is None:
            raise ImageError(f"local path {ref!r} refused: IMAGE_ROOT is not set")
        resolved = path.expanduser().resolve()
        if not resolved.is_relative_to(root):
            raise ImageError(f"local path {ref!r} is outside the allowed root {root}")
        if not resolved.is_file():
            raise ImageError(f"local file {ref!r} does not exist")
        size = resolved.stat().st_size
        if size > self._settings.max_image_bytes:
            raise ImageError(f"{ref!r} is {size} bytes, over {self._settings.max_image_bytes}")
        return resolved.read_bytes()

    def _decode(self, data: bytes, ref: str) -> LoadedImage:
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
                self._check_pixels(header.size, ref)
                image = header.convert("RGB") if header.mode != "RGB" else header.copy()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ImageError(f"{ref!r} is not a decodable image: {exc}") from exc
        pixels = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # RGB -> BGR
        return LoadedImage(pixels=pixels, width=width, height=height)


def _safe(url: str) -> str:
    """A URL for logs and messages: no query string (it may hold signatures)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
