"""Finding each `<img>`'s real URL and context in the raw HTML, before trafilatura sees the page.

trafilatura keeps an image only if its `src`/`data-src` looks like an image file and does not read
`srcset`, `<picture>` or `<base href>`. So m3w resolves every image itself (best `srcset` candidate,
`<picture><source>`, lazy-load attributes, `<base>` and the page URL), records alt text, caption and
declared size, and swaps the tag's source for a numbered marker URL that trafilatura accepts. The
markers in trafilatura's output then say exactly which image stands where in the main content.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import urljoin, urlsplit

MARKER_PREFIX = "https://m3w.invalid/img/"
_MARKER = re.compile(r"^https://m3w\.invalid/img/(\d+)\.jpg$")

# Lazy-loading libraries put the real URL in one of these (lazysizes, WordPress, Jetpack, ...).
LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url", "data-hi-res-src",
                  "data-full-src", "data-orig-src", "data-actualsrc")
LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_SRCSET_URL = re.compile(r"[\s,]*(\S+)")
_PLACEHOLDER = re.compile(r"(^data:|blank\.gif|spacer\.gif|placeholder|transparent\.(gif|png)|lazy[-_]?load)", re.I)


@dataclass
class ImageCandidate:
    url: str  # absolute, or the raw value when it cannot be resolved (the node rules then drop it)
    alt: str = ""
    title: str = ""
    caption: str = ""
    width: str | None = None
    height: str | None = None
    others: list[str] = field(default_factory=list)  # the tag's other candidate URLs, best first (archive look-up)


def parse_srcset(value: str) -> list[tuple[str, float]]:
    """srcset → [(url, weight)] following the HTML spec's tokenizer (URLs may contain commas).

    The weight is the width (`w`) or density (`x`) descriptor; a candidate without one counts as 1x.
    """
    out: list[tuple[str, float]] = []
    position, length = 0, len(value)
    while position < length:
        match = _SRCSET_URL.match(value, position)  # separators skipped, then the URL: a run of non-spaces
        if match is None:
            break
        url, position = match.group(1), match.end()
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            comma = value.find(",", position)
            end = length if comma < 0 else comma
            descriptor = value[position:end].strip().lower()
            position = end
        weight = 1.0
        if descriptor[-1:] in ("w", "x"):
            try:
                weight = float(descriptor.split()[0][:-1])
            except ValueError:
                weight = 1.0
        if url:
            out.append((url, weight))
    return out


def best_srcset(value: str | None) -> str | None:
    candidates = parse_srcset(value or "")
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[1])[0]


def is_placeholder(value: str) -> bool:
    """An inline image or a lazy-loading stand-in (`blank.gif`, `placeholder.png`), not the picture itself."""
    return _PLACEHOLDER.search(value.strip()) is not None


def _usable(value: str | None) -> bool:
    return bool(value and value.strip() and not is_placeholder(value))


# (type, srcset) of each <source> of a <picture>, in order, captured before the <source> tags are removed.
PictureSources = list[tuple[str, str | None]]


def raw_source(attrs: Mapping[str, str], picture: PictureSources = ()) -> str | None:
    """The best raw URL of an <img>: <picture><source> > srcset > lazy attrs > src (placeholders skipped)."""
    for mime, srcset in picture:
        if mime and mime.lower() not in ("image/jpeg", "image/png", "image/webp", "image/jpg"):
            continue
        best = best_srcset(srcset)
        if _usable(best):
            return best
    for attr in ("srcset",) + LAZY_SRCSET_ATTRS:
        best = best_srcset(attrs.get(attr))
        if _usable(best):
            return best
    for attr in LAZY_SRC_ATTRS + ("src",):
        value = attrs.get(attr)
        if _usable(value):
            return value.strip()
    src = attrs.get("src")
    return src.strip() if src else None


def other_sources(attrs: Mapping[str, str], picture: PictureSources = (), srcset_limit: int = 8) -> list[str]:
    """Every usable raw URL of an <img> in `raw_source`'s order: the `<picture>` sources' and srcset candidates
    by weight (the first `srcset_limit` of them), then the lazy-loading attributes and `src`, always. Where a
    crawl holds a picture under a URL other than the chosen one (crawlers fetch `src` far more often than the
    largest srcset variant), the images stage takes it from there."""
    variants: list[str] = []
    srcsets = [srcset for _, srcset in picture] + [attrs.get(attr) for attr in ("srcset",) + LAZY_SRCSET_ATTRS]
    for srcset in srcsets:
        variants += [url for url, _ in sorted(parse_srcset(srcset or ""), key=lambda c: -c[1])]
    usable = [url.strip() for url in variants if _usable(url)][:srcset_limit]
    usable += [value.strip() for value in (attrs.get(attr) for attr in LAZY_SRC_ATTRS + ("src",)) if _usable(value)]
    return list(dict.fromkeys(usable))


def style_side(style: str | None, side: str) -> str | None:
    """A width or height the tag's inline style sets in pixels (`width: 32px`), as the attribute would say it."""
    match = re.search(rf"(?:^|[;\s]){side}\s*:\s*(\d+(?:\.\d+)?)px", style or "", re.I)
    return match.group(1) if match else None


