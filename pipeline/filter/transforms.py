"""Document filtering on Beam: the cheap pre-extraction gate on pages, and the language/safety/quality filters.

- `GatePages` (stage `gate`, unit pages): before trafilatura runs, drops pages whose URL is blocklisted
  (`url_blocklist`) and pages whose rough plain text is clearly not in a target language (`language`).
- `FilterDocuments` (stage `filter`, units documents and images; stage `filter_paragraphs`, unit
  paragraphs): per document, in this order, language ID (metadata `language`, `language_score`), safety
  (`url_blocklist`, `flagged_words`, `spam`), OBELICS's paragraph rules (failing paragraphs are removed,
  the document stays), then the document quality rules (OBELICS, Gopher, FineWeb). Kept documents carry
  the scores the rules measured in `metadata["filter_scores"]`. A rule with no cut-off for an item's language
  (the `by_language` tables) judges nothing and is counted as info `skipped_<rule>_<lang>` of the item's unit
  (`filter|documents|info|skipped_obelics_common_words_de`), so the report says which rules did not apply to which
  languages; it is no drop, so the balance is untouched.

The rules themselves are `TextFilter`s in `filters/` (one `filter(TextItem) -> Verdict` each); `DocumentFilters`
composes them without Beam (tests, benchmarks), and the DoFns only count and route. Models and lists load once
per worker in `setup()`. Every unit takes only its typed config sections (`FilterSettings`, the `filters`
section, and its subsections), built by the jobs at the edge. Given an `audit_dir` (the jobs pass one when
`output.audit_drops` is on), dropped pages, documents and paragraphs are written with their reason as JSON lines
under `<audit_dir>/dropped/` (`gate-*`, `filter-*`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from dataclasses import dataclass, field

import apache_beam as beam
from pydantic import NonNegativeInt, PositiveInt

from filters.base import TextItem, Verdict
from filters.calibration import CalibrationSettings
from filters.language import LanguageSettings
from filters.safety import SafetySettings
from filters.text_quality import DocumentSettings, ParagraphSettings
from pipeline.config import Section, Share
from pipeline.core.accounting import DROPPED_TAG, StageCounters
from pipeline.core.failures import BreakerSettings, FailureBreaker
from pipeline.core.stages import names
from pipeline.io.documents import WriteDropAudit
from pipeline.read.crawl import Page
from schemas.document import Document, Node

log = logging.getLogger(__name__)

GATE_STAGE = "gate"
FILTER_STAGE = "filter"
PARAGRAPH_STAGE = "filter_paragraphs"
FILTER_STAGES = [name for name in names("filter") if name != GATE_STAGE]


def _detail(verdict: Verdict) -> str:
    return json.dumps(verdict.scores, sort_keys=True, ensure_ascii=False, default=str)


# -- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateSettings(Section):
    """`filters.gate`: which cheap checks run on raw pages, and how much text the language check reads."""

    enabled: bool
    url_blocklist: bool
    language: bool
    min_target_score: Share
    min_text_chars: NonNegativeInt
    max_text_chars: PositiveInt


@dataclass(frozen=True)
class FilterSettings(Section):
    """The `filters` section: the gate's and the document filters' rules, each group in its own subsection."""

    language: LanguageSettings
    gate: GateSettings
    safety: SafetySettings
    paragraph: ParagraphSettings
    document: DocumentSettings
    calibration: CalibrationSettings


# -- the gate ----------------------------------------------------------------------------------------


class PageGate:
    """URL blocklist and cheap language check on a raw page (pure; loads its model and lists on creation).

    `max_replacement_ratio` is `read.max_replacement_ratio`: a page that decodes worse is not judged here
    (extraction drops it as `undecodable`)."""

    def __init__(self, *, filters: FilterSettings, max_replacement_ratio: float):
        from filters.language import LanguageRule
        from filters.safety import UrlBlocklist

        gate, language, block = filters.gate, filters.language, filters.safety.url_blocklist
        self.max_replacement = max_replacement_ratio
        self.min_chars = gate.min_text_chars
        self.max_chars = gate.max_text_chars
        self.blocklist = UrlBlocklist(block) if gate.url_blocklist and block.enabled else None
        # Only sure cases are dropped before extraction: the target needs just `min_target_score` here.
        judged = gate.language and language.enabled and language.languages
        self.rule = LanguageRule(dataclasses.replace(language, threshold=gate.min_target_score)) if judged else None

    def __call__(self, page: Page) -> Verdict:
        from filters.language import page_text
        from pipeline.read.decode import decode_html, replacement_ratio

        if self.blocklist is not None:
            verdict = self.blocklist(TextItem(text="", url=page.url))
            if not verdict.keep:
                return verdict
        if self.rule is None:
            return Verdict.ok()
        html_text, _ = decode_html(page.body, page.charset)
        if replacement_ratio(html_text) > self.max_replacement:
            return Verdict.ok(gate="undecodable")  # extraction drops it as `undecodable`, the precise reason
        text = page_text(html_text, self.max_chars)
        if len(text) < self.min_chars:
            return Verdict.ok(gate="too_little_text")
        return self.rule(TextItem(text=text, url=page.url))


class GateDoFn(beam.DoFn):
    def __init__(self, *, filters: FilterSettings, max_replacement_ratio: float, circuit_breaker: BreakerSettings,
                 audit: bool = False):
        self.filters = filters
        self.max_replacement_ratio = max_replacement_ratio
        self.audit = audit
        self.counts = StageCounters(GATE_STAGE)
        self.breaker = FailureBreaker.from_config(GATE_STAGE, circuit_breaker)
        self.gate: PageGate | None = None

    def setup(self) -> None:
        self.gate = PageGate(filters=self.filters, max_replacement_ratio=self.max_replacement_ratio)

    def process(self, page: Page):
        self.counts.seen("pages")
        try:
            verdict = self.gate(page)
            self.breaker.succeeded()
        except Exception as err:  # a page the gate cannot judge goes on to extraction, which judges it
            self.breaker.failed(err)  # ...unless the gate itself is broken: then the run stops
            log.warning("m3w gate: %s on %s: %s", type(err).__name__, page.url, err)
            self.counts.note("pages", "gate_error")
            verdict = Verdict.ok()
        if verdict.keep:
            if "gate" in verdict.scores:  # kept without a language judgement (too little text, undecodable)
                self.counts.note("pages", f"not_judged_{verdict.scores['gate']}")
            self.counts.kept("pages")
            yield page
            return
        self.counts.dropped("pages", verdict.reason)
        if self.audit:
            yield beam.pvalue.TaggedOutput(DROPPED_TAG, (GATE_STAGE, verdict.reason, _detail(verdict), page.url))


class GatePages(beam.PTransform):
    """Pages → the pages worth extracting (stage `gate`); a no-op when `filters.gate.enabled` is false.

    Args:
        filters: the `filters` section (the gate reads `gate`, `language` and `safety.url_blocklist`).
        max_replacement_ratio: `read.max_replacement_ratio` (pages decoding worse are left to extraction).
        circuit_breaker: `runner.circuit_breaker`.
        audit_dir: where dropped pages are listed (None: nowhere).
    """

    def __init__(self, *, filters: FilterSettings, max_replacement_ratio: float, circuit_breaker: BreakerSettings,
                 audit_dir: str | None = None):
        super().__init__()
        self.filters = filters
        self.max_replacement_ratio = max_replacement_ratio
        self.circuit_breaker = circuit_breaker
        self.audit_dir = audit_dir

    def expand(self, pages):
        if not self.filters.gate.enabled:
            return pages
        gate = GateDoFn(filters=self.filters, max_replacement_ratio=self.max_replacement_ratio,
                        circuit_breaker=self.circuit_breaker, audit=self.audit_dir is not None)
        results = pages | "Gate pages" >> beam.ParDo(gate).with_outputs(DROPPED_TAG, main="pages")
        if self.audit_dir is not None:
            results[DROPPED_TAG] | "Audit gate drops" >> WriteDropAudit(self.audit_dir, "gate")
        return results.pages


# -- the document filters ----------------------------------------------------------------------------


@dataclass
class Filtered:
    """What the filters did to one document."""

    document: Document | None = None  # the (paragraph-cleaned) document, None when dropped
    verdict: Verdict = field(default_factory=Verdict.ok)  # the dropping verdict, or the last kept one
    examined: Document | None = None  # the working copy the rules saw (language labelled), kept or not
    paragraphs_in: int = 0
    paragraph_drops: list[tuple[str, str, Verdict]] = field(default_factory=list)  # (reason, text, verdict)
    # Rules that could not judge the document or one of its paragraphs, by `skipped_name` (no cut-off for its language).
    document_skips: Counter[str] = field(default_factory=Counter)
    paragraph_skips: Counter[str] = field(default_factory=Counter)


def skipped_name(rule: str, lang: str) -> str:
    """The info counter of a rule that did not judge an item of language `lang`: `skipped_obelics_common_words_de`."""
    return f"skipped_{rule}_{lang or 'none'}"


class DocumentFilters:
    """language → safety → paragraph rules → document quality, on one document (pure; no Beam).

    Each rule counts its own outcomes (`rule.stats`); `rule_stats()` gathers them by rule."""

    def __init__(self, filters: FilterSettings):
        from filters.language import LanguageRule
        from filters.safety import TextSafety, UrlBlocklist
        from filters.text_quality import DocumentQuality, ParagraphRules

        safety = filters.safety
        self.language = LanguageRule(filters.language)  # with the section disabled it only labels
        self.blocklist = UrlBlocklist(safety.url_blocklist) if safety.url_blocklist.enabled else None
        self.text_safety = TextSafety(safety.flagged_words, safety.spam)
        self.paragraph_rules = ParagraphRules(filters.paragraph) if filters.paragraph.enabled else None
        self.quality = DocumentQuality(filters.document)

    def rule_stats(self) -> dict[str, Counter[str]]:
        """Kept and dropped (by reason) per rule, over every item this instance judged."""
        rules = (self.language, self.blocklist, self.text_safety, self.paragraph_rules, self.quality)
        return {type(rule).__name__: Counter(rule.stats) for rule in rules if rule is not None}

    def __call__(self, original: Document) -> Filtered:
        """Never changes `original` (Beam elements are immutable): the rules work on a copy."""
        doc = dataclasses.replace(original, nodes=list(original.nodes), metadata=dict(original.metadata))
        # Language, on the whole text; the label is stored even when language filtering is off.
        verdict = self.language(TextItem(text=doc.text, url=doc.url, n_images=len(doc.images)))
        lang = verdict.scores["language"]
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = verdict.scores["language_score"]
        if "language_script" in verdict.scores:
            doc.metadata["language_script"] = verdict.scores["language_script"]
        if not verdict.keep:
            return Filtered(verdict=verdict, examined=doc)
        # Safety, on the whole text before any cleaning: a page full of profanity is dropped, not tidied up.
        item = TextItem(text=doc.text, lang=lang, url=doc.url, n_images=len(doc.images))
        if self.blocklist is not None:
            verdict = self.blocklist(item)
            if not verdict.keep:
                return Filtered(verdict=verdict, examined=doc)
        verdict = self.text_safety(item)
        if not verdict.keep:
            return Filtered(verdict=verdict, examined=doc)
        scores = dict(verdict.scores)
        out = Filtered(examined=doc)
        if self.paragraph_rules is not None:
            self._clean_paragraphs(doc, lang, out)
        verdict = self.quality(TextItem(text=doc.text, lang=lang, url=doc.url, n_images=len(doc.images)))
        out.verdict = verdict
        out.document_skips.update(skipped_name(rule, lang) for rule in verdict.skipped)
        if not verdict.keep:
            return out
        scores.update(verdict.scores)
        doc.metadata["filter_scores"] = scores
        out.document = doc
        return out

    def _clean_paragraphs(self, doc: Document, lang: str, out: Filtered) -> None:
        nodes: list[Node] = []
        for node in doc.nodes:
            if node.image is not None:
                nodes.append(node)
                continue
            kept = []
            for paragraph in (p for p in (node.text or "").split("\n\n") if p.strip()):
                out.paragraphs_in += 1
                verdict = self.paragraph_rules(TextItem(text=paragraph, lang=lang, url=doc.url))
                out.paragraph_skips.update(skipped_name(rule, lang) for rule in verdict.skipped)
                if verdict.keep:
                    kept.append(paragraph)
                else:
                    out.paragraph_drops.append((verdict.reason, paragraph, verdict))
            if kept:
                nodes.append(Node(text="\n\n".join(kept)))
        doc.nodes = nodes
        doc.normalize_nodes()


class FilterDoFn(beam.DoFn):
    """Documents → kept documents; every document, image and paragraph counted by reason."""

    def __init__(self, *, filters: FilterSettings, circuit_breaker: BreakerSettings, audit: bool = False):
        self.settings = filters
        self.audit = audit
        self.counts = StageCounters(FILTER_STAGE)
        self.paragraph_counts = StageCounters(PARAGRAPH_STAGE)
        self.breaker = FailureBreaker.from_config(FILTER_STAGE, circuit_breaker)
        self.filters: DocumentFilters | None = None

    def setup(self) -> None:
        self.filters = DocumentFilters(self.settings)

    def process(self, doc: Document):
        images = len(doc.images)
        self.counts.seen("documents")
        self.counts.seen("images", images)
        try:
            result = self.filters(doc)
            self.breaker.succeeded()
        except Exception as err:  # one bad document never stops the run: a counted drop
            self.breaker.failed(err)  # a filter that fails on (nearly) every document does
            log.warning("m3w filter: %s on %s: %s", type(err).__name__, doc.url, err)
            result = Filtered(verdict=Verdict.drop("filter_error", error=f"{type(err).__name__}: {err}"[:300]))
        self.paragraph_counts.seen("paragraphs", result.paragraphs_in)
        self.paragraph_counts.kept("paragraphs", result.paragraphs_in - len(result.paragraph_drops))
        for reason, n in sorted(Counter(reason for reason, _, _ in result.paragraph_drops).items()):
            self.paragraph_counts.dropped("paragraphs", reason, n)
        for name, n in sorted(result.paragraph_skips.items()):
            self.paragraph_counts.note("paragraphs", name, n)
        for name, n in sorted(result.document_skips.items()):
            self.counts.note("documents", name, n)
        if self.audit:
            for reason, text, verdict in result.paragraph_drops:
                item = {"doc_id": doc.doc_id, "url": doc.url, "paragraph": text}
                yield beam.pvalue.TaggedOutput(DROPPED_TAG, (PARAGRAPH_STAGE, reason, _detail(verdict), item))
        if result.document is None:
            reason = result.verdict.reason
            self.counts.dropped("documents", reason)
            self.counts.dropped("images", reason, images)
            if self.audit:
                examined = result.examined or doc
                yield beam.pvalue.TaggedOutput(DROPPED_TAG, (FILTER_STAGE, reason, _detail(result.verdict), examined))
            return
        self.counts.kept("documents")
        self.counts.kept("images", images)
        yield result.document


class FilterDocuments(beam.PTransform):
    """Documents → documents that pass the language, safety and quality filters (paragraphs cleaned).

    Args:
        filters: the `filters` section.
        circuit_breaker: `runner.circuit_breaker`.
        audit_dir: where dropped documents and paragraphs are listed (None: nowhere).
    """

    def __init__(self, *, filters: FilterSettings, circuit_breaker: BreakerSettings, audit_dir: str | None = None):
        super().__init__()
        self.filters = filters
        self.circuit_breaker = circuit_breaker
        self.audit_dir = audit_dir

    def expand(self, docs):
        do_fn = FilterDoFn(filters=self.filters, circuit_breaker=self.circuit_breaker, audit=self.audit_dir is not None)
        results = docs | "Filter documents" >> beam.ParDo(do_fn).with_outputs(DROPPED_TAG, main="docs")
        if self.audit_dir is not None:
            results[DROPPED_TAG] | "Audit filter drops" >> WriteDropAudit(self.audit_dir, "filter")
        return results.docs


# -- the `m3w filter` job ----------------------------------------------------------------------------
