"""Page → interleaved document: trafilatura's main content, with each image kept where it stands.

`extract_page` is a pure function (bytes in, `Document` or `Drop` out, plus image drop counts) so
it can be tested on its own and run in an isolated process with a per-page timeout (`ExtractDoFn`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from filters.image_nodes import ImageNodeRules
from pipeline.accounting import DROPPED_TAG, Drop, StageCounters
from pipeline.decode import decode_html, replacement_ratio
from pipeline.html_images import mark_images, marker_index, parse_html, robots_opt_out
from pipeline.isolate import IsolatedWorker, WorkerTimeout
from pipeline.read import Page
from schemas.document import Document, Image, Node, make_doc_id

log = logging.getLogger(__name__)

STAGE = "extract"
# trafilatura output tags that end a paragraph, and those that end a line inside one.
_BLOCKS = {"p", "head", "list", "quote", "table", "code", "div", "main", "doc", "body"}
_LINES = {"item", "row", "lb"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_IMG_TAG = re.compile(rb"<img[\s>/]", re.I)


@dataclass
class Extracted:
    """What extraction produced for one page: a document or a drop, and what happened to its images."""

    document: Document | None = None
    drop: Drop | None = None
    images_in: int = 0
    image_drops: Counter = field(default_factory=Counter)
    decoding: str = ""


def has_img_tag(body: bytes) -> bool:
    return _IMG_TAG.search(body) is not None


def page_title(tree) -> str:
    title = tree.find(".//title")
    return " ".join(title.text_content().split()) if title is not None else ""


class _Collector:
    """Walks trafilatura's XML body in document order into text and image nodes."""

    def __init__(self):
        self.nodes: list[tuple[str, Any]] = []  # ("text", paragraphs) | ("image", marker index)
        self.paragraphs: list[str] = []
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
            self.paragraphs.append("\n".join(self.lines))
        self.lines = []

    def image(self, index: int) -> None:
        self.end_paragraph()
        if self.paragraphs:
            self.nodes.append(("text", self.paragraphs))
        self.paragraphs = []
        self.nodes.append(("image", index))

    def walk(self, element) -> None:
        if element.tag == "graphic":
            index = marker_index(element.get("src"))
            if index is not None:
                self.image(index)
            self.add(element.tail)
            return
        self.add(element.text)
        for child in element:
            self.walk(child)
            if child.tag in _BLOCKS:
                self.end_paragraph()
            elif child.tag in _LINES:
                self.end_line()
            if child.tag != "graphic":
                self.add(child.tail)
        if element.tag in _BLOCKS:
            self.end_paragraph()

    def finish(self) -> list[tuple[str, Any]]:
        self.end_paragraph()
        if self.paragraphs:
            self.nodes.append(("text", self.paragraphs))
        return self.nodes


def extract_page(page: Page, config: dict[str, Any]) -> Extracted:
    """Decode, parse, extract the main content with trafilatura and rebuild it as ordered nodes."""
    import trafilatura

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
    result = trafilatura.bare_extraction(
        tree,
        url=page.url if page.url.startswith("http") else None,
        include_images=True,
        include_tables=bool(ecfg["include_tables"]),
        include_comments=False,
        favor_precision=bool(ecfg["favor_precision"]),
        fast=bool(ecfg["fast"]),
        with_metadata=False,
        deduplicate=False,
    )
    body = getattr(result, "body", None)
    if body is None:
        return Extracted(drop=Drop("extraction_empty"), decoding=how)
    collector = _Collector()
    collector.walk(body)
    rules = ImageNodeRules(config["image_nodes"])
    out = Extracted(decoding=how)
    nodes: list[Node] = []
    for kind, value in collector.finish():
        if kind == "text":
            nodes.append(Node(text="\n\n".join(value)))
            continue
        out.images_in += 1
        candidate = candidates[value] if value < len(candidates) else None
        if candidate is None:
            out.image_drops["unresolved"] += 1
            continue
        verdict = rules(candidate.url, candidate.width, candidate.height)
        if not verdict.keep:
            out.image_drops[verdict.reason] += 1
            continue
        nodes.append(
            Node(
                image=Image(
                    url=candidate.url,
                    alt=candidate.alt,
                    caption=candidate.caption,
                    title=candidate.title,
                    width=_int_or_none(candidate.width),
                    height=_int_or_none(candidate.height),
                )
            )
        )
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


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(float(str(value).strip().lower().removesuffix("px")))
    except (TypeError, ValueError):
        return None


def _extract_in_worker(page: Page, config: dict[str, Any]) -> Extracted:
    return extract_page(page, config)


class ExtractDoFn(beam.DoFn):
    """Pages → documents; counts pages and images, isolates each page behind a timeout."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.timeout_s = float(config["extract"]["timeout_s"])
        self.audit = bool(config["output"]["audit_drops"])
        self.counts = StageCounters(STAGE)
        self.worker: IsolatedWorker | None = None

    def setup(self) -> None:
        if self.timeout_s > 0:
            self.worker = IsolatedWorker(_extract_in_worker, self.timeout_s)

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def process(self, page: Page):
        self.counts.seen("pages")
        try:
            if self.worker is not None:
                result = self.worker.call(page, self.config)
            else:
                result = extract_page(page, self.config)
        except WorkerTimeout:
            log.warning("m3w extract: timed out after %.0fs on %s (%s)", self.timeout_s, page.url, page.source)
            result = Extracted(drop=Drop("timeout"))
        except Exception as err:  # one bad page never stops the run
            log.warning("m3w extract: %s on %s (%s): %s", type(err).__name__, page.url, page.source, err)
            result = Extracted(drop=Drop("extraction_error", str(err)[:200]))
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
        self.counts.kept("images", len(result.document.images))
        self.counts.kept("pages")
        yield result.document
