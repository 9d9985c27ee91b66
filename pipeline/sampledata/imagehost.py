"""A local image host on 127.0.0.1 for tests, benchmarks and the demo: no test may reach the live web.

`GET /<host>/<path>` serves, in this order:
- a failure when the path has a `/fail/<kind>/` segment (see `FAILURE_KINDS`): 404, 500, a response
  slower than any client timeout, truncated or garbage bytes labelled as an image, a decompression bomb
  (a tiny PNG declaring a gigantic canvas), HTML labelled `text/html`, a valid image carrying
  `X-Robots-Tag: noai`, redirects (to a good image, or to the cloud metadata address);
- the file `root/<host>/<path>` when a root directory is given (the sample crawl writes its images there);
- otherwise a deterministic generated picture: a crop of a public-domain photograph shipped with
  scikit-image, blended with a colour field seeded by the URL, so every URL is perceptually distinct.
  A `/dup/<name>/` segment seeds by `<name>` only (the same picture under several URLs) and
  `/size/<w>x<h>/` fixes the pixel size. The encoding follows the extension (png, webp, gif; else JPEG).

Documents keep their original image URLs; the downloader maps `https://img.example/a.jpg` to
`http://127.0.0.1:PORT/img.example/a.jpg` at fetch time (`download.rewrite_to`). Every request is
recorded, so tests can prove what was and was not fetched.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

# Public-domain / CC0 photographs bundled in scikit-image's wheel (no download needed).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "camera", "coins", "moon", "brick", "grass", "gravel", "clock", "colorwheel", "cell")
FAILURE_KINDS = ("404", "500", "timeout", "corrupt", "garbage", "bomb", "wrong_type", "noai", "redirect",
                 "redirect_metadata")
# What the m3w pipeline reports for each failure kind (the drop reason; "ok" when the image survives).
FAILURE_REASONS = {
    "404": "http_404",
    "500": "http_500",
    "timeout": "timeout",
    "corrupt": "decode_error",
    "garbage": "decode_error",
    "bomb": "too_many_pixels",
    "wrong_type": "wrong_content_type",
    "noai": "opted_out_header",
    "redirect": "ok",
    "redirect_metadata": "unsafe_address",
}
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
_FAIL = re.compile(r"/fail/([a-z0-9_]+)(?=/)")
_DUP = re.compile(r"/dup/([^/]+)(?=/)")
_SIZE = re.compile(r"/size/(\d{1,5})x(\d{1,5})(?=/)")
_ENCODE_OPTIONS = {"JPEG": {"quality": 90}, "WEBP": {"quality": 90}, "PNG": {"compress_level": 1}}
MAX_GENERATED_SIDE = 4096  # `/size/WxH/` is clamped to this: the host must not be the one that runs out of memory
GENERATED_CACHE_BYTES = 256_000_000  # generated responses kept in memory, least recently used dropped first
_FORMATS = {".png": ("PNG", "image/png"), ".webp": ("WEBP", "image/webp"), ".gif": ("GIF", "image/gif")}


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    delay_s: float = 0.0  # the handler waits this long before answering (the `timeout` kind)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    target: str  # path and query as received
    user_agent: str
    client: str
    received_at: float  # time.monotonic(), to see which requests overlapped


@cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    array = getattr(skimage.data, name)()
    if array.dtype != np.uint8:
        array = (255 * (array.astype(np.float64) / max(float(array.max()), 1.0))).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def generated_picture(seed_text: str, size: tuple[int, int] | None = None) -> Image.Image:
    """A deterministic RGB picture for `seed_text`: a random crop of a real photo under a seeded colour field.

    The low-frequency colour field dominates perceptual hashes, so different seeds give different
    pictures even when they crop the same photograph.
    """
    rng = np.random.default_rng(_seed(seed_text))
    photo = _photo(PHOTOS[int(rng.integers(len(PHOTOS)))])
    if size is None:
        width = int(rng.integers(240, 641))
        height = int(round(width / float(rng.uniform(0.67, 1.5))))
    else:
        width, height = size
    ph, pw = photo.shape[:2]
    scale = float(rng.uniform(0.5, 1.0))
    cw, ch = max(8, int(pw * scale)), max(8, int(ph * scale))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = Image.fromarray(photo[y0:y0 + ch, x0:x0 + cw]).resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    field_small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    colour = Image.fromarray(field_small).resize((width, height), Image.Resampling.BICUBIC)
    return Image.blend(crop, colour, 0.55)


def encode_picture(picture: Image.Image, path: str) -> tuple[bytes, str]:
    """Encode by the path's extension (PNG, WebP, GIF; JPEG otherwise) → (bytes, content type)."""
    fmt, content_type = _FORMATS.get(Path(urlsplit(path).path).suffix.lower(), ("JPEG", "image/jpeg"))
    buffer = io.BytesIO()
    options: dict[str, Any] = _ENCODE_OPTIONS.get(fmt, {})
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue(), content_type


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header declares width × height pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def _strip_markers(path: str) -> str:
    return _SIZE.sub("", _DUP.sub("", _FAIL.sub("", path)))


