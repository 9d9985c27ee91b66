"""Per-language cut-offs for the rules whose statistic depends on the language, placed in each language's own
distribution where the reference language's (English's, OBELICS's and Gopher's published values) sit in its own.

The share of a German document's words among German's 50,000 most frequent is lower than an English document's
among English's (compounds), so one cut-off for both drops half of all German writing. `calibrate` measures every
such statistic over the items its rule judges in documents of one language and places that language's cut-off:

- at the same quantile of its distribution as the reference cut-off sits in the reference distribution, where
  both samples hold at least `min_tail_items` items beyond it (the quantile can be estimated from both);
- otherwise (a tail too thin for a quantile: Gopher's bounds and OBELICS's document cut-offs lie beyond (nearly)
  every real reference page) at the same distance from the median in units of the interquartile range. (The
  spread on the cut-off's side alone follows a skewed distribution more closely, but on 38 German documents its
  cut-offs varied about twice as much under resampling: docs/filters.md.)

Document statistics are measured on the text the document rules see: after the paragraph rules, with the
language's own paragraph cut-offs. The method and its measurements are in docs/filters.md ("Calibration").
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt

from filters.base import TextItem
from filters.text_quality import (
    DocumentSettings,
    ParagraphRules,
    ParagraphSettings,
    WordShares,
    gopher_word_measures,
    share_in,
    words_of,
)
from filters.wordlists import common_words, gopher_stopwords, stopwords
from pipeline.config import Section, Share

Table = Literal["paragraph", "obelics", "gopher_quality"]


@dataclass(frozen=True)
class CalibrationSettings(Section):
    """`filters.calibration`: how `m3w calibrate` places a language's cut-offs (docs/filters.md)."""

    reference_language: str
    min_tail_items: PositiveInt
    min_documents: NonNegativeInt
    min_paragraphs: NonNegativeInt


@dataclass(frozen=True)
class Cutoff:
    """One language-dependent cut-off: the `by_language` table it lives in, its key, the rule it drives, whether
    the rule drops items below (`min`) or above (`max`) it, and the range of its statistic."""

    table: Table
    key: str
    rule: str
    side: Literal["min", "max"]
    integer: bool = False
    upper: float | None = 1.0  # the statistic's largest value (None: unbounded); its smallest is 0

    @property
    def name(self) -> str:
        return f"{self.table}.{self.key}"


CUTOFFS = (
    Cutoff("paragraph", "min_stopwords", "obelics_par_stopwords", "min"),
    Cutoff("paragraph", "min_common_words", "obelics_par_common_words", "min"),
    Cutoff("obelics", "min_stopwords", "obelics_stopwords", "min"),
    Cutoff("obelics", "min_common_words", "obelics_common_words", "min"),
    Cutoff("gopher_quality", "min_stop_words", "gopher_stop_words", "min", integer=True, upper=None),
    Cutoff("gopher_quality", "min_avg_word_length", "gopher_mean_word_length", "min", upper=None),
    Cutoff("gopher_quality", "max_avg_word_length", "gopher_mean_word_length", "max", upper=None),
)
LANGUAGE_RULES = tuple(dict.fromkeys(c.rule for c in CUTOFFS))  # every rule judged by per-language cut-offs


def half_of(url: str) -> Literal["calibration", "evaluation"]:
    """Which half of a reference corpus a document belongs to, by a hash of its URL: cut-offs are calibrated on one
    half and checked on the other, so they are not judged on the pages that set them."""
    return "calibration" if hashlib.sha256(url.encode("utf-8")).digest()[0] % 2 == 0 else "evaluation"


@dataclass(frozen=True)
class Position(Section):
    """Where a cut-off sits in one language's distribution of its statistic (an entry of a reference file)."""

    cutoff: float
    dropped: Share  # share of the items the cut-off drops: the quantile it sits at
    median: float
    iqr: NonNegativeFloat  # interquartile range
    items: PositiveInt

    @classmethod
    def of(cls, cutoff: Cutoff, value: float, values: np.ndarray) -> Position:
        q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
        dropped = np.mean(values < value) if cutoff.side == "min" else np.mean(values > value)
        return cls(float(value), round(float(dropped), 6), round(float(median), 6), round(float(q3 - q1), 6),
                   len(values))