_ONE_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)px\s*$", re.I)


def sizes_width(sizes: str | None) -> str | None:
    """The width a `sizes` attribute of one length in pixels gives (`sizes="40px"`: the picture is shown 40 px
    wide whatever the screen, and the browser fetches the smallest `srcset` candidate that fills it); None for a
    list with media conditions or a length in other units (`100vw`)."""
    match = _ONE_LENGTH.match(sizes or "")
    return match.group(1) if match else None


def _caption(img) -> str:
    for ancestor in img.iterancestors():
        if ancestor.tag == "figure":
            caption = ancestor.find(".//figcaption")
            if caption is not None:
                return " ".join(caption.text_content().split())
            return ""
        if ancestor.tag in ("body", "article", "main"):
            return ""
    return ""


def base_url(tree, page_url: str) -> str:
    base = tree.find(".//base[@href]")
    if base is not None:
        href = (base.get("href") or "").strip()
        if href:
            return urljoin(page_url, href)
    return page_url


def absolutize(raw: str | None, base: str) -> str:
    if not raw:
        return ""
    raw = raw.strip()
    if raw.lower().startswith("data:"):
        return raw
    try:
        joined = urljoin(base, raw)
        _ = urlsplit(joined).hostname  # raises on a malformed netloc
    except ValueError:
        return raw
    return joined


class MarkedImages(Sequence[ImageCandidate]):
    """Every <img> of a page in document order, its source swapped for a numbered marker.

    Resolving an image (srcset, lazy attributes, URL joining, caption) costs more than marking it, and
    trafilatura keeps only a few images of a page, so each is resolved only when asked for, from the
    attributes captured before the swap.

    A lazy-loading picture and its `<noscript>` copy are one picture: the `<img>` of a `<noscript>` and the
    visible tags that stand in for it (all those of a parent holding no text, else the one of the noscript's
    previous or next element) are listed in `copy_of`, each pointing to the first visible one, whose source is
    the noscript's (the visible tags name a blurred preview, or nothing until a script runs).
    """

    def __init__(self, tree, page_url: str):
        self.tree = tree
        self.page_url = page_url
        self.elements = list(tree.iter("img"))
        self._attrs: list[dict[str, str]] = []
        self._pictures: dict[int, PictureSources] = {}
        self._resolved: dict[int, ImageCandidate] = {}
        self._base: str | None = None
        self.copy_of: dict[int, int] = {}  # a noscript copy or another stand-in → the tag that is the picture
        self._noscript_of: dict[int, int] = {}  # that tag → its noscript copy (whose source is the picture's)
        position = {id(img): index for index, img in enumerate(self.elements)}
        self._pair_noscript_copies(tree, position)
        for picture in tree.iter("picture"):
            sources = [(s.get("type") or "", s.get("srcset") or s.get("data-srcset")) for s in picture.iter("source")]
            for img in picture.iter("img"):
                self._pictures.setdefault(position[id(img)], sources)
        for index, img in enumerate(self.elements):
            attrs = dict(img.attrib)
            self._attrs.append(attrs)
            for attr in attrs:
                if attr in ("srcset", "src", "sizes") or attr.startswith("data-"):
                    del img.attrib[attr]
            img.set("src", f"{MARKER_PREFIX}{index}.jpg")
        for source in list(tree.iter("source")):
            if any(a.tag == "picture" for a in source.iterancestors()):
                source.drop_tag()  # keep the nested <img> that libxml2 put inside it

    def _pair_noscript_copies(self, tree, position: dict[int, int]) -> None:
        for noscript in tree.iter("noscript"):
            inner = list(noscript.iter("img"))
            if len(inner) != 1:
                continue
            shown = sorted(position[id(img)] for img in _stand_ins(noscript))
            if not shown or any(i in self.copy_of or i in self._noscript_of for i in shown):
                continue
            self._noscript_of[shown[0]] = position[id(inner[0])]
            for index in shown[1:] + [position[id(inner[0])]]:
                self.copy_of[index] = shown[0]

    def _raw_source(self, index: int) -> str | None:
        """The image's best raw URL; for a lazy <img> with a <noscript> copy, the copy's."""
        copy = self._noscript_of.get(index)
        if copy is not None:
            theirs = raw_source(self._attrs[copy], self._pictures.get(copy, []))
            if _usable(theirs):
                return theirs
        return raw_source(self._attrs[index], self._pictures.get(index, []))

    def __len__(self) -> int:
        return len(self.elements)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if index not in self._resolved:
            if self._base is None:
                self._base = base_url(self.tree, self.page_url)
            attrs, img = self._attrs[index], self.elements[index]
            self._resolved[index] = ImageCandidate(
                url=absolutize(self._raw_source(index), self._base),
                alt=" ".join((attrs.get("alt") or "").split()),
                title=" ".join((attrs.get("title") or "").split()),
                caption=_caption(img),
                width=attrs.get("width") or style_side(attrs.get("style"), "width") or sizes_width(attrs.get("sizes")),
                height=attrs.get("height") or style_side(attrs.get("style"), "height"),
                others=[absolutize(url, self._base) for url in other_sources(attrs, self._pictures.get(index, []))],
            )
        return self._resolved[index]