class ImageHost:
    """Serve images on 127.0.0.1 (port 0 = a free port); a context manager: `with ImageHost(root) as host:`."""

    def __init__(self, root: str | Path | None = None, port: int = 0, timeout_sleep_s: float = 5.0,
                 latency_s: float = 0.0):
        self.root = Path(root).resolve() if root else None
        self.port = port
        self.timeout_sleep_s = timeout_sleep_s  # the `timeout` kind answers after this long (bounded; stop() cuts it)
        self.latency_s = latency_s  # added to every response (to make downloads take measurable time)
        self._requests: list[RequestRecord] = []
        self._generated_cache: OrderedDict[str, Response] = OrderedDict()  # generating a picture costs ~10 ms
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ImageHost:
        if self._server is not None:
            return self
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                host._serve(self, head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                host._serve(self, head=True)

            def log_message(self, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # img2dataset opens many connections at once; a short backlog drops SYNs

        self._stopping.clear()
        server = Server(("127.0.0.1", self.port), Handler)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="m3w-imagehost", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> ImageHost:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what was asked ----------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def requested_targets(self) -> list[str]:
        return [r.target for r in self.requests]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def url_for(self, original_url: str) -> str:
        """The URL this host serves for an original image URL (what `download.rewrite_to` produces)."""
        parts = urlsplit(original_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{self.base_url}/{netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")

    # -- what is served ----------------------------------------------------------------------------
    def response_for(self, target: str) -> Response:
        """The response for a request target (`/<host>/<path>?query`): pure, so tests can predict it."""
        path = unquote(urlsplit(target).path)
        failure = _FAIL.search(path)
        if failure:
            return self._failure(failure.group(1), target)
        served = self._file(path)
        if served is not None:
            return served
        return self._generated(target)

    def _file(self, path: str) -> Response | None:
        if self.root is None:
            return None
        candidate = (self.root / path.lstrip("/")).resolve()
        if self.root not in candidate.parents or not candidate.is_file():
            return None  # outside the root (path traversal) or absent: fall through to a generated image
        content_type = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        return Response(200, (("Content-Type", content_type),), candidate.read_bytes())

    def _generated(self, target: str) -> Response:
        with self._lock:
            cached = self._generated_cache.get(target)
            if cached is not None:
                self._generated_cache.move_to_end(target)
                return cached
        response = self._generate(target)
        with self._lock:
            if target not in self._generated_cache:
                self._generated_cache[target] = response
                self._cached_bytes += len(response.body)
            while self._cached_bytes > GENERATED_CACHE_BYTES:
                self._cached_bytes -= len(self._generated_cache.popitem(last=False)[1].body)
        return response

    def _generate(self, target: str) -> Response:
        parts = urlsplit(target)
        path = unquote(parts.path)
        dup = _DUP.search(path)
        size = _SIZE.search(path)
        seed = f"dup:{dup.group(1)}" if dup else _strip_markers(path) + ("?" + parts.query if parts.query else "")
        dims = tuple(min(max(1, int(v)), MAX_GENERATED_SIDE) for v in size.groups()) if size else None
        body, content_type = encode_picture(generated_picture(seed, dims), path)
        return Response(200, (("Content-Type", content_type),), body)

    def _failure(self, kind: str, target: str) -> Response:
        plain = (("Content-Type", "text/plain; charset=utf-8"),)
        if kind == "404":
            return Response(404, plain, b"not found\n")
        if kind == "500":
            return Response(500, plain, b"internal server error\n")
        good = self._generated(target.replace(f"/fail/{kind}/", "/", 1))
        if kind == "timeout":
            return Response(good.status, good.headers, good.body, delay_s=self.timeout_sleep_s)
        if kind == "corrupt":  # a real image cut short: the header parses, the pixels do not
            return Response(200, good.headers, good.body[: max(64, len(good.body) // 3)])
        if kind == "garbage":
            body = hashlib.sha256(target.encode()).digest() * 64
            return Response(200, (("Content-Type", "image/jpeg"),), body)
        if kind == "bomb":
            return Response(200, (("Content-Type", "image/png"),), bomb_png())
        if kind == "wrong_type":
            html = b"<!doctype html><html><head><title>Not an image</title></head><body><p>Hello</p></body></html>"
            return Response(200, (("Content-Type", "text/html; charset=utf-8"),), html)
        if kind == "noai":
            return Response(200, good.headers + (("X-Robots-Tag", "noai"),), good.body)
        if kind == "redirect":
            return Response(302, (("Location", target.replace("/fail/redirect/", "/", 1)),) + plain, b"moved\n")
        if kind == "redirect_metadata":
            return Response(302, (("Location", METADATA_URL),) + plain, b"moved\n")
        return Response(404, plain, f"unknown failure kind {kind!r}; known: {', '.join(FAILURE_KINDS)}\n".encode())

    def _serve(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        record = RequestRecord(handler.command, handler.path, handler.headers.get("User-Agent", ""),
                               handler.client_address[0], time.monotonic())
        with self._lock:
            self._requests.append(record)
        try:
            response = self.response_for(handler.path)
        except Exception as err:  # the host must never die on a strange path
            response = Response(500, (("Content-Type", "text/plain"),), f"host error: {err}\n".encode())
        delay = min(response.delay_s + self.latency_s, 60.0)
        if delay and self._stopping.wait(delay):
            return
        try:
            handler.send_response(response.status)
            for name, value in response.headers:
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            if not head:
                handler.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired first)


def serve_forever(root: str | None, port: int, timeout_sleep_s: float) -> None:
    """Run a host until interrupted (the `m3w imagehost` command)."""
    with ImageHost(root, port=port, timeout_sleep_s=timeout_sleep_s) as host:
        print(f"m3w image host serving on {host.base_url}" + (f" from {host.root}" if host.root else ""))
        print(f"use it with: --set download.rewrite_to={host.base_url} --set download.allow_loopback=true",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"stopped after {len(host.requests)} requests")
