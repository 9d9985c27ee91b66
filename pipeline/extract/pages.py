"""Page → interleaved document: trafilatura's main content, in the page's own order.

trafilatura decides *what* is main content; m3w decides *where* each part stands. Every `<img>` carries a
numbered marker into trafilatura (`html_images.py`) and every extracted paragraph is found again in the
page's text stream, so the document's text blocks and images are put back into DOM order wherever
trafilatura moved them (lead images above their headline, captions, pull quotes). A block that cannot be
found stays where trafilatura put it and is counted (`paragraphs|info|unlocated`).

`extract_page` is a pure function (bytes in, `Document` or `Drop` out, plus image counts) so it can be
tested on its own and run in an isolated process with a per-page timeout (`ExtractDoFn`).
"""

from __future__ import annotations

import importlib
import logging
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import apache_beam as beam

from filters.image_nodes import ImageNodeRules
from pipeline.core.accounting import DROPPED_TAG, Drop, StageCounters
from pipeline.core.failures import FailureBreaker, preload
from pipeline.extract.html_images import (
    DomText,
    dom_text,
    mark_images,
    marker_index,
    normalise,
    parse_html,
    robots_opt_out,
)
from pipeline.extract.isolate import IsolatedWorker, WorkerTimeout
from pipeline.filter.transforms import GatePages
from pipeline.io.documents import WriteDropAudit
from pipeline.read.crawl import Page, ReadCrawl, expand_inputs
from pipeline.read.decode import decode_html, replacement_ratio
from schemas.document import Document, Image, Node, make_doc_id

log = logging.getLogger(__name__)

