"""Node-level image rules, applied to an image tag before anything is downloaded (OBELICS's rules).

They are cheap and remove what can never be a content image: inline `data:` URIs, non-HTTP(S)
schemes, formats other than the allowed ones, tags whose declared size says "icon", and URL
patterns that mark logos, buttons, tracking pixels and widgets. Patterns match whole words of the URL's
host and path (split at `/ _ - .`, digits and every other non-letter), so `pixel` drops `/pixel.gif` but
not a photo credited `..._pixelio-de.jpg`, and `icon` drops `social-icons_01.png` (a plural `s` is allowed).

`ImagePlaceRules` judge where a tag stands: inside navigation, a share bar, a related-story list, comments, ads
or a byline (by the tag name, ARIA role or a word of the class or id of an element around it, up to the
article's container), as the thumbnail of a link to another page whose headline or list item holds none of
the article's text or is a card with its own headline link (a teaser), or as the background of a graphic whose
labels are HTML drawn over it, a picture is not the article's. A side the URL declares (`-88x31.png`,
`?w=100`) counts as a declared size (`tiny_in_url`), and URLs that differ only in such sizes name one picture.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit

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


_SIZE_IN_NAME = re.compile(r"(?:^|[-_.])(\d{2,5})x(\d{2,5})$", re.I)
_SIZE_VALUE = re.compile(r"^\s*(\d{1,5})(?:\s*[x,]\s*(\d{1,5}))?\s*$", re.I)
_SIZE_TOKEN = re.compile(r"(?:(?<=[a-z0-9])[-_]|(?<![a-z0-9]))\d{1,5}x\d{1,5}(?![a-z0-9])", re.I)


def url_sides(url: str, size_params: frozenset[str]) -> list[int]:
    """The sides a picture's URL declares: a `WxH` that ends its file name (`badge-88x31.png`: the resized
    copies of WordPress and others; at least two digits a side, so `16x9` and `3x2` name no size) and the
    values of its size parameters (`?w=100`, `?resize=130,87`: an image CDN serves that size). Zeros (a CDN's
    "as is") are left out."""
    parts = urlsplit(url)
    sides: list[int] = []
    name = posixpath.basename(unquote(parts.path))
    match = _SIZE_IN_NAME.search(name.rsplit(".", 1)[0] if "." in name else name)
    if match:
        sides += [int(match.group(1)), int(match.group(2))]
    if parts.query and size_params:
        for key, value in parse_qsl(parts.query):
            if key.lower() in size_params and (match := _SIZE_VALUE.match(value)):
                sides += [int(number) for number in match.groups() if number]
    return [side for side in sides if side > 0]


def picture_key(url: str, size_params: frozenset[str]) -> str:
    """A picture's URL without what only sizes it (the `WxH` tokens of its path, its size parameters): two URLs
    with one key are one picture at two sizes (a page's copies of it for small and large screens)."""
    parts = urlsplit(url)
    query = sorted((key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
                   if key.lower() not in size_params)
    return f"{parts.scheme}://{parts.netloc.lower()}{_SIZE_TOKEN.sub('', parts.path)}?{query}"


def words(text: str) -> list[str]:
    """Lower-case runs of letters: the words a URL pattern is matched against."""
    return [w for w in _NOT_LETTERS.split(text.lower()) if w]


def url_words(url: str) -> list[str]:
    """Words of the host (without its top-level domain) and of the unquoted path."""
    parts = urlsplit(url)
    labels = (parts.hostname or "").split(".")[:-1]
    return words(" ".join(labels)) + words(unquote(parts.path))


_STATE_CLASS = re.compile(r"^(?:has|with|no|is)[-_]", re.I)
_NAME_PARTS = re.compile(r"[\W_]+")
_CODE = re.compile(r"[^\W\d_]\d+[^\W\d_]")  # a digit between letters: `b9ad`, `e1hr934v0`


def name_words(value: str) -> list[str]:
    """Words of a class or id value, camelCase split too (`relatedContent` → related, content), without what
    describes a state rather than a kind of element: state classes and BEM modifiers (`has-comments`,
    `no-sidebar`, `fig--has-shares`; `meta--avatar` keeps its `avatar`), and without generated codes, parts
    with a digit between letters (`b9ad` names no ad, `css-1i2y565` no words); a number at a part's end or
    start is no part of its word (`sidebar2`)."""
    parts = [part for name in value.split() for part in name.split("--") if part and not _STATE_CLASS.match(part)]
    return [word for part in _NAME_PARTS.split(_CAMEL.sub(r"\1 \2", " ".join(parts)))
            if part and not _CODE.search(part) for word in words(part)]


class WordPatterns:
    """Patterns of one or more words (`banner-ad`), found as consecutive URL words; the last may be plural. A
    one-word pattern ending in `*` (`logo*`) finds every word that begins with it (`logoprint`, `logotype`: words
    a page glues to it).

    Each pattern names what it finds: itself joined by '-' or, given `labels`, its label (a drop reason)."""

    def __init__(self, patterns: list[str], labels: list[str] | None = None):
        named = list(zip(patterns, labels or patterns, strict=True))
        self.prefixes = [(words(p)[0], label if labels else words(p)[0]) for p, label in named
                         if p.strip().endswith("*") and len(words(p)) == 1]
        labelled = [(tuple(words(p)), label) for p, label in named if not p.strip().endswith("*")]
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
            for prefix, label in self.prefixes:
                if token.startswith(prefix):
                    return label
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
    overlay_labels: NonNegativeInt


@dataclass(frozen=True)
class ImageNodeSettings(Section):
    """`image_nodes`: the node rules' formats, declared-size floor, URL length cap and URL word patterns, and
    where in the page a picture may stand (`place`)."""

    allowed_formats: list[str]
    allow_missing_extension: bool
    min_declared_side: NonNegativeInt
    url_sizes: bool
    url_size_params: list[str]
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
        self.url_sizes = settings.url_sizes
        self.size_params = frozenset(name.lower() for name in settings.url_size_params)
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
        if self.url_sizes and min(url_sides(url, self.size_params), default=self.min_side) < self.min_side:
            return Verdict.drop("tiny_in_url")
        return Verdict.ok()


PLACE_REASONS = ("navigation", "share_bar", "related", "comments", "ads", "byline")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_IMAGE_FILE = re.compile(r"\.(?:jpe?g|png|gif|webp|avif|bmp|tiff?|svg)$", re.I)


def link_target(href: str | None, page_url: str) -> tuple[str, str, str] | None:
    """The page a link opens (host, path, query), or None for a fragment, a script or a malformed URL."""
    href = (href or "").strip()
    if not href or href.startswith("#") or href.lower().startswith(("javascript:", "data:", "mailto:")):
        return None
    try:
        target = urlsplit(urljoin(page_url, href))
    except ValueError:
        return None
    return target.netloc, target.path, target.query


def links_elsewhere(href: str | None, page_url: str) -> bool:
    """A link to another page: not to a picture (a lightbox, a file page), a fragment or script, or this page."""
    target = link_target(href, page_url)
    if target is None or _IMAGE_FILE.search(unquote(target[1])):
        return False
    here = urlsplit(page_url)
    return target != (here.netloc, here.path, here.query)


def _caption_links_to(figure, link, page_url: str) -> bool:
    """Whether a figure's caption is nothing but links to the page `link` opens: a card's headline, not a
    caption (a credit links a part of its caption at most)."""
    caption = figure.find(".//figcaption")
    if caption is None:
        return False
    text = _SPACE.sub("", caption.text_content())
    target = link_target(link.get("href"), page_url)
    linked = sum(len(_SPACE.sub("", other.text_content())) for other in caption.iter("a")
                 if link_target(other.get("href"), page_url) == target)
    return bool(text) and linked == len(text)


def _headline_to(element, link, page_url: str) -> bool:
    """Whether `element` holds a link with text, other than `link`, to the page `link` opens: a card's headline
    beside its thumbnail."""
    target = link_target(link.get("href"), page_url)
    return any(other is not link and link_target(other.get("href"), page_url) == target
               and other.text_content().strip() for other in element.iter("a"))


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


_NAMES_CACHED = 50_000  # element names whose reason is remembered across pages, at most
_PLACED = re.compile(r"(?:^|[;\s])(?:top|left|right|bottom)\s*:", re.I)


def _labels_over(img) -> int:
    """How many elements beside the picture (its parent's other children) hold text and are placed by their inline
    style (`top`, `left`, `right`, `bottom`): the labels of a chart or map drawn over it."""
    parent = img.getparent()
    if parent is None:
        return 0
    return sum(1 for element in parent if element is not img and isinstance(element.tag, str)
               and _PLACED.search(element.get("style") or "") and element.text_content().strip())


class ImagePlaceRules:
    """Where an `<img>` stands, judged on the elements around it up to `stop` (the article's container, or the
    page's root): the first element whose tag name, ARIA role or a class/id word is listed under a reason of
    `image_nodes.place` gives the drop reason `in_<reason>`; one inside an element hidden from readers (`hidden`
    attribute, `aria-hidden="true"`, `display: none` or `visibility: hidden` in its style) is `hidden`; a
    picture inside a link to another page is a teaser
    (`teaser_link`) when the first element from that link outwards that holds page text (a headline, a list
    item) holds none of the article's text, is links (at least `teaser_link_share` of its text: a card of
    headlines) or holds a link with text to the same page (the card's headline beside its thumbnail; not where
    it holds a caption, whose credit may link the picture's source), unless a `<figure>` comes first or that
    text is a caption (trafilatura drops captions). A picture whose parent also holds at least `overlay_labels`
    elements of text placed by their inline style is the background of a graphic whose words are HTML drawn
    over it (a chart's labels): `overlaid`.

    Verdicts on an element are cached per page (`new_page`): a page's pictures share most of their ancestors;
    the verdict of an element's names (tag, role, class, id) is kept across pages.
    """

    def __init__(self, settings: ImagePlaceSettings):
        listed = [(word, f"in_{reason}") for reason in PLACE_REASONS for word in getattr(settings, reason)]
        self.patterns = WordPatterns([word for word, _ in listed], [reason for _, reason in listed])
        self.teasers = settings.teaser_links
        self.teaser_link_share = settings.teaser_link_share
        self.hidden = settings.hidden
        self.overlay_labels = settings.overlay_labels
        self._reasons: dict = {}  # element → reason, this page's
        self._by_names: dict[str, str | None] = {}  # "tag role class id" → reason, across pages (a site repeats them)

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
        key = " ".join(names)
        if key not in self._by_names:
            if len(self._by_names) >= _NAMES_CACHED:
                self._by_names.clear()
            self._by_names[key] = self.patterns.find(name_words(key)) if key else None
        reason = self._reasons[element] = self._by_names[key]
        return reason

    def judge(self, img, stop=None, page_url: str = "",
              kept_text: Callable[[Any], bool | None] = lambda _: None) -> Verdict:
        """`kept_text(element)`: whether the element holds article text (None: it holds no page text)."""
        teaser = None  # undecided until the link's first element with page text (or a figure) is met
        link = None
        for ancestor in img.iterancestors():
            if ancestor is stop:
                break
            reason = self.element_reason(ancestor)
            if reason is not None:
                return Verdict.drop(reason)
            if not self.teasers or teaser is False:
                continue
            if teaser is None and ancestor.tag == "a" and links_elsewhere(ancestor.get("href"), page_url):
                teaser, link = True, ancestor
            if teaser:
                kept = kept_text(ancestor)
                if ancestor.tag == "figure" and _caption_links_to(ancestor, link, page_url):
                    return Verdict.drop("teaser_link")
                if ancestor.tag in ("figure", "picture") or (kept is False and _has_caption(ancestor)):
                    teaser = False
                    continue
                if kept is False or (kept and (_link_share(ancestor) >= self.teaser_link_share
                                               or (_headline_to(ancestor, link, page_url)
                                                   and not _has_caption(ancestor)))):
                    return Verdict.drop("teaser_link")
                if kept:
                    teaser = False
        if self.overlay_labels and _labels_over(img) >= self.overlay_labels:
            return Verdict.drop("overlaid")
        return Verdict.ok()
