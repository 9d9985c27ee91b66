"""Which pictures belong to the article, decided from the page's structure around trafilatura's paragraphs.

trafilatura keeps a picture only where its text extraction kept the element around it: figures beside the
paragraphs, galleries, lazy-loaded pictures and lead pictures above the first paragraph are often lost with
their (text-less) containers, and a page whose pictures all went that way vanishes as `no_images`. So m3w
finds the article's container in the page, the smallest element holding a picture that also holds most of the
located paragraph text, and takes every picture inside it, between or beside the paragraphs, and the lead
picture just before the first paragraph, unless a rule says it is not the article's: the node rules (URL,
format, declared size) and the place rules (`filters.image_nodes.ImagePlaceRules`: navigation, share bars,
related stories, comments, ads, bylines, teaser thumbnails), which judge trafilatura's own pictures too. Every
`<img>` of the page ends kept or counted under one reason (`outside_article` for what is neither). Where no
container is found (no paragraph located) or `extract.article_pictures` is off, trafilatura's pictures are the
candidates, judged by the same rules.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate

from filters.base import ImageItem
from filters.image_nodes import ImageNodeRules, ImagePlaceRules, picture_key
from pipeline.extract.html_images import DomText, MarkedImages
from pipeline.extract.order import Placed
from pipeline.extract.settings import ExtractSettings


@dataclass
class Article:
    """Where the article stands in the page's text stream: its container (None: not found) and its paragraphs."""

    container: object | None
    starts: list[int]  # offsets of the located paragraphs, sorted
    prose: list[int]  # ... of those that are prose (`article_min_paragraph_chars`; all where none is)
    first: int = 0  # where the first located paragraph starts
    last: int = 0  # where the last one ends

    def kept_text(self, span: tuple[int, int] | None) -> bool | None:
        """Whether an element (its start and end offsets) holds the start of a located paragraph; None when it
        holds no page text or its span is unknown (no rule fires on a guess)."""
        if span is None or span[1] <= span[0]:
            return None
        return _starts_within(self.starts, span)

    def holds_prose(self, span: tuple[int, int] | None) -> bool:
        return span is not None and _starts_within(self.prose, span)


def _starts_within(starts: list[int], span: tuple[int, int]) -> bool:
    at = bisect_left(starts, span[0])
    return at < len(starts) and starts[at] < span[1]


def find_article(dom: DomText, placed: list[Placed], share: float, min_chars: int) -> Article:
    """The smallest element holding a picture that holds at least `share` of the located paragraphs' text,
    counting only paragraphs of at least `min_chars` letters/digits (the article's prose, not the headlines of
    a sidebar) where there are any."""
    texts = sorted((item.pos, len(item.key)) for item in placed if item.kind == "text" and item.pos is not None)
    if not texts:
        return Article(None, [], [])
    starts = [pos for pos, _ in texts]
    prose = [(pos, length) for pos, length in texts if length >= min_chars] or texts
    totals = [0, *accumulate(length for _, length in prose)]
    prose_starts = [pos for pos, _ in prose]
    needed = share * totals[-1]
    best, best_size = None, None
    for element, (start, end) in dom.spans.items():
        held = totals[bisect_left(prose_starts, end)] - totals[bisect_left(prose_starts, start)]
        if held >= needed and held > 0 and (best_size is None or end - start < best_size):
            best, best_size = element, end - start
    last = max(pos + length for pos, length in texts)
    return Article(best, starts, prose_starts, starts[0], last)


def _lowest_common(img, container):
    """The first element around `img` that also holds `container` (None when there is no container).

    Elements are compared as lxml's proxies, which stay the same objects while referenced (as in these sets)."""
    if container is None:
        return None
    around = {container, *container.iterancestors()}
    return next((element for element in img.iterancestors() if element in around), None)