STAGE = "extract"
# trafilatura output tags that end a paragraph, and those that end a line inside one.
_BLOCKS = {"p", "head", "list", "quote", "table", "code", "div", "main", "doc", "body"}
_LINES = {"item", "row", "lb"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_IMG_TAG = re.compile(rb"<[iI][mM][gG][\s>/]")  # no re.I: ten times faster on bytes
# A located block shorter than this (normalised characters) is trusted only where its neighbours put it.
_SURE_KEY_CHARS = 12
_MIN_KEY_CHARS = 3

# What extraction imports; loaded in the driver, in every worker's setup() and in the timeout child, so a
# broken install (trafilatura's jusText path needs lxml_html_clean) stops the run at once, by name.
EXTRACT_DEPENDENCIES: tuple[tuple[str, Callable[[], Any]], ...] = tuple(
    (name, partial(importlib.import_module, name)) for name in ("trafilatura", "justext.core", "lxml.html.clean")
)


def load_extract_dependencies() -> None:
    preload(EXTRACT_DEPENDENCIES)


@dataclass
class Extracted:
    """What extraction produced for one page: a document or a drop, and what happened to its images."""

    document: Document | None = None
    drop: Drop | None = None
    images_in: int = 0
    image_drops: Counter = field(default_factory=Counter)
    decoding: str = ""
    paragraphs_unlocated: int = 0  # kept where trafilatura put them
    items_moved: Counter = field(default_factory=Counter)  # "paragraphs"/"images" put back into DOM order


def has_img_tag(body: bytes) -> bool:
    return _IMG_TAG.search(body) is not None


def page_title(tree) -> str:
    title = tree.find(".//title")
    return " ".join(title.text_content().split()) if title is not None else ""


class Collector:
    """Walks trafilatura's XML body in document order into paragraphs and images.

    `items` holds ("text", paragraph) and ("image", image_key(src)) in trafilatura's order; graphics whose
    key is None (not one of m3w's markers) are left out.
    """

    def __init__(self, image_key: Callable[[str | None], Any] = marker_index):
        self.image_key = image_key
        self.items: list[tuple[str, Any]] = []
        self.line: list[str] = []
        self.lines: list[str] = []

    def add(self, text: str | None) -> None:
        if text:
            self.line.append(text)

    def end_line(self) -> None:
        line = _SPACES.sub(" ", "".join(self.line)).strip()
        self.line = []
        if line:
            self.lines.append(line)

    def end_paragraph(self) -> None:
        self.end_line()
        if self.lines:
            self.items.append(("text", "\n".join(self.lines)))
        self.lines = []

    def walk(self, element) -> None:
        if element.tag == "graphic":
            key = self.image_key(element.get("src"))
            if key is not None:
                self.end_paragraph()
                self.items.append(("image", key))
            self.add(element.tail)
            return
        self.add(element.text)
        for child in element:
            self.walk(child)
            if child.tag in _BLOCKS:
                self.end_paragraph()
            elif child.tag in _LINES:
                self.end_line()
            elif child.tag == "cell":
                self.add(" ")  # table cells are words apart
            if child.tag != "graphic":
                self.add(child.tail)
        if element.tag in _BLOCKS:
            self.end_paragraph()

    def finish(self) -> list[tuple[str, Any]]:
        self.end_paragraph()
        return self.items


@dataclass
class Placed:
    """One paragraph or image of the document with its place in the page (None: not found)."""

    kind: str  # "text" | "image"
    value: Any  # the paragraph, or the image's marker index
    order: int  # trafilatura's position
    key: str = ""  # normalised paragraph text
    pos: int | None = None  # offset in the page's normalised text stream


def _occurrences(key: str, dom: DomText, prefix: int) -> list[int]:
    """Where a normalised paragraph may start in the page: its prefix, else its end (a rewritten start)."""
    if len(key) < _MIN_KEY_CHARS:
        return []
    found = dom.occurrences(key[:prefix])
    if found or len(key) <= prefix:
        return found
    return [max(0, p - (len(key) - prefix)) for p in dom.occurrences(key[-prefix:])]


def locate(items: list[tuple[str, Any]], dom: DomText, prefix: int) -> list[Placed]:
    """Each item's offset in the page's text stream.

    An image stands at its marker. A paragraph found once (with a key long enough to be sure) is an anchor;
    one found several times, or with a short key, takes the occurrence between the anchors around it
    (nearest to the previous one), else, if it is long, the occurrence nearest to them; else it stays
    unlocated. An occurrence already taken by an identical paragraph is not taken twice while others remain.
    """
    placed = [Placed(kind, value, i) for i, (kind, value) in enumerate(items)]
    options: dict[int, list[int]] = {}
    for item in placed:
        if item.kind == "image":
            item.pos = dom.image_at.get(item.value)
            continue
        item.key = normalise(item.value)
        found = _occurrences(item.key, dom, prefix)
        if len(found) == 1 and len(item.key) >= _SURE_KEY_CHARS:
            item.pos = found[0]
        elif found:
            options[item.order] = found
    texts = [item for item in placed if item.kind == "text"]
    taken: dict[str, set[int]] = {}
    for item in placed:
        if item.pos is not None and item.kind == "text":
            taken.setdefault(item.key, set()).add(item.pos)
    for n, item in enumerate(texts):
        found = options.get(item.order)
        if not found:
            continue
        lo = next((t.pos for t in reversed(texts[:n]) if t.pos is not None), None)
        hi = next((t.pos for t in texts[n + 1:] if t.pos is not None), None)
        free = [p for p in found if p not in taken.get(item.key, ())] or found
        inside = [p for p in free if (lo is None or p >= lo) and (hi is None or p <= hi)]
        if inside:
            item.pos = min(inside) if lo is not None else max(inside)
        elif len(item.key) >= _SURE_KEY_CHARS:
            bounds = [b for b in (lo, hi) if b is not None]
            item.pos = min(free, key=lambda p: min(abs(p - b) for b in bounds)) if bounds else free[0]
        if item.pos is not None:
            taken.setdefault(item.key, set()).add(item.pos)
    return placed


def dom_order(placed: list[Placed]) -> list[Placed]:
    """Located items sorted by their place in the page; an unlocated one stays right after its predecessor.

    At one offset an image comes before text (its marker stands before the text that follows it).
    """
    keyed, last = [], (-1, 0)
    for item in placed:
        if item.pos is not None:
            last = (item.pos, 0 if item.kind == "image" else 1)
        keyed.append((last + (item.order,), item))
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def dom_gaps(placed: list[Placed]) -> dict[int, dict[str, int]]:
    """Per image (by list index): normalised characters of page text between it and the paragraph before
    and after it in the document (`dom_gap_before`, `dom_gap_after`), where both are located."""
    gaps: dict[int, dict[str, int]] = {}
    for i, item in enumerate(placed):
        if item.kind != "image" or item.pos is None:
            continue
        gap: dict[str, int] = {}
        before = next((t for t in reversed(placed[:i]) if t.kind == "text"), None)
        after = next((t for t in placed[i + 1:] if t.kind == "text"), None)
        if before is not None and before.pos is not None:
            gap["dom_gap_before"] = max(0, item.pos - before.pos - len(before.key))
        if after is not None and after.pos is not None:
            gap["dom_gap_after"] = max(0, after.pos - item.pos)
        gaps[i] = gap
    return gaps


def moved(ordered: list[Placed]) -> Counter:
    """Items that changed place: those outside one longest run kept in trafilatura's order, per kind."""
    tails: list[int] = []  # patience sorting: the smallest last order of an increasing run of each length
    links: list[int] = []  # index into `ordered` of that run's last item
    previous: list[int] = [-1] * len(ordered)
    for i, item in enumerate(ordered):
        at = bisect_left(tails, item.order)
        previous[i] = links[at - 1] if at else -1
        if at == len(tails):
            tails.append(item.order)
            links.append(i)
        else:
            tails[at], links[at] = item.order, i
    kept, i = set(), links[-1] if links else -1
    while i >= 0:
        kept.add(i)
        i = previous[i]
    return Counter("paragraphs" if item.kind == "text" else "images"
                   for i, item in enumerate(ordered) if i not in kept)


def main_content(tree, url: str, ecfg: dict[str, Any]):
    """trafilatura's main-content body (XML) of a parsed page, or None.

    trafilatura's fast pass first; its readability/jusText comparison (a third of its time) runs only when
    the fast pass found little text (`extract.fallback_below_chars`), no paragraph text, or mostly tables:
    the cases where trafilatura's own comparison picks another extractor. bare_extraction copies the tree,
    so the same parse serves both passes and, afterwards, the DOM text stream.
    """
    import trafilatura

    options = dict(
        url=url if url.startswith("http") else None,
        include_images=True,
        include_tables=bool(ecfg["include_tables"]),
        include_comments=False,
        favor_precision=bool(ecfg["favor_precision"]),
        with_metadata=False,
        deduplicate=False,
        output_format="xml",  # the body tree only: no text rendering m3w would discard
    )
    min_chars = int(ecfg["fallback_below_chars"])
    result = trafilatura.bare_extraction(tree, fast=bool(ecfg["fast"]) or min_chars > 0, **options)
    if not ecfg["fast"] and min_chars > 0 and _needs_fallbacks(result, min_chars):
        result = trafilatura.bare_extraction(tree, fast=False, **options)
    return getattr(result, "body", None)


def _needs_fallbacks(result, min_chars: int) -> bool:
    if result is None or result.body is None or len(result.raw_text or "") < min_chars:
        return True
    paragraphs = list(result.body.iter("p"))
    has_text = any(text.strip() for p in paragraphs for text in p.itertext())
    return not has_text or sum(1 for _ in result.body.iter("table")) > len(paragraphs)


def extract_page(page: Page, config: dict[str, Any]) -> Extracted:
    """Decode, parse, extract the main content with trafilatura and rebuild it as nodes in page order."""
    ecfg, rcfg = config["extract"], config["read"]
    if ecfg["require_img_tag"] and not has_img_tag(page.body):
        return Extracted(drop=Drop("no_img_tag"))
    text, how = decode_html(page.body, page.charset)
    if replacement_ratio(text) > float(rcfg["max_replacement_ratio"]):
        return Extracted(drop=Drop("undecodable"), decoding=how)
    tree = parse_html(text)
    if tree is None:
        return Extracted(drop=Drop("unparseable"), decoding=how)
    opt_out = robots_opt_out(tree, page.robots_header)
    title = page_title(tree)
    candidates = mark_images(tree, page.url)
    body = main_content(tree, page.url, ecfg)
    if body is None:
        return Extracted(drop=Drop("extraction_empty"), decoding=how)
    collector = Collector()
    collector.walk(body)
    items = collector.finish()
    out = Extracted(decoding=how)
    rules = _node_rules(config["image_nodes"])
    kept: list[tuple[str, Any]] = []
    for kind, value in items:
        if kind == "image":
            out.images_in += 1
            if value >= len(candidates):
                out.image_drops["unresolved"] += 1
                continue
            candidate = candidates[value]  # resolved now, before dom_text changes the tree
            verdict = rules(candidate.url, candidate.width, candidate.height)
            if not verdict.keep:
                out.image_drops[verdict.reason] += 1
                continue
        kept.append((kind, value))
    placed = locate(kept, dom_text(candidates), int(ecfg["locate_prefix_chars"]))
    if ecfg["dom_order"]:
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
        nodes.append(Node(image=Image(url=candidate.url, alt=candidate.alt, caption=candidate.caption,
                                      title=candidate.title, width=_int_or_none(candidate.width),
                                      height=_int_or_none(candidate.height), meta=gaps.get(i, {}))))
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
    if sum(len(t) for t in doc.texts) < int(ecfg["min_text_chars"]):
        out.drop = Drop("no_text")
    elif ecfg["require_images"] and not doc.images:
        out.drop = Drop("no_images")
    else:
        out.document = doc
    return out


_RULES: dict[str, ImageNodeRules] = {}


def _node_rules(cfg: dict[str, Any]) -> ImageNodeRules:
    """The node rules of a config section, built once per process (not once per page)."""
    key = repr(sorted(cfg.items()))
    if key not in _RULES:
        _RULES[key] = ImageNodeRules(cfg)
    return _RULES[key]


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(float(str(value).strip().lower().removesuffix("px")))
    except (TypeError, ValueError):
        return None


class ExtractDoFn(beam.DoFn):
    """Pages → documents; counts pages, images and paragraphs, isolates each page behind a timeout.

    With `extract.timeout_s` > 0 one long-lived child process per worker extracts the pages (the config
    travels once, at its start); it is replaced only after a page hung (`timeout`) or it died. Item errors
    and timeouts are counted drops, but they go through a `FailureBreaker`: an error that is not about the
    page (ImportError...) or one outcome on nearly every page (every page timing out included) stops the run.
    `extract_fn` must be a module-level function (the child imports it by name).
    """

    def __init__(self, config: dict[str, Any], extract_fn: Callable[[Page, dict[str, Any]], Extracted] = extract_page):
        load_extract_dependencies()  # in the driver, before the pipeline runs
        self.config = config
        self.extract_fn = extract_fn
        self.timeout_s = float(config["extract"]["timeout_s"])
        self.audit = bool(config["output"]["audit_drops"])
        self.counts = StageCounters(STAGE)
        self.worker: IsolatedWorker | None = None
        self.breaker: FailureBreaker | None = None

    def setup(self) -> None:
        load_extract_dependencies()
        self.breaker = FailureBreaker.from_config(STAGE, self.config["runner"]["circuit_breaker"])
        if self.timeout_s > 0:
            self.worker = IsolatedWorker(partial(self.extract_fn, config=self.config), self.timeout_s,
                                         init=load_extract_dependencies)
            self.worker.start()

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def extract(self, page: Page) -> Extracted:
        """One page's outcome; errors and timeouts become drops unless the breaker says they are systematic."""
        try:
            if self.worker is not None:
                result = self.worker.call(page)
            else:
                result = self.extract_fn(page, self.config)
        except WorkerTimeout as err:
            log.warning("m3w extract: timed out after %.0fs on %s (%s)", self.timeout_s, page.url, page.source)
            self.breaker.failed(err)
            return Extracted(drop=Drop("timeout"))
        except Exception as err:  # one bad page never stops the run; a broken run does (the breaker)
            log.warning("m3w extract: %s on %s (%s): %s", type(err).__name__, page.url, page.source, err)
            self.breaker.failed(err)
            return Extracted(drop=Drop("extraction_error", f"{type(err).__name__}: {err}"[:200]))
        self.breaker.succeeded()
        return result

    def process(self, page: Page):
        self.counts.seen("pages")
        result = self.extract(page)
        if result.decoding and result.decoding not in ("header", "meta", "utf-8", "bom"):
            self.counts.note("pages", f"decoding_{result.decoding}")
        self.counts.seen("images", result.images_in)
        for reason, n in sorted(result.image_drops.items()):
            self.counts.dropped("images", reason, n)
        if result.drop is not None:
            kept_images = result.images_in - sum(result.image_drops.values())
            self.counts.dropped("images", f"page_{result.drop.reason}", kept_images)
            self.counts.dropped("pages", result.drop.reason)
            if self.audit:
                yield beam.pvalue.TaggedOutput(DROPPED_TAG, (STAGE, result.drop.reason, result.drop.detail, page.url))
            return
        self.counts.note("paragraphs", "unlocated", result.paragraphs_unlocated)
        for kind, n in sorted(result.items_moved.items()):
            self.counts.note(kind, "moved_to_dom_order", n)
        self.counts.kept("images", len(result.document.images))
        self.counts.kept("pages")
        yield result.document


class ExtractDocuments(beam.PTransform):
    """Crawl files → documents: read (`ReadCrawl`) → cheap gate (`GatePages`) → extract (`ExtractDoFn`).

    Args:
        inputs: crawl files or globs (WARC/ARC, `.html(.gz)`), on any Beam filesystem.
        config: the run's config; each step reads its own sections.
        audit_dir: where dropped pages are listed when `output.audit_drops` is on (None: nowhere).
    """

    def __init__(self, inputs: list[str], config: dict[str, Any], audit_dir: str | None = None):
        super().__init__()
        self.inputs, self.config, self.audit_dir = list(inputs), config, audit_dir

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        pages = pipeline | "Read crawl" >> ReadCrawl(expand_inputs(self.inputs), self.config)
        pages = pages | "Gate" >> GatePages(self.config, self.audit_dir)  # blocklisted, clearly off-language
        results = pages | "Extract" >> beam.ParDo(ExtractDoFn(self.config)).with_outputs(DROPPED_TAG, main="docs")
        if self.audit_dir and self.config["output"]["audit_drops"]:
            results[DROPPED_TAG] | "Audit extract drops" >> WriteDropAudit(self.audit_dir)
        return results.docs
