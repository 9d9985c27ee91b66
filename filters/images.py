"""Checks on downloaded image bytes: decodable, allowed format, pixel-count cap, minimum side, aspect ratio.

The header is read before any pixel is decoded: format and size come from it, so a decompression
bomb (a few bytes declaring a gigantic canvas) is refused before a single pixel buffer is allocated,
and an image that would fail a size rule is never decoded at all. Only then are the pixels decoded,
which catches truncated and corrupt files. A pure function of the bytes and the settings.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from filters.base import ImageFilter, ImageItem, Verdict
from pipeline.config import Section, Share

# We enforce our own pixel cap from the header (below); Pillow's warning for large images is noise here.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Pillow format names → the names users write in the config (`jpg` and `jpeg` are the same thing).
_FORMAT_NAMES = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                 "TIFF": "tiff", "ICO": "ico", "AVIF": "avif", "HEIF": "heif"}
_TEXT_STARTS = (b"<", b"{", b"[")


def canonical_format(name: str) -> str:
    name = name.strip().lower().lstrip(".")
    return "jpeg" if name in ("jpg", "jpe", "jfif") else name


@dataclass(frozen=True)
class NsfwSettings(Section):
    """`image_filters.nsfw`: the NSFW model, its threshold and how it runs (filters/nsfw.py)."""

    enabled: bool
    threshold: Share
    model_path: str | None
    threads: PositiveInt
    batch_size: PositiveInt


@dataclass(frozen=True)
class ImageFilterSettings(Section):
    """`image_filters`: the checks on downloaded bytes (units: original pixels) and the NSFW subsection."""

    allowed_formats: list[str]
    min_side: NonNegativeInt
    min_aspect_ratio: PositiveFloat  # width / height
    max_aspect_ratio: PositiveFloat
    max_pixels: PositiveInt
    nsfw: NsfwSettings


def looks_like_text(data: bytes) -> bool:
    """HTML, JSON, XML or plain text served where an image was expected (SVG counts: it is not a raster)."""
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(_TEXT_STARTS):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


class ImageRules(ImageFilter):
    """Checks on an item's fetched `data`. Drop reasons: `empty_body`, `not_an_image` (text where an image
    was expected), `decode_error`, `format`, `too_many_pixels`, `min_side`, `aspect_ratio`. Scores:
    original_width, original_height, original_format (as far as the header told).

    With `decode` (the default) a kept item's `picture` is fully decoded, ready for the caller; without it
    only the header is read: the caller decodes later and must treat a failure there as `decode_error`.
    """

    def __init__(self, settings: ImageFilterSettings, decode: bool = True):
        super().__init__()
        if not 0 < settings.min_aspect_ratio <= settings.max_aspect_ratio:
            raise ValueError("image_filters: need 0 < min_aspect_ratio <= max_aspect_ratio")
        self.allowed_formats = frozenset(canonical_format(f) for f in settings.allowed_formats)
        self.min_side = settings.min_side
        self.min_aspect_ratio = settings.min_aspect_ratio
        self.max_aspect_ratio = settings.max_aspect_ratio
        self.max_pixels = settings.max_pixels
        self.decode = decode

    def filter(self, item: ImageItem) -> Verdict:
        data = item.data
        if not data:
            return Verdict.drop("empty_body")
        try:
            picture = item.picture
        except Image.DecompressionBombError:
            return Verdict.drop("too_many_pixels")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return Verdict.drop("not_an_image" if looks_like_text(data) else "decode_error")
        width, height = picture.size
        fmt = _FORMAT_NAMES.get(picture.format or "", (picture.format or "unknown").lower())
        scores = {"original_width": width, "original_height": height, "original_format": fmt}
        if fmt not in self.allowed_formats:
            return Verdict.drop("format", **scores)
        if width * height > self.max_pixels:
            return Verdict.drop("too_many_pixels", **scores)
        if min(width, height) < self.min_side:
            return Verdict.drop("min_side", **scores)
        if not self.min_aspect_ratio <= width / height <= self.max_aspect_ratio:
            return Verdict.drop("aspect_ratio", **scores)
        if not self.decode:
            return Verdict.ok(**scores)
        try:
            picture.load()  # the full decode, of the item's own picture: truncated and corrupt data fail here
        except Image.DecompressionBombError:
            return Verdict.drop("too_many_pixels", **scores)
        except (OSError, ValueError, SyntaxError, struct.error):
            return Verdict.drop("decode_error", **scores)
        return Verdict.ok(**scores)
