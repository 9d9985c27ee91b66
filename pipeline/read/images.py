"""The pictures a crawl holds: image records of WARC/ARC files, kept for the images stage.

Crawlers that fetch page requisites (GNU wget `--page-requisites`, Browsertrix, Heritrix) and web archives
store each page's pictures as records beside the page. The read stage keeps them instead of dropping them:
an HTTP 200 response with an `image/*` type (or a generic or missing type whose bytes sniff as an image), a
WARC `resource` record of an image, and a `revisit` record of an image response. Their bytes go into the
content-addressed image store (`pipeline.images.store`) as they are read, so only the small `ArchivedImage`
and `ArchivedRevisit` references travel on; `pipeline.images.archive` indexes them by normalised URL and the
images stage resolves the documents' images against that index before it downloads anything (docs/read.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from pipeline.images.store import ImageStore

ARCHIVED = "archived"  # the read stage's tagged output of image records
IMAGES = "images"  # the read stage's unit for image records (`records` counts every other record)

# Types under which servers send pictures without naming them: the bytes decide (`sniff_image`).
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/x-octet-stream",
                           "application/unknown", "unknown/unknown", "application/binary",
                           "application/force-download", "application/download"})


def is_image_type(mime: str) -> bool:
    return mime.startswith("image/")


def sniff_image(head: bytes) -> str | None:
    """The picture format the first bytes announce (jpeg, png, gif, webp, avif/heic, tiff, bmp), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "avif" if head[8:11] == b"avi" else "heic"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 108, 124):
        return "bmp"
    return None


def payload_digest(declared: str, payload: bytes) -> str:
    """The key revisits find their original by: the crawler's `WARC-Payload-Digest` as `algorithm:BASE32`
    (hex values converted, so both spellings of one digest match), else the sha1 of `payload` in that form."""
    algorithm, _, value = declared.strip().partition(":")
    if value:
        value = value.strip()
        algorithm = algorithm.strip().lower()
        try:
            raw = bytes.fromhex(value) if _is_hex(value, algorithm) else base64.b32decode(value.upper())
            return f"{algorithm}:{base64.b32encode(raw).decode()}"
        except (ValueError, binascii.Error):
            return f"{algorithm}:{value}"
    return "sha1:" + base64.b32encode(hashlib.sha1(payload).digest()).decode()


def _is_hex(value: str, algorithm: str) -> bool:
    """Whether `value` is the hex spelling of an `algorithm` digest (a sha1 is 40 hex or 32 base32 characters)."""
    try:
        size = hashlib.new(algorithm.replace("-", "")).digest_size
    except ValueError:
        return False
    return len(value) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in value)


@dataclass(frozen=True)
class ArchivedImage:
    """An image record whose bytes (as crawled, content encoding removed) are in the image store."""

    url: str
    sha256: str  # of the bytes, in the image store
    digest: str  # payload digest (`payload_digest`): what revisits of it name
    content_type: str
    robots: str  # the response's X-Robots-Tag values, one per line
    date: str
    source: str  # the crawl file
    offset: int


@dataclass(frozen=True)
class ArchivedRevisit:
    """A `revisit` record of an image response: the same picture as an earlier record, found by `digest` (the
    identical-payload profile) or, without one, by the URL it refers to (`refers_to`)."""

    url: str
    digest: str
    refers_to: str  # WARC-Refers-To-Target-URI ("" when not given)
    robots: str  # the revisit response's own X-Robots-Tag values
    date: str
    source: str
    offset: int


@dataclass(frozen=True)
class KeepImages:
    """How the read stage keeps image records: their bytes into `store`, at most `max_bytes` each
    (`download.max_bytes`, the cap a download has too; larger ones are dropped as `too_large`)."""

    store: ImageStore
    max_bytes: int
