"""Page → interleaved document: trafilatura's main content, in the page's own order.

trafilatura decides *what* is main content (`content.py`); m3w decides *where* each part stands. Every `<img>`
carries a numbered marker into trafilatura (`html_images.py`) and every extracted paragraph is found again in
the page's text stream (`order.py`), so the document's text blocks and images are put back into DOM order
wherever trafilatura moved them (lead images above their headline, captions, pull quotes). A block that cannot
be found stays where trafilatura put it and is counted (`paragraphs|info|unlocated`).

`PageExtractor` is a pure function object (page in, `Extracted` out) without Beam, so the per-page timeout
child (`transforms.ExtractDoFn`) imports only what extraction needs and starts in a second, not in Beam's.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from filters.image_nodes import ImageNodeRules, ImageNodeSettings, ImagePlaceRules
from pipeline.extract.article import ArticlePictures
from pipeline.extract.content import main_content
from pipeline.extract.html_images import dom_text, mark_images, parse_html, robots_opt_out
from pipeline.extract.order import Collector, dom_gaps, dom_order, locate, moved, with_pictures
from pipeline.extract.settings import ExtractSettings
from pipeline.read.decode import decode_html, replacement_ratio
from schemas.document import Document, Image, Node, make_doc_id

if TYPE_CHECKING:
    from pipeline.read.crawl import Page

_IMG_TAG = re.compile(rb"<[iI][mM][gG][\s>/]")  # no re.I: ten times faster on bytes


@dataclass
class Extracted:
    """What extraction produced for one page: a document or a drop, and what happened to its images.

    The drop is its reason (and detail), not the accounting's `Drop`, so the timeout child never imports Beam."""

    document: Document | None = None
    drop: str | None = None  # the drop reason
    drop_detail: str = ""
    images_in: int = 0  # every <img> of the page (and any marker trafilatura made up: `unresolved`)
    image_drops: Counter = field(default_factory=Counter)
    decoding: str = ""
    paragraphs_unlocated: int = 0  # kept where trafilatura put them
    items_moved: Counter = field(default_factory=Counter)  # "paragraphs"/"images" put back into DOM order


def has_img_tag(body: bytes) -> bool:
    return _IMG_TAG.search(body) is not None


def page_title(tree) -> str:
    title = tree.find(".//title")
    return " ".join(title.text_content().split()) if title is not None else ""


class PageExtractor:
    """Decode, parse, extract the main content with trafilatura and rebuild it as nodes in page order.

    Args:
        extract: the `extract` section.
        image_nodes: the `image_nodes` section (node and place rules on each picture of the article).
        max_replacement_ratio: `read.max_replacement_ratio`, above which a decoded page is `undecodable`.
    """

    def __init__(self, *, extract: ExtractSettings, image_nodes: ImageNodeSettings, max_replacement_ratio: float):
        self.settings = extract
        self.image_nodes = image_nodes
        self.max_replacement_ratio = max_replacement_ratio
        self.rules = ImageNodeRules(image_nodes)
        self.pictures = ArticlePictures(extract, self.rules, ImagePlaceRules(image_nodes.place))

    def __call__(self, page: Page) -> Extracted:
        settings = self.settings
        if settings.require_img_tag and not has_img_tag(page.body):
            return Extracted(drop="no_img_tag")
        text, how = decode_html(page.body, page.charset)
        if replacement_ratio(text) > self.max_replacement_ratio:
            return Extracted(drop="undecodable", decoding=how)
        tree = parse_html(text)
        if tree is None:
            return Extracted(drop="unparseable", decoding=how)
        opt_out = robots_opt_out(tree, page.robots_header)
        title = page_title(tree)
        candidates = mark_images(tree, page.url)
        dom = dom_text(candidates)  # before trafilatura prunes the tree
        body = main_content(tree, page.url, settings)
        if body is None:
            return Extracted(drop="extraction_empty", decoding=how)
        collector = Collector()
        collector.walk(body)
        out = Extracted(decoding=how, images_in=len(candidates))
        items: list[tuple[str, Any]] = []
        for kind, value in collector.finish():
            if kind == "image" and value >= len(candidates):
                out.images_in += 1
                out.image_drops["unresolved"] += 1
                continue
            items.append((kind, value))
        placed = locate(items, dom, settings.locate_prefix_chars)
        chosen, drops = self.pictures.choose(candidates, dom, placed, page.url)
        out.image_drops.update(drops)
        placed = with_pictures(placed, chosen, dom)
        if settings.dom_order:
            ordered = dom_order(placed)
            out.items_moved = moved(ordered)
            placed = ordered
        out.paragraphs_unlocated = sum(1 for item in placed if item.kind == "text" and item.pos is None)
        gaps = dom_gaps(placed)
        nodes: list[Node] = []
        for i, item in enumerate(placed):
            if item.kind == "text":
                nodes.append(Node(text=item.value))
                continue
            candidate = candidates[item.value]
            meta = gaps.get(i, {})
            others = [url for url in candidate.others if url != candidate.url]
            if others:  # the images stage looks them up in the crawl's archive when the chosen URL is not there
                meta = {**meta, "candidate_urls": others}
            nodes.append(Node(image=Image(url=candidate.url, alt=candidate.alt, caption=candidate.caption,
                                          title=candidate.title, width=_int_or_none(candidate.width),
                                          height=_int_or_none(candidate.height), meta=meta)))
        doc = Document(
            doc_id=make_doc_id(page.url, page.source, page.offset),
            url=page.url,
            nodes=nodes,
            warc_filename=page.source,
            warc_record_offset=page.offset,
            warc_record_length=page.length,
            warc_date=page.date,
            metadata={"title": title, "opt_out": opt_out} if opt_out else {"title": title},
        )
        doc.normalize_nodes()
        if sum(len(t) for t in doc.texts) < settings.min_text_chars:
            out.drop = "no_text"
        elif settings.require_images and not doc.images:
            out.drop = "no_images"
        else:
            out.document = doc
        return out


def extract_with(page: Page, extractor: PageExtractor) -> Extracted:
    """The default per-page step of `ExtractDoFn` (a test swaps in one that hangs): the extractor on the page."""
    return extractor(page)


def extract_fields(fields: dict[str, Any], step: Callable[[Any, PageExtractor], Extracted],
                   extractor: PageExtractor) -> Extracted:
    """The timeout child's entry: a page arrives as its fields, so the child never imports the Beam-bound
    reader that defines `Page`."""
    return step(SimpleNamespace(**fields), extractor)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(float(str(value).strip().lower().removesuffix("px")))
    except (TypeError, ValueError):
        return None
