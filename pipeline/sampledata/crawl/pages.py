"""HTML for the sample crawl: site layouts (header, nav, sidebar, footer) and a page builder that
records, while it writes the markup, what extraction must find.

`PageBuilder` keeps two views of the same page in step: the HTML a crawler would have fetched, and
the ground truth (the content images in reading order, the text right before each, the images that
must not come out: boilerplate, logos, icons, pixels, `data:` URIs).
"""

from __future__ import annotations

import html
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.canaries.shapes import canary_paragraph

SNIPPET_CHARS = 48
CANARY_IMAGES_PER_PAGE = (4, 6)
CANARY_NOTE_WORDS = (4, 7)  # words of the note after the class word


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def snippet(text: str, chars: int = SNIPPET_CHARS) -> str:
    """The last words of a text (at most `chars` characters, cut at a word boundary)."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    return tail.split(" ", 1)[1] if " " in tail else tail


@dataclass
class Layout:
    """A site's chrome: what wraps every page's main content on that site."""

    site_name: str
    logo_url: str  # as written in the HTML (may be relative)
    logo_abs: str
    nav: tuple[str, ...]
    sidebar_icons: tuple[tuple[str, str], ...] = ()  # (src as written, absolute URL)
    footer_icons: tuple[tuple[str, str], ...] = ()
    tracking_pixel: str | None = None  # absolute URL, 1x1 at the end of <body>
    lang: str = "en"
    sidebar_links: tuple[str, ...] = ()
    footer_text: str = ""

    def boilerplate_images(self) -> list[str]:
        urls = [self.logo_abs] + [a for _, a in self.sidebar_icons] + [a for _, a in self.footer_icons]
        if self.tracking_pixel:
            urls.append(self.tracking_pixel)
        return urls


@dataclass
class PageBuilder:
    """Accumulates a page's main content and its expectations."""

    url: str
    title: str
    lang: str = "en"
    blocks: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    text_before_image: list[str] = field(default_factory=list)
    excluded_images: list[str] = field(default_factory=list)
    head_extra: list[str] = field(default_factory=list)
    last_text: str = ""
    text_blocks: list[str] = field(default_factory=list)
    blocks_before_image: list[str] = field(default_factory=list)  # the full text block each snippet comes from

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(f"<h{level}>{esc(text)}</h{level}>")
        self._text(text)

    def paragraph(self, text: str, attrs: str = "") -> None:
        self.blocks.append(f"<p{attrs}>{esc(text)}</p>")
        self._text(text)

    def _text(self, text: str) -> None:
        self.last_text = text
        self.text_blocks.append(text)

    def raw(self, markup: str) -> None:
        """Markup that adds neither text nor expected images (excluded images are noted separately)."""
        self.blocks.append(markup)

    def image(self, markup: str, expected_url: str | None) -> None:
        """An image in the main content; `expected_url` is where it must resolve to (None: must be dropped)."""
        self.blocks.append(markup)
        if expected_url is not None:
            self.expect_image(expected_url)

    def expect_image(self, url: str) -> None:
        """An image whose markup the caller writes itself (e.g. inside a gallery grid)."""
        self.images.append(url)
        self.text_before_image.append(snippet(self.last_text))
        self.blocks_before_image.append(self.last_text)

    def copy(self, url: str, edits: dict[str, str] | None = None) -> PageBuilder:
        """The same page at another URL, its text blocks rewritten by `edits` (old block → new block)."""
        edits = edits or {}
        before = [edits.get(block, block) for block in self.blocks_before_image]
        return PageBuilder(url, self.title, self.lang, list(self.blocks), list(self.images),
                           [snippet(block) for block in before], list(self.excluded_images),
                           text_blocks=[edits.get(block, block) for block in self.text_blocks],
                           blocks_before_image=before)

    def exclude(self, *urls: str) -> None:
        self.excluded_images.extend(u for u in urls if u not in self.excluded_images)

    def render(self, layout: Layout | None, *, base_href: str | None = None, charset: str | None = "utf-8",
               meta_robots: str | None = None, byline: str | None = None) -> str:
        head = [f'<meta charset="{charset}">' if charset else "", f"<title>{esc(self.title)}</title>",
                f'<link rel="canonical" href="{esc(self.url)}">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">']
        if base_href:
            head.append(f'<base href="{esc(base_href)}">')
        if meta_robots:
            head.append(f'<meta name="robots" content="{esc(meta_robots)}">')
        head.extend(self.head_extra)
        article = [f"<h1>{esc(self.title)}</h1>"]
        if byline:
            article.append(f'<p class="intro">{esc(byline)}</p>')
        article.extend(self.blocks)
        body = "\n".join(article)
        if layout is None:
            page_body = f"<article>\n{body}\n</article>"
        else:
            page_body = _wrap(layout, body)
            self.exclude(*layout.boilerplate_images())
        lang = layout.lang if layout else self.lang
        return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n' + "\n".join(h for h in head if h)
                + f"\n</head>\n<body>\n{page_body}\n</body>\n</html>\n")


