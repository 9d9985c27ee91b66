"""Node-level image rules, applied to an image tag before anything is downloaded (OBELICS's rules).

They are cheap and remove what can never be a content image: inline `data:` URIs, non-HTTP(S)
schemes, formats other than the allowed ones, tags whose declared size says "icon", and URL
patterns that mark logos, buttons, tracking pixels and widgets. Patterns match whole words of the URL's
host and path (split at `/ _ - .`, digits and every other non-letter), so `pixel` drops `/pixel.gif` but
not a photo credited `..._pixelio-de.jpg`, and `icon` drops `social-icons_01.png` (a plural `s` is allowed).

`ImagePlaceRules` judge where a tag stands: inside navigation, a share bar, a related-story list, comments, ads
or a byline (by the tag name, ARIA role or a word of the class or id of an element around it, up to the
article's container), or as the thumbnail of a link to another page whose headline or list item holds none of
the article's text (a teaser), a picture is not the article's.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from pydantic import NonNegativeInt, PositiveInt

from filters.base import ImageFilter, ImageItem, Verdict
from pipeline.config import Section, Share

_NOT_LETTERS = re.compile(r"[\W\d_]+")
_CAMEL = re.compile(r"([a-z])([A-Z])")
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


_STATE_CLASS = re.compile(r"^(?:has|with|no|is)[-_]", re.I)


def name_words(value: str) -> list[str]:
    """Words of a class or id value, camelCase split too (`relatedContent` → related, content), without what
    describes a state rather than a kind of element: state classes and BEM modifiers (`has-comments`,
    `no-sidebar`, `fig--has-shares`; `meta--avatar` keeps its `avatar`)."""
    parts = [part for name in value.split() for part in name.split("--") if part and not _STATE_CLASS.match(part)]
    return words(_CAMEL.sub(r"\1 \2", " ".join(parts)))


class WordPatterns:
    """Patterns of one or more words (`banner-ad`), found as consecutive URL words; the last may be plural.

    Each pattern names what it finds: itself joined by '-' or, given `labels`, its label (a drop reason)."""

    def __init__(self, patterns: list[str], labels: list[str] | None = None):
        labelled = [(tuple(words(p)), label) for p, label in zip(patterns, labels or patterns, strict=True)]
        self.patterns = [(pattern, label if labels else "-".join(pattern)) for pattern, label in labelled if pattern]
        self.single: dict[str, str] = {}  # a one-word pattern and its plural → what it names
        for pattern, label in self.patterns:
            if len(pattern) == 1:
                self.single.setdefault(pattern[0] + "s", label)
                self.single.setdefault(pattern[0], label)
        self.multi = [(p, label) for p, label in self.patterns if len(p) > 1]

    def find(self, tokens: list[str]) -> str | None:
        """What the first pattern found in `tokens` names, or None."""
        for token in tokens:
            if token in self.single:
                return self.single[token]
        for pattern, label in self.multi:
            head, last = list(pattern[:-1]), pattern[-1]
            for i in range(len(tokens) - len(pattern) + 1):
                end = i + len(pattern) - 1
                if tokens[i:end] == head and tokens[end] in (last, last + "s"):
                    return label
        return None


@dataclass(frozen=True)
class ImagePlaceSettings(Section):
    """`image_nodes.place`: the words (tag names, ARIA roles, words of a class or id) of the elements whose
    pictures are not the article's, by reason; the teaser rule's switch."""

    navigation: list[str]
    share_bar: list[str]
    related: list[str]
    comments: list[str]
    ads: list[str]
    byline: list[str]
    hidden: bool
    teaser_links: bool
    teaser_link_share: Share


@dataclass(frozen=True)
class ImageNodeSettings(Section):
    """`image_nodes`: the node rules' formats, declared-size floor, URL length cap and URL word patterns, and
    where in the page a picture may stand (`place`)."""

    allowed_formats: list[str]
    allow_missing_extension: bool
    min_declared_side: NonNegativeInt
    max_url_chars: PositiveInt
    blocked_url_patterns: list[str]
    place: ImagePlaceSettings


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


PLACE_REASONS = ("navigation", "share_bar", "related", "comments", "ads", "byline")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_IMAGE_FILE = re.compile(r"\.(?:jpe?g|png|gif|webp|avif|bmp|tiff?|svg)$", re.I)


def links_elsewhere(href: str | None, page_url: str) -> bool:
    """A link to another page: not to a picture (a lightbox, a file page), a fragment or script, or this page."""
    href = (href or "").strip()
    if not href or href.startswith("#") or href.lower().startswith(("javascript:", "data:", "mailto:")):
        return False
    try:
        target = urlsplit(urljoin(page_url, href))
    except ValueError:
        return False
    if _IMAGE_FILE.search(unquote(target.path)):
        return False
    here = urlsplit(page_url)
    return (target.netloc, target.path, target.query) != (here.netloc, here.path, here.query)


_SPACE = re.compile(r"\s+")


def _link_share(element) -> float:
    """The share of an element's text (non-space characters) that is the text of its links."""
    def length(node) -> int:
        return len(_SPACE.sub("", node.text_content()))

    total = length(element)
    return sum(length(link) for link in element.iter("a")) / total if total else 0.0