@dataclass
class Sample:
    """One language's documents as the rules see them: the paragraphs, and each document's paragraphs."""

    language: str
    documents: list[list[str]]  # per document, its text paragraphs

    @classmethod
    def of(cls, language: str, texts: Iterable[str]) -> Sample:
        """`texts`: each document's text, paragraphs separated by blank lines (as `Document.text` joins them)."""
        return cls(language, [[p for p in text.split("\n\n") if p.strip()] for text in texts])

    @property
    def paragraphs(self) -> int:
        return sum(len(doc) for doc in self.documents)


def paragraph_values(sample: Sample, paragraph: ParagraphSettings) -> dict[str, np.ndarray]:
    """The paragraph cut-offs' statistics over the paragraphs their rules judge (inside the word-count bounds); none
    for a statistic whose word list the language lacks."""
    lang, values = sample.language, {}
    lists = {"min_stopwords": stopwords(lang), "min_common_words": common_words(lang)}
    counted = [words for doc in sample.documents for words in map(words_of, doc)
               if _within(len(words), paragraph.min_words, paragraph.max_words)]
    for key, vocabulary in lists.items():
        if vocabulary is not None:
            values[f"paragraph.{key}"] = np.array([share_in(words, vocabulary) for words in counted])
    return values


def document_values(sample: Sample, paragraph: ParagraphSettings, shares: WordShares | None,
                    document: DocumentSettings) -> dict[str, np.ndarray]:
    """The document cut-offs' statistics on each document's text after the paragraph rules (with `shares`, the
    language's paragraph cut-offs), over the documents each rule judges (inside its group's word-count bounds)."""
    lang = sample.language
    table = {lang: shares} if shares is not None else {}
    rules = ParagraphRules(dataclasses.replace(paragraph, by_language=table)) if paragraph.enabled else None
    obelics, gopher = document.obelics, document.gopher_quality
    lists = {"min_stopwords": stopwords(lang), "min_common_words": common_words(lang)}
    measured = [f"obelics.{key}" for key, vocabulary in lists.items() if vocabulary is not None]
    measured += ["gopher_quality.min_avg_word_length", "gopher_quality.max_avg_word_length"]
    measured += ["gopher_quality.min_stop_words"] if gopher_stopwords(lang) is not None else []
    values: dict[str, list[float]] = {name: [] for name in measured}
    for doc in sample.documents:
        kept = [p for p in doc if rules is None or rules(TextItem(text=p, lang=lang)).keep]
        text = "\n\n".join(kept)
        words = words_of(text)
        if not words:
            continue
        if _within(len(words), obelics.min_words, obelics.max_words):
            for key, vocabulary in lists.items():
                if vocabulary is not None:
                    values[f"obelics.{key}"].append(share_in(words, vocabulary))
        stops, mean_length, counted = gopher_word_measures(text, lang, document.tokenizer)
        if counted and _within(counted, gopher.min_doc_words, gopher.max_doc_words):
            values["gopher_quality.min_avg_word_length"].append(mean_length)
            values["gopher_quality.max_avg_word_length"].append(mean_length)
            if "gopher_quality.min_stop_words" in values:
                values["gopher_quality.min_stop_words"].append(stops)
    return {name: np.array(found, dtype=float) for name, found in values.items()}


def _within(count: int, low: int | None, high: int | None) -> bool:
    return (low is None or count >= low) and (high is None or count <= high)


@dataclass(frozen=True)
class Placed:
    """A language's value for one cut-off, and how it was found (or why there is none)."""

    value: float | None
    method: str
    position: Position | None  # where the value sits in the language's own sample