def _visible_images(element, top) -> list:
    """The <img> tags under `element` that are not inside a <noscript> below `top`."""
    found = []
    for img in element.iter("img"):
        hidden = False
        for ancestor in img.iterancestors():
            if ancestor is top:
                break
            hidden = hidden or ancestor.tag == "noscript"
        if not hidden:
            found.append(img)
    return found


def _stand_ins(noscript) -> list:
    """The visible <img> tags that stand in for a <noscript> picture: every one of its parent when the parent
    holds no text, else the one <img> of the noscript's previous (or else next) element."""
    parent = noscript.getparent()
    if parent is None:
        return []
    if not any(text.strip() for text in parent.itertext()):
        shown = _visible_images(parent, parent.getparent())
        if shown:
            return shown
    for step in (lambda e: e.getprevious(), lambda e: e.getnext()):
        sibling = step(noscript)
        while sibling is not None and sibling.tag == "source":
            sibling = step(sibling)
        if sibling is None or sibling.tag == "noscript":
            continue
        shown = [sibling] if sibling.tag == "img" else _visible_images(sibling, noscript.getparent())
        if len(shown) == 1:
            return shown
    return []


def mark_images(tree, page_url: str) -> MarkedImages:
    """Replace every <img>'s source attributes with a numbered marker (in place); resolve them on demand."""
    return MarkedImages(tree, page_url)


def marker_index(src: str | None) -> int | None:
    match = _MARKER.match(src or "")
    return int(match.group(1)) if match else None


@cache
def _parser():
    """trafilatura's HTML parser settings, with lxml's element classes chosen in C.

    lxml.html's parser picks each element's Python class by calling back into Python (a form, an input...) every
    time an element is touched; trafilatura uses none of those classes, and that callback took a seventh of
    trafilatura's time. The trees are the same (`tests/test_extract_content.py`)."""
    from lxml import etree, html

    parser = html.HTMLParser(collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True,
                             remove_pis=True)  # as trafilatura.utils.HTML_PARSER
    parser.set_element_class_lookup(etree.ElementDefaultClassLookup(
        element=html.HtmlElement, comment=html.HtmlComment, pi=html.HtmlProcessingInstruction,
        entity=html.HtmlEntity))
    return parser


def parse_html(text: str):
    """lxml tree of a page, tolerant of junk; None when nothing parseable is left.

    trafilatura's own loader (`trafilatura.utils.load_html`: its parser drops comments and processing
    instructions, repairs a few known faults), step by step, with the faster parser above: trafilatura extracts
    from exactly the tree it would have built itself, and less text is lost where a comment splits a
    paragraph's text from its tail.
    """
    from lxml.html import fromstring
    from trafilatura.utils import is_dubious_html, repair_faulty_html

    beginning = text[:50].lower()
    text = repair_faulty_html(text, beginning)
    tree, as_bytes = None, False
    try:
        tree = fromstring(text, parser=_parser())
    except ValueError:  # a Unicode string with an encoding declaration: parse its bytes
        as_bytes = True
    except Exception:
        tree = None
    if as_bytes or tree is None or len(tree) < 1:
        try:
            tree = fromstring(text.encode("utf8", "surrogatepass"), parser=_parser())
        except Exception:
            tree = None
    if tree is not None and is_dubious_html(beginning) and len(tree) < 2:
        return None
    return tree


