"""Node-level image rules, applied to an image tag before anything is downloaded (OBELICS's rules).

They are cheap and remove what can never be a content image: inline `data:` URIs, non-HTTP(S)
schemes, formats other than the allowed ones, tags whose declared size says "icon", and URL
patterns that mark logos, buttons, tracking pixels and widgets. Patterns match whole words of the URL's
host and path (split at `/ _ - .`, digits and every other non-letter), so `pixel` drops `/pixel.gif` but
not a photo credited `..._pixelio-de.jpg`, and `icon` drops `social-icons_01.png` (a plural `s` is allowed).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import NonNegativeInt, PositiveInt

from filters.base import ImageFilter, ImageItem, Verdict
from pipeline.config import Section

_NOT_LETTERS = re.compile(r"[\W\d_]+")
_EXTENSION = re.compile(r"\.([a-z0-9]{2,5})$")
_KNOWN_IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "webp", "gif", "svg", "bmp", "ico", "tif", "tiff", "avif", "heic",
                           "heif", "jfif", "apng"}


def url_extension(url: str) -> str:
    """Lower-case extension of the URL path ('' when the path has none we recognise as a file type)."""
    path = unquote(urlsplit(url).path).lower()
    match = _EXTENSION.search(posixpath.basename(path))
    return match.group(1) if match else ""


def _declared_side(value: Any) -> int | None:
    """An HTML width/height attribute as pixels ('300', '300px'); None for '100%', 'auto' or junk."""
    if value is None:
        return None
    text = str(value).strip().lower().removesuffix("px").strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number >= 0 else None


def words(text: str) -> list[str]:
    """Lower-case runs of letters: the words a URL pattern is matched against."""
    return [w for w in _NOT_LETTERS.split(text.lower()) if w]


def url_words(url: str) -> list[str]:
    """Words of the host (without its top-level domain) and of the unquoted path."""
    parts = urlsplit(url)
    labels = (parts.hostname or "").split(".")[:-1]
    return words(" ".join(labels)) + words(unquote(parts.path))


class WordPatterns:
    """Patterns of one or more words (`banner-ad`), found as consecutive URL words; the last may be plural."""

    def __init__(self, patterns: list[str]):
        self.patterns = [tuple(words(p)) for p in patterns if words(p)]
        self.single: dict[str, str] = {}  # a one-word pattern and its plural → the pattern
        for pattern in self.patterns:
            if len(pattern) == 1:
                self.single.setdefault(pattern[0] + "s", pattern[0])
                self.single[pattern[0]] = pattern[0]
        self.multi = [p for p in self.patterns if len(p) > 1]

    def find(self, tokens: list[str]) -> str | None:
        """The first pattern found in `tokens`, joined by '-', or None."""
        for token in tokens:
            if token in self.single:
                return self.single[token]
        for pattern in self.multi:
            head, last = list(pattern[:-1]), pattern[-1]
            for i in range(len(tokens) - len(pattern) + 1):
                end = i + len(pattern) - 1
                if tokens[i:end] == head and tokens[end] in (last, last + "s"):
                    return "-".join(pattern)
        return None


@dataclass(frozen=True)
class ImageNodeSettings(Section):
    """`image_nodes`: the node rules' formats, declared-size floor, URL length cap and URL word patterns."""

    allowed_formats: list[str]
    allow_missing_extension: bool
    min_declared_side: NonNegativeInt
    max_url_chars: PositiveInt
    blocked_url_patterns: list[str]


class ImageNodeRules(ImageFilter):
    """All node-level rules in one pass, on an item's `url`, `declared_width` and `declared_height`; the first
    failing rule names the reason."""

    def __init__(self, settings: ImageNodeSettings):
        super().__init__()
        self.allowed = {f.lower() for f in settings.allowed_formats}
        self.allow_missing = settings.allow_missing_extension
        self.min_side = settings.min_declared_side
        self.max_url_chars = settings.max_url_chars
        self.blocked = WordPatterns(list(settings.blocked_url_patterns))

    def filter(self, item: ImageItem) -> Verdict:
        url = item.url
        if not url:
            return Verdict.drop("no_src")
        lowered = url.lower()
        if lowered.startswith("data:"):
            return Verdict.drop("data_uri")
        if not lowered.startswith(("http://", "https://")):
            return Verdict.drop("bad_scheme")
        if len(url) > self.max_url_chars:
            return Verdict.drop("url_too_long")
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not host:
            return Verdict.drop("bad_url")
        extension = url_extension(url)
        if extension in _KNOWN_IMAGE_EXTENSIONS and extension not in self.allowed:
            return Verdict.drop("bad_format")
        if extension and extension not in _KNOWN_IMAGE_EXTENSIONS and not self.allow_missing:
            return Verdict.drop("bad_format")
        if not extension and not self.allow_missing:
            return Verdict.drop("bad_format")
        declared = (_declared_side(item.declared_width), _declared_side(item.declared_height))
        sides = [s for s in declared if s is not None]
        if sides and min(sides) < self.min_side:
            return Verdict.drop("tiny_declared")
        if self.blocked.find(url_words(url)) is not None:
            return Verdict.drop("url_pattern")
        return Verdict.ok()