def place(cutoff: Cutoff, reference: Position | None, values: np.ndarray | None, min_items: int,
          min_tail_items: int) -> Placed:
    """The language's value for `cutoff`, placed where `reference` sits in the reference distribution."""
    if reference is None:
        return Placed(None, "no reference cut-off (null for the reference language)", None)
    if values is None:
        return Placed(None, "no word list for the language", None)
    if len(values) < max(min_items, 1):
        return Placed(None, f"{len(values)} items, fewer than {min_items}", None)
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    tail = reference.dropped
    if tail * reference.items >= min_tail_items and tail * len(values) >= min_tail_items:
        value, method = float(np.quantile(values, tail if cutoff.side == "min" else 1 - tail)), "quantile"
    else:
        if reference.iqr > 0 and q3 > q1:
            scale, method = (q3 - q1) / reference.iqr, "median and interquartile range"
        else:  # a saturated count (half the items or more at one value): no spread to scale by, the median's shift
            scale, method = 1.0, "median shift"
        value = float(median + (reference.cutoff - reference.median) * scale)
    value = min(max(value, 0.0), cutoff.upper if cutoff.upper is not None else math.inf)
    value = float(math.floor(value + 0.5)) if cutoff.integer else round(value, 3)
    return Placed(value, method, Position.of(cutoff, value, values))


@dataclass
class Calibration:
    """A language's cut-offs and how each was placed."""

    language: str
    documents: int
    paragraphs: int
    placed: dict[str, Placed]

    def entries(self) -> dict[Table, dict[str, float | int | None]]:
        """The `by_language` entries of the language, per table: the YAML `m3w calibrate` writes."""
        out: dict[Table, dict[str, float | int | None]] = {}
        for cutoff in CUTOFFS:
            value = self.placed[cutoff.name].value
            out.setdefault(cutoff.table, {})[cutoff.key] = int(value) if cutoff.integer and value is not None \
                else value
        return out


def configured(tables: Mapping[Table, Mapping[str, object]], lang: str) -> dict[str, float | None]:
    """The cut-offs the config gives `lang` (None where it has no entry or a null), by cut-off name."""
    out: dict[str, float | None] = {}
    for cutoff in CUTOFFS:
        entry = tables[cutoff.table].get(lang)
        out[cutoff.name] = None if entry is None else getattr(entry, cutoff.key)
    return out


def by_language_tables(paragraph: ParagraphSettings, document: DocumentSettings) -> dict[Table, Mapping]:
    return {"paragraph": paragraph.by_language, "obelics": document.obelics.by_language,
            "gopher_quality": document.gopher_quality.by_language}


def measure_reference(sample: Sample, paragraph: ParagraphSettings, document: DocumentSettings
                      ) -> dict[str, Position]:
    """Where the reference language's configured cut-offs sit in its own sample (what `calibrate` places the others
    against); a cut-off that is null, or whose statistic the sample lacks, has no position."""
    cutoffs = configured(by_language_tables(paragraph, document), sample.language)
    shares = paragraph.by_language.get(sample.language)
    values = {**paragraph_values(sample, paragraph), **document_values(sample, paragraph, shares, document)}
    return {c.name: Position.of(c, cutoffs[c.name], values[c.name]) for c in CUTOFFS
            if cutoffs[c.name] is not None and len(values.get(c.name, ())) > 0}


def calibrate(sample: Sample, reference: Mapping[str, Position], paragraph: ParagraphSettings,
              document: DocumentSettings, settings: CalibrationSettings) -> Calibration:
    """`sample`'s language's cut-offs: its paragraph cut-offs first, then, on the documents those leave, its document
    cut-offs. A level with fewer items than `min_paragraphs` or `min_documents` gets none (null)."""
    placed: dict[str, Placed] = {}
    values = paragraph_values(sample, paragraph)
    for cutoff in CUTOFFS[:2]:
        placed[cutoff.name] = place(cutoff, reference.get(cutoff.name), values.get(cutoff.name),
                                    settings.min_paragraphs, settings.min_tail_items)
    shares = WordShares(placed["paragraph.min_stopwords"].value, placed["paragraph.min_common_words"].value)
    values = document_values(sample, paragraph, shares, document)
    for cutoff in CUTOFFS[2:]:
        placed[cutoff.name] = place(cutoff, reference.get(cutoff.name), values.get(cutoff.name),
                                    settings.min_documents, settings.min_tail_items)
    return Calibration(sample.language, len(sample.documents), sample.paragraphs, placed)