def _wrap(layout: Layout, article: str) -> str:
    nav = "".join(f'<li><a href="/{esc(item.lower().replace(" ", "-"))}/">{esc(item)}</a></li>' for item in layout.nav)
    header = (f'<header class="site-header"><a class="brand" href="/"><img src="{esc(layout.logo_url)}" '
              f'alt="{esc(layout.site_name)}" width="180" height="56"></a>'
              f'<nav class="main-nav"><ul>{nav}</ul></nav></header>')
    sidebar = ""
    if layout.sidebar_icons or layout.sidebar_links:
        links = "".join(f'<li><a href="/topics/{i}">{esc(text)}</a></li>'
                        for i, text in enumerate(layout.sidebar_links))
        icons = "".join(f'<a href="/share/{i}"><img src="{esc(src)}" width="24" height="24" alt="share"></a>'
                        for i, (src, _) in enumerate(layout.sidebar_icons))
        sidebar = (f'<aside class="sidebar"><div class="widget"><h3>Popular</h3><ul>{links}</ul></div>'
                   f'<div class="share">{icons}</div></aside>')
    footer_icons = "".join(f'<a href="/follow/{i}"><img src="{esc(src)}" width="20" height="20" alt=""></a>'
                           for i, (src, _) in enumerate(layout.footer_icons))
    footer = (f'<footer class="site-footer"><p>{esc(layout.footer_text)}</p>'
              f'<div class="social">{footer_icons}</div>'
              f'<ul><li><a href="/about/">About</a></li><li><a href="/contact/">Contact</a></li>'
              f'<li><a href="/privacy/">Privacy</a></li></ul></footer>')
    pixel = (f'<img src="{esc(layout.tracking_pixel)}" width="1" height="1" alt="" style="display:none">'
             if layout.tracking_pixel else "")
    return (f"{header}\n<div class=\"wrap\">\n<main id=\"content\">\n<article class=\"post\">\n{article}\n"
            f"</article>\n</main>\n{sidebar}\n</div>\n{footer}\n{pixel}")


# --------------------------------------------------------------------------------------------
# Image markup: each function returns the HTML of one image as a real page would write it.
# --------------------------------------------------------------------------------------------

def img_tag(src: str, alt: str = "", *, width: int | None = None, height: int | None = None, extra: str = "") -> str:
    size = ""
    if width is not None:
        size += f' width="{width}"'
    if height is not None:
        size += f' height="{height}"'
    return f'<img src="{esc(src)}" alt="{esc(alt)}"{size}{extra}>'


def figure(inner: str, caption: str | None) -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{inner}{cap}</figure>"


def attrs(**values: Any) -> str:
    return "".join(f' {k.replace("_", "-")}="{esc(str(v))}"' for k, v in values.items() if v is not None)


# --------------------------------------------------------------------------------------------
# Alignment canaries: the one article every canary page carries (the sample crawl's canary site and the
# canaries `m3w build` adds to every build, pipeline/canaries/).
# --------------------------------------------------------------------------------------------

def canary_article(builder: PageBuilder, writer: Any, rng: random.Random, classes: tuple[str, ...],
                   picture: Callable[[str], str]) -> list[str]:
    """Fill `builder` with a canary article and return its pictures' classes in page order.

    Dense on purpose: a short lead, then each picture with a short note that opens with its class word ("Circle.
    The sketch of paper."), so the class words are a fair share of a training window (the CPU smoke run needs
    that to learn), then a closing paragraph: the words beyond the notes that the document filters want. Classes
    are drawn independently: with a balanced cycle the classes already seen on a page would hint at the next
    one, and the text before a picture must say nothing about it (the shuffled-image control relies on it).
    `writer` is an `EnglishWriter`; `picture(cls)` makes a picture of that class and returns its URL.
    """
    page_classes = [rng.choice(classes) for _ in range(rng.randint(*CANARY_IMAGES_PER_PAGE))]
    builder.paragraph(writer.opening((1, 2)))
    for cls in page_classes:
        url = picture(cls)
        inner = img_tag(url, writer.alt_text() if rng.random() < 0.5 else "")
        builder.image(f"<figure>{inner}</figure>" if rng.random() < 0.6 else f"<p>{inner}</p>", url)
        builder.paragraph(canary_paragraph(cls, rng, *CANARY_NOTE_WORDS))
    builder.paragraph(writer.paragraph((2, 3)))
    return page_classes
