"""Finding each `<img>`'s real URL and context in the raw HTML, before trafilatura sees the page.

trafilatura keeps an image only if its `src`/`data-src` looks like an image file and does not read
`srcset`, `<picture>` or `<base href>`. So m3w resolves every image itself (best `srcset` candidate,
`<picture><source>`, lazy-load attributes, `<base>` and the page URL), records alt text, caption and
declared size, and swaps the tag's source for a numbered marker URL that trafilatura accepts. The
markers in trafilatura's output then say exactly which image stands where in the main content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from lxml import html as lxml_html

MARKER_PREFIX = "https://m3w.invalid/img/"
_MARKER = re.compile(r"^https://m3w\.invalid/img/(\d+)\.jpg$")

# Lazy-loading libraries put the real URL in one of these (lazysizes, WordPress, Jetpack, ...).
LAZY_SRC_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url", "data-hi-res-src",
                  "data-full-src", "data-orig-src", "data-actualsrc")
LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset")
_PLACEHOLDER = re.compile(r"(^data:|blank\.gif|spacer\.gif|placeholder|transparent\.(gif|png)|lazy[-_]?load)", re.I)


@dataclass
class ImageCandidate:
    url: str  # absolute, or the raw value when it cannot be resolved (the node rules then drop it)
    alt: str = ""
    title: str = ""
    caption: str = ""
    width: str | None = None
    height: str | None = None


def parse_srcset(value: str) -> list[tuple[str, float]]:
    """srcset → [(url, weight)] following the HTML spec's tokenizer (URLs may contain commas).

    The weight is the width (`w`) or density (`x`) descriptor; a candidate without one counts as 1x.
    """
    out: list[tuple[str, float]] = []
    position, length = 0, len(value)
    while position < length:
        while position < length and (value[position].isspace() or value[position] == ","):
            position += 1
        start = position
        while position < length and not value[position].isspace():
            position += 1
        url = value[start:position]
        if not url:
            break
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = position
            while position < length and value[position] != ",":
                position += 1
            descriptor = value[start:position].strip().lower()
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


def _usable(value: str | None) -> bool:
    return bool(value and value.strip() and not _PLACEHOLDER.search(value.strip()))


def raw_source(img) -> str | None:
    """The best raw URL of an <img>: <picture><source> > srcset > lazy attrs > src (placeholders skipped)."""
    # libxml2 does not know <source> is void and nests what follows inside it, so look a few levels up.
    picture = next((a for _, a in zip(range(4), img.iterancestors()) if a.tag == "picture"), None)
    if picture is not None:
        for source in picture.iter("source"):
            mime = (source.get("type") or "").lower()
            if mime and mime not in ("image/jpeg", "image/png", "image/webp", "image/jpg"):
                continue
            best = best_srcset(source.get("srcset") or source.get("data-srcset"))
            if _usable(best):
                return best
    for attr in ("srcset",) + LAZY_SRCSET_ATTRS:
        best = best_srcset(img.get(attr))
        if _usable(best):
            return best
    for attr in LAZY_SRC_ATTRS + ("src",):
        value = img.get(attr)
        if _usable(value):
            return value.strip()
    src = img.get("src")
    return src.strip() if src else None


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


def mark_images(tree, page_url: str) -> list[ImageCandidate]:
    """Resolve every <img>, then replace its source attributes with a numbered marker (in place)."""
    base = base_url(tree, page_url)
    candidates: list[ImageCandidate] = []
    for index, img in enumerate(tree.iter("img")):
        candidates.append(
            ImageCandidate(
                url=absolutize(raw_source(img), base),
                alt=" ".join((img.get("alt") or "").split()),
                title=" ".join((img.get("title") or "").split()),
                caption=_caption(img),
                width=img.get("width"),
                height=img.get("height"),
            )
        )
        for attr in list(img.attrib):
            if attr in ("srcset", "src", "sizes") or attr.startswith("data-"):
                del img.attrib[attr]
        img.set("src", f"{MARKER_PREFIX}{index}.jpg")
    for source in list(tree.iter("source")):
        if any(a.tag == "picture" for a in source.iterancestors()):
            source.drop_tag()  # keep the nested <img> that libxml2 put inside it
    return candidates


def marker_index(src: str | None) -> int | None:
    match = _MARKER.match(src or "")
    return int(match.group(1)) if match else None


def parse_html(text: str):
    """lxml tree of a page, tolerant of junk; None when nothing parseable is left."""
    try:
        return lxml_html.document_fromstring(text)
    except Exception:
        return None




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
