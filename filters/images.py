"""Checks on downloaded image bytes: decodable, allowed format, pixel-count cap, minimum side, aspect ratio.

The header is read before any pixel is decoded: format and size come from it, so a decompression
bomb (a few bytes declaring a gigantic canvas) is refused before a single pixel buffer is allocated,
and an image that would fail a size rule is never decoded at all. Only then are the pixels decoded,
which catches truncated and corrupt files. Pure functions of the bytes and the rules.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from filters.base import Verdict

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
class ImageRules:
    """The `image_filters` config section, validated once."""

    allowed_formats: frozenset[str]
    min_side: int
    min_aspect_ratio: float  # width / height
    max_aspect_ratio: float
    max_pixels: int

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> ImageRules:
        rules = cls(
            allowed_formats=frozenset(canonical_format(f) for f in section["allowed_formats"]),
            min_side=int(section["min_side"]),
            min_aspect_ratio=float(section["min_aspect_ratio"]),
            max_aspect_ratio=float(section["max_aspect_ratio"]),
            max_pixels=int(section["max_pixels"]),
        )
        if not 0 < rules.min_aspect_ratio <= rules.max_aspect_ratio:
            raise ValueError("image_filters: need 0 < min_aspect_ratio <= max_aspect_ratio")
        return rules


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


def check_image(data: bytes | None, rules: ImageRules, decode: bool = True) -> tuple[Verdict, Image.Image | None]:
    """Bytes → (verdict, picture when kept: decoded, or only opened when `decode` is false).

    Drop reasons: `empty_body`, `not_an_image` (text where an image was expected), `decode_error`,
    `format`, `too_many_pixels`, `min_side`, `aspect_ratio`. Scores: original_width,
    original_height, original_format (as far as the header told). With `decode=False` only the
    header is read: the caller decodes later and must treat a failure there as `decode_error`.
    """
    if not data:
        return Verdict.drop("empty_body"), None
    try:
        picture = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        return Verdict.drop("too_many_pixels"), None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return Verdict.drop("not_an_image" if looks_like_text(data) else "decode_error"), None
    width, height = picture.size
    fmt = _FORMAT_NAMES.get(picture.format or "", (picture.format or "unknown").lower())
    scores = {"original_width": width, "original_height": height, "original_format": fmt}
    if fmt not in rules.allowed_formats:
        return Verdict.drop("format", **scores), None
    if width * height > rules.max_pixels:
        return Verdict.drop("too_many_pixels", **scores), None
    if min(width, height) < rules.min_side:
        return Verdict.drop("min_side", **scores), None
    if not rules.min_aspect_ratio <= width / height <= rules.max_aspect_ratio:
        return Verdict.drop("aspect_ratio", **scores), None
    if not decode:
        return Verdict.ok(**scores), picture
    try:
        picture.load()  # the full decode: truncated and corrupt data fail here
    except Image.DecompressionBombError:
        return Verdict.drop("too_many_pixels", **scores), None
    except (OSError, ValueError, SyntaxError, struct.error):
        return Verdict.drop("decode_error", **scores), None
    return Verdict.ok(**scores), picture