def robots_opt_out(tree, header: str = "") -> list[str]:
    """`noai` / `noimageai` directives from <meta name=robots> and the X-Robots-Tag header."""
    directives: set[str] = set()
    values = [header or ""]
    for meta in tree.iter("meta"):
        if (meta.get("name") or "").strip().lower() in ("robots", "ccbot", "googlebot"):
            values.append(meta.get("content") or "")
    for value in values:
        for token in re.split(r"[,\s]+", value.lower()):
            if token in ("noai", "noimageai"):
                directives.add(token)
    return sorted(directives)


# Marks in the page's text stream: an image (\ue000), where an element starts (\ue002) and ends (\ue003), each
# with its number and closed by \ue001.
_MARK = re.compile("([\ue000\ue002\ue003])(\\d+)\ue001")
_NOT_WORD = re.compile(r"[\W_]+")
_NOT_WORD_OR_MARK = re.compile("[^\\w\ue000-\ue003]+")  # as _NOT_WORD once the ASCII pass took "_", marks survive
_ASCII_NOT_WORD = bytes(byte for byte in range(128) if not chr(byte).isalnum())


def _letters_digits(text: str, pattern: re.Pattern) -> str:
    """`text` without what `pattern` matches (runs of what is not a letter or digit, `_` included): the ASCII
    ones deleted from the UTF-8 bytes first (a C loop, several times faster than the regex over a whole page),
    the regex left only for what other scripts' punctuation and spaces remain."""
    kept = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_NOT_WORD).decode("utf-8", "surrogatepass")
    return kept if kept.isascii() else pattern.sub("", kept)


def normalise(text: str) -> str:
    """Letters and digits only, lower-cased: what survives trafilatura's rewriting of spaces, quotes and punctuation."""
    return _letters_digits(text.lower(), _NOT_WORD)


@dataclass
class DomText:
    """A page's visible text in DOM order, normalised, with the offset at which each image stands and the
    offsets each element around an image spans."""

    text: str
    image_at: dict[int, int]  # marker index → offset in `text`
    spans: dict = field(default_factory=dict)  # the root and each element holding an image → (start, end) in `text`

    def occurrences(self, key: str, limit: int = 64) -> list[int]:
        found, start = [], self.text.find(key)
        while start >= 0 and len(found) < limit:
            found.append(start)
            start = self.text.find(key, start + 1)
        return found


def _image_ancestors(images: MarkedImages, root) -> list:
    """Every element that holds an image, below `root`, each once."""
    found: dict = {}
    for img in images.elements:
        for ancestor in img.iterancestors():
            if ancestor is root or ancestor in found:
                break
            found[ancestor] = None
    return list(found)


def dom_text(images: MarkedImages) -> DomText:
    """The text stream of the page's <body> with each image's place and the span of each element holding an
    image (what `pipeline.extract.article` needs to find the article around the paragraphs); the tree is left
    as it was."""
    root = images.tree.find("body")
    if root is None:
        root = images.tree
    codes = [(code, code.text) for code in root.iter("script", "style")]
    holders = _image_ancestors(images, root)
    saved = [(img, img.text, img.tail) for img in images.elements] + [(e, e.text, e.tail) for e in holders]
    for code, _ in codes:
        code.text = None
    for index, img in enumerate(images.elements):
        img.tail = f"\ue000{index}\ue001{img.tail or ''}"
    for index, element in enumerate(holders):
        element.text = f"\ue002{index}\ue001{element.text or ''}"
        element.tail = f"\ue003{index}\ue001{element.tail or ''}"
    text = root.text_content().lower()
    for element, original in codes:
        element.text = original
    for element, original_text, original_tail in saved:
        element.text, element.tail = original_text, original_tail
    parts = _MARK.split(_letters_digits(text, _NOT_WORD_OR_MARK))  # one pass over the page
    image_at: dict[int, int] = {}
    starts: dict[int, int] = {}
    spans: dict = {}
    length = len(parts[0])
    for i in range(1, len(parts), 3):
        kind, number = parts[i], int(parts[i + 1])
        if kind == "\ue000":
            image_at.setdefault(number, length)
        elif kind == "\ue002":
            starts[number] = length
        elif number in starts:
            spans[holders[number]] = (starts[number], length)
        length += len(parts[i + 2])
    spans[root] = (0, length)
    return DomText("".join(parts[::3]), image_at, spans)