def _has_caption(element) -> bool:
    """A `<figcaption>`, or an element whose class names a caption, at or below `element`."""
    return any(node.tag == "figcaption" or "caption" in (node.get("class") or "").lower()
               for node in element.iter() if isinstance(node.tag, str))


class ImagePlaceRules:
    """Where an `<img>` stands, judged on the elements around it up to `stop` (the article's container, or the
    page's root): the first element whose tag name, ARIA role or a class/id word is listed under a reason of
    `image_nodes.place` gives the drop reason `in_<reason>`; one inside an element hidden from readers (`hidden`
    attribute, `aria-hidden="true"`, `display: none` or `visibility: hidden` in its style) is `hidden`; a
    picture inside a link to another page is a teaser
    (`teaser_link`) when the first element from that link outwards that holds page text (a headline, a list
    item) holds none of the article's text or is links (at least `teaser_link_share` of its text: a card of
    headlines), unless a `<figure>` comes first or that text is a caption (trafilatura drops captions).

    Verdicts on an element are cached per page (`new_page`): a page's pictures share most of their ancestors.
    """

    def __init__(self, settings: ImagePlaceSettings):
        listed = [(word, f"in_{reason}") for reason in PLACE_REASONS for word in getattr(settings, reason)]
        self.patterns = WordPatterns([word for word, _ in listed], [reason for _, reason in listed])
        self.teasers = settings.teaser_links
        self.teaser_link_share = settings.teaser_link_share
        self.hidden = settings.hidden
        self._reasons: dict = {}

    def new_page(self) -> None:
        self._reasons = {}

    def element_reason(self, element) -> str | None:
        """The drop reason an element's own name, role, class or id gives, or None (cached)."""
        if element in self._reasons:
            return self._reasons[element]
        if self.hidden and (element.get("hidden") is not None or element.get("aria-hidden") == "true"
                            or _HIDDEN_STYLE.search(element.get("style") or "")):
            self._reasons[element] = "hidden"
            return "hidden"
        names = [element.tag] if isinstance(element.tag, str) else []
        for attr in ("role", "class", "id"):
            value = element.get(attr)
            if value:
                names.append(value)
        reason = self.patterns.find(name_words(" ".join(names))) if names else None
        self._reasons[element] = reason
        return reason

    def judge(self, img, stop=None, page_url: str = "",
              kept_text: Callable[[Any], bool | None] = lambda _: None) -> Verdict:
        """`kept_text(element)`: whether the element holds article text (None: it holds no page text)."""
        teaser = None  # undecided until the link's first element with page text (or a figure) is met
        for ancestor in img.iterancestors():
            if ancestor is stop:
                break
            reason = self.element_reason(ancestor)
            if reason is not None:
                return Verdict.drop(reason)
            if not self.teasers or teaser is False:
                continue
            if teaser is None and ancestor.tag == "a" and links_elsewhere(ancestor.get("href"), page_url):
                teaser = True
            if teaser:
                kept = kept_text(ancestor)
                if ancestor.tag in ("figure", "picture") or (kept is False and _has_caption(ancestor)):
                    teaser = False
                    continue
                if kept is False or (kept and _link_share(ancestor) >= self.teaser_link_share):
                    return Verdict.drop("teaser_link")
                if kept:
                    teaser = False
        return Verdict.ok()
