"""Stage 2 in Beam: crawl files → documents (`ExtractDocuments`), each page behind a per-page timeout.

With `extract.timeout_s` > 0 each worker's `ExtractDoFn` has one long-lived child process (`isolate.py`) that
runs `pages.PageExtractor`; the child imports only what extraction needs (never Beam), gets its settings once
at its start, and each page costs one pickle round trip. A page that hangs is dropped as `timeout` and a fresh
child serves the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import apache_beam as beam

from filters.image_nodes import ImageNodeSettings
from pipeline.core.accounting import DROPPED_TAG, StageCounters
from pipeline.core.failures import BreakerSettings, FailureBreaker
from pipeline.extract.content import load_extract_dependencies
from pipeline.extract.isolate import IsolatedWorker, WorkerTimeout
from pipeline.extract.pages import Extracted, PageExtractor, extract_fields, extract_with
from pipeline.extract.settings import ExtractSettings
from pipeline.filter.transforms import FilterSettings, GatePages
from pipeline.io.documents import WriteDropAudit
from pipeline.read.crawl import Page, ReadCrawl, ReadSettings, expand_inputs
from pipeline.read.images import KeepImages

log = logging.getLogger(__name__)

STAGE = "extract"


class ExtractDoFn(beam.DoFn):
    """Pages → documents; counts pages, images and paragraphs, isolates each page behind a timeout.

    With `extract.timeout_s` > 0 one long-lived child process per worker extracts the pages; it is replaced
    only after a page hung (`timeout`) or it died. Item errors and timeouts are counted drops, but they go
    through a `FailureBreaker`: an error that is not about the page (ImportError...) or one outcome on nearly
    every page (every page timing out included) stops the run.

    Args:
        extract, image_nodes, max_replacement_ratio: what `PageExtractor` takes.
        audit_drops: also emit each dropped page on the `DROPPED_TAG` output.
        circuit_breaker: `runner.circuit_breaker`.
        step: the per-page step, a module-level function (page, extractor) → Extracted (the child imports it
            by name); a test swaps in one that hangs.
    """

    def __init__(self, *, extract: ExtractSettings, image_nodes: ImageNodeSettings, max_replacement_ratio: float,
                 audit_drops: bool, circuit_breaker: BreakerSettings,
                 step: Callable[[Page, PageExtractor], Extracted] = extract_with):
        load_extract_dependencies()  # in the driver, before the pipeline runs
        self.extractor = PageExtractor(extract=extract, image_nodes=image_nodes,
                                       max_replacement_ratio=max_replacement_ratio)
        self.step = step
        self.timeout_s = extract.timeout_s
        self.audit = audit_drops
        self.circuit_breaker = circuit_breaker
        self.counts = StageCounters(STAGE)
        self.worker: IsolatedWorker | None = None
        self.breaker: FailureBreaker | None = None

    def setup(self) -> None:
        load_extract_dependencies()
        self.breaker = FailureBreaker.from_config(STAGE, self.circuit_breaker)
        if self.timeout_s > 0:
            self.worker = IsolatedWorker(partial(extract_fields, step=self.step, extractor=self.extractor),
                                         self.timeout_s, init=load_extract_dependencies)
            self.worker.start()

    def teardown(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def extract(self, page: Page) -> Extracted:
        """One page's outcome; errors and timeouts become drops unless the breaker says they are systematic."""
        try:
            if self.worker is not None:
                result = self.worker.call(vars(page))
            else:
                result = self.step(page, self.extractor)
        except WorkerTimeout as err:
            log.warning("m3w extract: timed out after %.0fs on %s (%s)", self.timeout_s, page.url, page.source)
            self.breaker.failed(err)
            return Extracted(drop="timeout")
        except Exception as err:  # one bad page never stops the run; a broken run does (the breaker)
            log.warning("m3w extract: %s on %s (%s): %s", type(err).__name__, page.url, page.source, err)
            self.breaker.failed(err)
            return Extracted(drop="extraction_error", drop_detail=f"{type(err).__name__}: {err}"[:200])
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
            self.counts.dropped("images", f"page_{result.drop}", kept_images)
            self.counts.dropped("pages", result.drop)
            if self.audit:
                yield beam.pvalue.TaggedOutput(DROPPED_TAG, (STAGE, result.drop, result.drop_detail, page.url))
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
        read, filters, extract, image_nodes: the `read`, `filters` (the gate's), `extract` and `image_nodes`
            sections.
        circuit_breaker: `runner.circuit_breaker`, for every step that turns item errors into drops.
        audit_dir: where dropped pages are listed (None: nowhere; `output.audit_drops` decides at the edge).
        keep_images, archive: keep the crawl's image records and index them (`ReadCrawl`; None: counted, dropped).
    """

    def __init__(self, inputs: list[str], *, read: ReadSettings, filters: FilterSettings, extract: ExtractSettings,
                 image_nodes: ImageNodeSettings, circuit_breaker: BreakerSettings, audit_dir: str | None = None,
                 keep_images: KeepImages | None = None, archive: beam.PTransform | None = None):
        super().__init__()
        self.keep_images, self.archive = keep_images, archive
        self.inputs, self.audit_dir = list(inputs), audit_dir
        self.read, self.filters, self.extract = read, filters, extract
        self.image_nodes, self.circuit_breaker = image_nodes, circuit_breaker

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        pages = pipeline | "Read crawl" >> ReadCrawl(expand_inputs(self.inputs), self.read, self.circuit_breaker,
                                                     self.keep_images, self.archive)
        gate = GatePages(filters=self.filters, max_replacement_ratio=self.read.max_replacement_ratio,
                         circuit_breaker=self.circuit_breaker, audit_dir=self.audit_dir)
        pages = pages | "Gate" >> gate  # blocklisted, clearly off-language
        extract = ExtractDoFn(extract=self.extract, image_nodes=self.image_nodes,
                              max_replacement_ratio=self.read.max_replacement_ratio,
                              audit_drops=self.audit_dir is not None, circuit_breaker=self.circuit_breaker)
        results = pages | "Extract" >> beam.ParDo(extract).with_outputs(DROPPED_TAG, main="docs")
        if self.audit_dir is not None:
            results[DROPPED_TAG] | "Audit extract drops" >> WriteDropAudit(self.audit_dir)
        return results.docs