class ArticlePictures:
    """Each `<img>` of a page → kept (in page order) or the reason it is not the article's.

    Args:
        settings: the `extract` section (`article_pictures`, `article_share`, `lead_chars`).
        node_rules: the URL/format/size rules; place_rules: where a picture stands.
    """

    def __init__(self, settings: ExtractSettings, node_rules: ImageNodeRules, place_rules: ImagePlaceRules):
        self.settings = settings
        self.node_rules = node_rules
        self.place_rules = place_rules

    def choose(self, images: MarkedImages, dom: DomText, placed: list[Placed],
               page_url: str) -> tuple[set[int], Counter]:
        """The images to keep (marker indices) and the drops by reason, over every `<img>` of the page;
        `placed` holds trafilatura's paragraphs and images, located."""
        article = find_article(dom, placed, self.settings.article_share, self.settings.article_min_paragraph_chars)
        taken = {images.copy_of.get(item.value, item.value) for item in placed if item.kind == "image"}
        self.place_rules.new_page()
        kept: set[int] = set()
        pictures: set[str] = set()  # the kept pictures' URLs without their sizes: a copy at another size repeats one
        lead_kept = False  # a page has one lead picture: outside the container, only the first kept is the article's
        drops: Counter = Counter()
        for index in range(len(images)):
            reason, lead = self._reason(index, index in taken, images, dom, article, page_url, lead_kept)
            key = picture_key(images[index].url, self.node_rules.size_params) if reason is None else ""
            if reason is None and key in pictures:
                reason = "repeated"
            if reason is None:
                kept.add(index)
                pictures.add(key)
                lead_kept = lead_kept or lead
            else:
                drops[reason] += 1
        return kept, drops

    def _reason(self, index: int, taken: bool, images: MarkedImages, dom: DomText, article: Article,
                page_url: str, lead_kept: bool) -> tuple[str | None, bool]:
        """The drop reason (None: kept) and whether the picture is the article's only as its lead picture."""
        if index in images.copy_of:
            return "lazy_copy", False
        img, pos = images.elements[index], dom.image_at.get(index)
        container = article.container
        decides = self.settings.article_pictures and container is not None
        place = self._in_article(img, pos, article, dom) if decides else ("article" if taken else None)
        if place is None or (place == "lead" and lead_kept):
            return "outside_article", False
        return self._rules_reason(index, images, dom, article, page_url), place == "lead"

    def _rules_reason(self, index: int, images: MarkedImages, dom: DomText, article: Article,
                      page_url: str) -> str | None:
        """What the place rules, then the node rules, say of a picture of the article (None: keep it)."""
        img, container = images.elements[index], article.container
        verdict = self.place_rules.judge(img, _lowest_common(img, container), page_url,
                                         lambda element: article.kept_text(dom.spans.get(element)))
        if not verdict.keep:  # judged before the node rules: it needs no resolved URL
            return verdict.reason
        candidate = images[index]
        verdict = self.node_rules(ImageItem(url=candidate.url, declared_width=candidate.width,
                                            declared_height=candidate.height))
        return None if verdict.keep else verdict.reason

    def _in_article(self, img, pos: int | None, article: Article, dom: DomText) -> str | None:
        """"article" when between `lead_chars` of page text before the first paragraph and the end of the last,
        and either inside the container or beside it in a part of the page that holds prose paragraphs of the
        article; "lead" for a lead picture candidate: before the first prose paragraph, in an element (not the
        page's body) at most `lead_levels` above the container; None for neither."""
        settings = self.settings
        if pos is None or not article.first - settings.lead_chars <= pos <= article.last:
            return None
        ancestors = []
        for element in img.iterancestors():
            if element is article.container:
                return "article"
            ancestors.append(element)
        for above, element in enumerate(article.container.iterancestors(), start=1):
            if element.tag in ("body", "html"):
                return None
            if element in ancestors:  # the lowest element holding both: the picture's branch is below it
                at = ancestors.index(element)
                branch = ancestors[at - 1] if at else img
                if article.holds_prose(dom.spans.get(branch)):
                    return "article"
                return "lead" if above <= settings.lead_levels and pos <= article.prose[0] else None
        return None
