"""Text quality rules: OBELICS's paragraph and document rules, Gopher's quality and repetition rules, FineWeb's rules.

- OBELICS (Laurençon et al. 2023): no installable library carries these rules, so they are written here,
  after the paper and its published filtering config (thresholds in `pipeline/defaults.yaml`). Words are
  OBELICS's: whitespace-split, lower-cased, special characters stripped from both ends.
- Gopher (Rae et al. 2021) and FineWeb (Penedo et al. 2024): datatrove's own implementations are called
  (`GopherQualityFilter`, `GopherRepetitionFilter`, `FineWebQualityFilter` on a `datatrove.data.Document`),
  their reasons renamed to m3w's. Their word tokenizer is datatrove's extension point: by default a regex
  one (`filters.document.tokenizer: fast`), or datatrove's own spaCy tokenizers (`datatrove`), which are
  exact to datatrove but cost more than extracting the page.

Every rule is a pure function of the text (plus the document's language); a `None` threshold switches that
one rule off. The rules whose statistic depends on the language (OBELICS's stop-word and common-word shares,
Gopher's word-length bounds and stop-word count) take their cut-offs from the language's own entry of their
section's `by_language` table, calibrated per language (`m3w calibrate`, docs/filters.md); a language without
one is not judged by them, never by another language's cut-off, and the verdict names them (`skipped`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt, Strict

from filters.base import TextFilter, TextItem, Verdict
from filters.wordlists import (
    common_words,
    flagged_words,
    gopher_stopwords,
    normalize_word,
    stopwords,
)
from pipeline.config import Section, Share

log = logging.getLogger(__name__)

_SPECIAL = re.compile(r"[\W\d_]")  # OBELICS's special characters: punctuation, digits, whitespace, symbols, emoji
_PUNCTUATION_TOKENS = re.compile(r"[\w']+|[,;:?!.]")
PUNCTUATION = frozenset(",;:?!.")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_HASH_BASE = np.uint64(1_000_003)


# -- measures (OBELICS's definitions) -----------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """OBELICS's words: split on whitespace, lower-cased, special characters stripped from both ends."""
    words = []
    for token in text.lower().split():
        if not token.isalpha():  # the common case (plain letters) needs no stripping
            token = normalize_word(token)
            if not token:
                continue
        words.append(token)
    return words


def char_repetition_ratio(text: str, n: int) -> float:
    """Share of character n-gram occurrences taken by the √(#distinct) most frequent repeated n-grams.

    The n-grams are counted by a 64-bit polynomial hash of each window (vectorised with numpy, ~10x faster
    than counting the substrings; a collision would need two distinct n-grams of one text to share 64 bits)."""
    count = len(text) - n + 1
    if count <= 0 or n <= 0:
        return 0.0
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            hashes = hashes * _HASH_BASE + codes[j : j + count]
    freqs = np.sort(np.unique(hashes, return_counts=True)[1])[::-1]
    repeated = int(np.count_nonzero(freqs > 1))
    top = min(int(math.sqrt(len(freqs))), repeated)
    return float(freqs[:top].sum()) / count


def word_repetition_ratio(words: list[str], n: int) -> float:
    """Share of word n-gram occurrences whose n-gram occurs more than once."""
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    return sum(f for f in grams.values() if f > 1) / sum(grams.values())


def special_char_ratio(text: str) -> float:
    return len(_SPECIAL.findall(text)) / len(text) if text else 0.0


def share_in(words: list[str], vocabulary: frozenset[str]) -> float:
    return sum(1 for w in words if w in vocabulary) / len(words) if words else 0.0


def flagged_ratio(words: list[str], lang: str) -> float:
    """Flagged words (and flagged multi-word phrases, each counted once) per word."""
    if not words:
        return 0.0
    single, phrases = flagged_words(lang)
    hits = sum(1 for w in words if w in single)
    hits += count_phrases(words, phrases)
    return hits / len(words)


def count_phrases(words: list[str], phrases: Iterable[tuple[str, ...]]) -> int:
    """Occurrences of any of the phrases in the word sequence (overlaps counted)."""
    by_length: dict[int, set[tuple[str, ...]]] = {}
    for phrase in phrases:
        by_length.setdefault(len(phrase), set()).add(phrase)
    hits = 0
    for length, group in by_length.items():
        hits += sum(1 for i in range(len(words) - length + 1) if tuple(words[i : i + length]) in group)
    return hits


def punctuation_ratio(text: str, min_tokens: int = 0) -> float:
    """Share of punctuation marks among word and punctuation tokens; 1.0 (pass) below `min_tokens` tokens."""
    tokens = _PUNCTUATION_TOKENS.findall(text)
    if not tokens:
        return 0.0
    if min_tokens > 0 and len(tokens) < min_tokens:
        return 1.0
    return sum(1 for t in tokens if t in PUNCTUATION) / len(tokens)


def _at_most(value: float, limit: float | None) -> bool:
    return limit is None or value <= limit


def _at_least(value: float, limit: float | None) -> bool:
    return limit is None or value >= limit


# -- settings (thresholds live in pipeline/defaults.yaml; a null threshold switches its rule off) ------

# [n, max share] of Gopher's n-gram rules: a YAML pair of an integer n ≥ 1 and a share.
NGramLimit = Annotated[tuple[PositiveInt, Share], Strict(False)]


@dataclass(frozen=True)
class WordShares(Section):
    """One language's cut-offs of OBELICS's word-list shares (an entry of `filters.paragraph.by_language` or
    `filters.document.obelics.by_language`); null: that rule does not judge the language."""

    min_stopwords: Share | None
    min_common_words: Share | None


@dataclass(frozen=True)
class ObelicsSettings(Section):
    """The thresholds OBELICS's paragraph and document rules share (each of their sections has them all).

    `by_language`: the cut-offs whose statistic depends on the language, per language code (docs/filters.md);
    a language without an entry is not judged by those rules (the stage counts it: `skipped_<rule>_<lang>`)."""

    enabled: bool
    min_words: NonNegativeInt | None
    max_words: NonNegativeInt | None
    char_repetition_n: PositiveInt
    max_char_repetition: Share | None
    word_repetition_n: PositiveInt
    max_word_repetition: Share | None
    max_special_chars: Share | None
    min_punctuation: Share | None
    by_language: dict[str, WordShares]


@dataclass(frozen=True)
class ParagraphSettings(ObelicsSettings):
    """`filters.paragraph`: OBELICS's paragraph rules."""

    max_flagged_words: Share | None
    punctuation_min_tokens: NonNegativeInt


@dataclass(frozen=True)
class ObelicsDocumentSettings(ObelicsSettings):
    """`filters.document.obelics`: OBELICS's document rules."""

    min_images: NonNegativeInt | None
    max_images: NonNegativeInt | None


@dataclass(frozen=True)
class GopherWordLimits(Section):
    """One language's cut-offs of Gopher's word rules (an entry of `filters.document.gopher_quality.by_language`);
    null: that bound does not judge the language."""

    min_stop_words: NonNegativeInt | None
    min_avg_word_length: NonNegativeFloat | None
    max_avg_word_length: NonNegativeFloat | None


@dataclass(frozen=True)
class GopherQualitySettings(Section):
    """`filters.document.gopher_quality`: datatrove's GopherQualityFilter arguments; the word-length bounds and the
    stop-word count per language (`by_language`), like OBELICS's word-list shares."""

    enabled: bool
    min_doc_words: NonNegativeInt | None
    max_doc_words: NonNegativeInt | None
    max_symbol_word_ratio: NonNegativeFloat | None  # per word: may exceed 1
    max_bullet_lines_ratio: Share | None
    max_ellipsis_lines_ratio: Share | None
    max_non_alpha_words_ratio: Share | None
    by_language: dict[str, GopherWordLimits]


@dataclass(frozen=True)
class GopherRepetitionSettings(Section):
    """`filters.document.gopher_repetition`: datatrove's GopherRepetitionFilter arguments."""

    enabled: bool
    dup_line_frac: Share | None
    dup_para_frac: Share | None
    dup_line_char_frac: Share | None
    dup_para_char_frac: Share | None
    top_n_grams: list[NGramLimit] | None
    dup_n_grams: list[NGramLimit] | None


@dataclass(frozen=True)
class FineWebSettings(Section):
    """`filters.document.fineweb`: datatrove's FineWebQualityFilter arguments."""

    enabled: bool
    line_punct_thr: Share | None
    line_punct_exclude_zero: bool
    short_line_thr: Share | None
    short_line_length: NonNegativeInt
    char_duplicates_ratio: Share | None
    new_line_ratio: NonNegativeFloat | None  # per word: may exceed 1


@dataclass(frozen=True)
class DocumentSettings(Section):
    """`filters.document`: the word tokenizer of datatrove's rules, and each group of document rules."""

    tokenizer: Literal["fast", "datatrove"]
    obelics: ObelicsDocumentSettings
    gopher_quality: GopherQualitySettings
    gopher_repetition: GopherRepetitionSettings
    fineweb: FineWebSettings


# -- OBELICS paragraph rules --------------------------------------------------------------------------


class ParagraphRules(TextFilter):
    """OBELICS's node-level rules for one paragraph; the first failing rule names the reason.

    Reasons: obelics_par_word_count, obelics_par_char_repetition, obelics_par_word_repetition,
    obelics_par_special_chars, obelics_par_stopwords, obelics_par_flagged_words, obelics_par_punctuation,
    obelics_par_common_words. The stop-word and common-word rules judge a paragraph only by its language's own
    cut-offs (`by_language`) and word list; without them they skip it (`Verdict.skipped`).
    """

    def __init__(self, settings: ParagraphSettings):
        super().__init__()
        self.settings = settings
        self.shares = language_table(settings.by_language)

    def filter(self, item: TextItem) -> Verdict:
        c, paragraph, lang = self.settings, item.text, item.lang
        words = words_of(paragraph)
        scores: dict[str, Any] = {"words": len(words)}
        if _outside(len(words), c.min_words, c.max_words):
            return Verdict.drop("obelics_par_word_count", **scores)
        flagged = (("flagged_words", lambda: flagged_ratio(words, lang), _at_most, c.max_flagged_words, False),)
        checks = _obelics_checks(paragraph, words, lang, c, self.shares.get(lang), flagged,
                                 lambda: punctuation_ratio(paragraph, c.punctuation_min_tokens))
        return _run_checks("obelics_par_", checks, scores)


def language_table(table: dict[str, Any]) -> dict[str, Any]:
    """A `by_language` table keyed as documents are labelled: ISO 639-1 where a code has one ('deu' → 'de')."""
    from filters.language import iso639_1, normalize_language

    return {iso639_1(normalize_language(code)[0]): entry for code, entry in table.items()}


def _outside(count: int, low: int | None, high: int | None) -> bool:
    return (low is not None and count < low) or (high is not None and count > high)


def _obelics_checks(text: str, words: list[str], lang: str, c: ObelicsSettings, shares: WordShares | None,
                    extra: tuple, punctuation: Callable[[], float]) -> tuple:
    """OBELICS's ratio rules in its order, as (name, measure, passes, limit, per language); `shares` are the
    language's own cut-offs of the word-list rules (None: it has none), `extra` runs after the stop words (the
    paragraph's flagged-word rule), `punctuation` measures the way the caller's level counts it."""
    return (
        ("char_repetition", lambda: char_repetition_ratio(text, c.char_repetition_n), _at_most,
         c.max_char_repetition, False),
        ("word_repetition", lambda: word_repetition_ratio(words, c.word_repetition_n), _at_most,
         c.max_word_repetition, False),
        ("special_chars", lambda: special_char_ratio(text), _at_most, c.max_special_chars, False),
        ("stopwords", lambda: _list_share(words, stopwords(lang)), _at_least, shares and shares.min_stopwords, True),
        *extra,
        ("punctuation", punctuation, _at_least, c.min_punctuation, False),
        ("common_words", lambda: _list_share(words, common_words(lang)), _at_least,
         shares and shares.min_common_words, True),
    )


def _list_share(words: list[str], vocabulary: frozenset[str] | None) -> float | None:
    return None if vocabulary is None else share_in(words, vocabulary)


def _run_checks(prefix: str, checks, scores: dict[str, Any]) -> Verdict:
    """The checks in order up to the first that fails; a per-language check without a cut-off or a word list for
    the item's language is named in `skipped` (a global threshold set to null switches its rule off silently)."""
    skipped: list[str] = []
    for name, measure, passes, limit, per_language in checks:
        value = None if limit is None else measure()
        if value is None:  # switched off, or (per language) no cut-off or word list for this language
            if per_language:
                skipped.append(prefix + name)
            continue
        scores[name] = round(value, 4)
        if not passes(value, limit):
            return Verdict(False, prefix + name, scores, tuple(skipped))
    return Verdict(True, "", scores, tuple(skipped))


# -- OBELICS document rules ---------------------------------------------------------------------------


class ObelicsDocumentRules(TextFilter):
    """OBELICS's document-level rules on the whole text (after the paragraph rules) and the image count.

    Reasons: obelics_image_count, obelics_word_count, obelics_char_repetition, obelics_word_repetition,
    obelics_special_chars, obelics_stopwords, obelics_punctuation, obelics_common_words. (OBELICS's
    document flagged-word rule is the safety filter's `flagged_words`.) The stop-word and common-word rules judge
    by the document language's own cut-offs only, as in `ParagraphRules`.
    """

    def __init__(self, settings: ObelicsDocumentSettings):
        super().__init__()
        self.settings = settings
        self.shares = language_table(settings.by_language)

    def filter(self, item: TextItem) -> Verdict:
        c, text, n_images, lang = self.settings, item.text, item.n_images, item.lang
        scores: dict[str, Any] = {"images": n_images}
        if _outside(n_images, c.min_images, c.max_images):
            return Verdict.drop("obelics_image_count", **scores)
        words = words_of(text)
        scores["words"] = len(words)
        if _outside(len(words), c.min_words, c.max_words):
            return Verdict.drop("obelics_word_count", **scores)
        checks = _obelics_checks(text, words, lang, c, self.shares.get(lang), (), lambda: punctuation_ratio(text))
        return _run_checks("obelics_", checks, scores)


# -- Gopher and FineWeb, through datatrove ------------------------------------------------------------

GOPHER_QUALITY_REASONS = {
    "gopher_short_doc": "gopher_word_count",
    "gopher_long_doc": "gopher_word_count",
    "gopher_below_avg_threshold": "gopher_mean_word_length",
    "gopher_above_avg_threshold": "gopher_mean_word_length",
    "gopher_too_many_hashes": "gopher_hash_ratio",
    "gopher_too_many_ellipsis": "gopher_ellipsis_ratio",
    "gopher_too_many_bullets": "gopher_bullet_lines",
    "gopher_too_many_end_ellipsis": "gopher_ellipsis_lines",
    "gopher_below_alpha_threshold": "gopher_alpha_words",
    "gopher_enough_stop_words": "gopher_stop_words",
}
GOPHER_QUALITY_ORDER = tuple(dict.fromkeys(GOPHER_QUALITY_REASONS.values()))  # the order datatrove checks them in
GOPHER_REPETITION_REASONS = {
    "dup_para_frac": "gopher_dup_paragraphs",
    "dup_para_char_frac": "gopher_dup_paragraph_chars",
    "dup_line_frac": "gopher_dup_lines",
    "dup_line_char_frac": "gopher_dup_line_chars",
    "empty": "no_text",
}
FINEWEB_REASONS = {
    "line_punct_ratio": "fineweb_line_punct",
    "short_line_ratio": "fineweb_short_lines",
    "char_dup_ratio": "fineweb_char_dup",
    "list_ratio": "fineweb_list_ratio",
    "empty": "no_text",
}


def gopher_repetition_reason(reason: str) -> str:
    """datatrove's repetition reasons → m3w's (`top_2_gram` → `gopher_top_2_gram`, `duplicated_5_n_grams` →
    `gopher_dup_5_grams`)."""
    if reason in GOPHER_REPETITION_REASONS:
        return GOPHER_REPETITION_REASONS[reason]
    match = re.fullmatch(r"duplicated_(\d+)_n_grams", reason)
    if match:
        return f"gopher_dup_{match.group(1)}_grams"
    return reason if reason.startswith("gopher_") else f"gopher_{reason}"


_WORD_TOKENS = re.compile(r"\d+(?:[.,:]\d+)+|\w+(?:['’]\w+)*|[^\w\s]")
_SENTENCES = re.compile(r"[^.!?。！？]+(?:[.!?。！？]+|$)")


def _word_tokenizer_class():
    from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize

    class RegexWordTokenizer(WordTokenizer):
        """datatrove's tokenizer interface with one regex (words, numbers, single punctuation marks), for any
        space-separated language: about 60x faster than spaCy's blank tokenizer, which costs more than the
        extraction of the page. Token counts differ from spaCy's by a few percent (hyphens, clitics)."""

        def word_tokenize(self, text: str) -> list[str]:
            return _WORD_TOKENS.findall(text)

        def sent_tokenize(self, text: str) -> list[str]:
            return [s.strip() for s in _SENTENCES.findall(text) if s.strip()]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return list(simple_span_tokenize(text, self.sent_tokenize(text)))

    return RegexWordTokenizer


@cache
def regex_tokenizer() -> Any:
    return _word_tokenizer_class()()


@cache
def tokenizer_language(lang: str, tokenizer: str = "fast") -> Any:
    """What datatrove's filters get as `language`, i.e. which word tokenizer they use.

    'fast': m3w's regex tokenizer, for every language. 'datatrove': datatrove's own assignment (spaCy's blank
    tokenizers for m3w's supported languages, offline), falling back to spaCy's multi-language tokenizer where
    the assigned one is missing (jieba, sudachipy... are not installed)."""
    if tokenizer == "fast":
        return regex_tokenizer()
    if tokenizer != "datatrove":
        raise ValueError(f"filters.document.tokenizer must be 'fast' or 'datatrove', not {tokenizer!r}")
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, load_word_tokenizer

    try:
        load_word_tokenizer(lang).word_tokenize("probe text")
        return lang
    except Exception as err:  # no tokenizer assigned, or its package is not installed
        log.warning("m3w filters: no word tokenizer for language %r (%s); using spaCy's multi-language one", lang, err)
        return SpaCyTokenizer("xx")


def _datatrove_verdict(result: Any, rename) -> Verdict:
    if result is True:
        return Verdict.ok()
    reason = result[1] if isinstance(result, tuple) else "rejected"
    return Verdict.drop(rename(reason), datatrove_reason=reason)


class DatatroveRules(TextFilter):
    """Gopher quality, Gopher repetition and FineWeb quality, one datatrove filter object per language.

    Gopher's word-length bounds and stop-word count come from the language's own entry of
    `gopher_quality.by_language`; a language without one (or without a stop-word list) is not judged by them
    (`Verdict.skipped`)."""

    def __init__(self, settings: DocumentSettings):
        super().__init__()
        self.settings = settings
        self.tokenizer = settings.tokenizer
        self.limits = language_table(settings.gopher_quality.by_language)
        tokenizer_language("en", self.tokenizer)  # an unknown tokenizer name fails here, not on the first document
        self._filters: dict[str, list[tuple[Any, Any, bool, tuple[str, ...]]]] = {}

    def _build(self, lang: str) -> list[tuple[Any, Any, bool, tuple[str, ...]]]:
        """Per rule group: (datatrove filter, reason renaming, sees one paragraph per line, the group's rules that
        cannot judge this language, in datatrove's order)."""
        from datatrove.pipeline.filters.fineweb_quality_filter import FineWebQualityFilter
        from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
        from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter

        language = tokenizer_language(lang, self.tokenizer)
        built = []
        quality = self.settings.gopher_quality
        if quality.enabled:
            stops = gopher_stopwords(lang)
            own = self.limits.get(lang) or GopherWordLimits(None, None, None)
            # No stop-word list for the language: the stop-word rule cannot be judged either.
            min_stop_words = own.min_stop_words if stops else None
            unjudged = []
            if own.min_avg_word_length is None and own.max_avg_word_length is None:
                unjudged.append("gopher_mean_word_length")
            if min_stop_words is None:
                unjudged.append("gopher_stop_words")
            built.append((
                GopherQualityFilter(
                    min_doc_words=quality.min_doc_words, max_doc_words=quality.max_doc_words,
                    min_avg_word_length=own.min_avg_word_length, max_avg_word_length=own.max_avg_word_length,
                    max_symbol_word_ratio=quality.max_symbol_word_ratio,
                    max_bullet_lines_ratio=quality.max_bullet_lines_ratio,
                    max_ellipsis_lines_ratio=quality.max_ellipsis_lines_ratio,
                    max_non_alpha_words_ratio=quality.max_non_alpha_words_ratio,
                    min_stop_words=min_stop_words, stop_words=list(stops or ()), language=language),
                lambda r: GOPHER_QUALITY_REASONS.get(r, r), True, tuple(unjudged)))
        repetition = self.settings.gopher_repetition
        if repetition.enabled:
            built.append((
                GopherRepetitionFilter(
                    dup_line_frac=repetition.dup_line_frac, dup_para_frac=repetition.dup_para_frac,
                    dup_line_char_frac=repetition.dup_line_char_frac,
                    dup_para_char_frac=repetition.dup_para_char_frac,
                    top_n_grams=tuple(repetition.top_n_grams or ()),
                    dup_n_grams=tuple(repetition.dup_n_grams or ()),
                    language=language),
                gopher_repetition_reason, False, ()))
        fineweb = self.settings.fineweb
        if fineweb.enabled:
            # datatrove's FineWeb filter has no off switch per rule: a null threshold becomes one that never fires.
            def limit(key: str, off: float) -> float:
                value = getattr(fineweb, key)
                return off if value is None else value

            built.append((
                FineWebQualityFilter(
                    line_punct_thr=limit("line_punct_thr", 0.0),
                    line_punct_exclude_zero=fineweb.line_punct_exclude_zero,
                    short_line_thr=limit("short_line_thr", math.inf),
                    short_line_length=fineweb.short_line_length,
                    char_duplicates_ratio=limit("char_duplicates_ratio", math.inf),
                    new_line_ratio=limit("new_line_ratio", math.inf),
                    language=language),
                lambda r: FINEWEB_REASONS.get(r, f"fineweb_{r}"), True, ()))
        return built

    def filter(self, item: TextItem) -> Verdict:
        """`item.text`: paragraphs separated by blank lines. The line rules (Gopher quality's bullet/ellipsis lines,
        all of FineWeb's) were set on trafilatura's plain text, one paragraph per line, so they see that form;
        Gopher's repetition rules see the paragraphs (their paragraph rules need the blank lines)."""
        from datatrove.data import Document as DatatroveDocument

        text, lang = item.text, item.lang
        if not words_of(text):
            return Verdict.drop("no_text")
        filters = self._filters.get(lang)
        if filters is None:
            filters = self._filters[lang] = self._build(lang)
        one_per_line = one_paragraph_per_line(text)
        skipped: list[str] = []
        for rule, rename, lines, unjudged in filters:
            verdict = _datatrove_verdict(rule.filter(DatatroveDocument(text=one_per_line if lines else text, id="")),
                                         rename)
            skipped += _reached(unjudged, verdict.reason)
            if not verdict.keep:
                return dataclasses.replace(verdict, skipped=tuple(skipped))
        return Verdict(True, skipped=tuple(skipped))


def one_paragraph_per_line(text: str) -> str:
    """The form the line rules judge: trafilatura's plain text, one paragraph per line."""
    return _BLANK_LINES.sub("\n", text.strip())


def gopher_word_measures(text: str, lang: str, tokenizer: str = "fast") -> tuple[int, float, int]:
    """What Gopher's per-language rules measure on a document (`text`: paragraphs separated by blank lines), as
    datatrove's GopherQualityFilter computes it: (distinct stop words of the language's list among the words, mean
    length of the words that are not only punctuation, how many such words)."""
    from datatrove.utils.text import PUNCTUATION_SET, split_into_words

    words = split_into_words(one_paragraph_per_line(text), tokenizer_language(lang, tokenizer))
    lengths = [len(w) for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    stops = set(gopher_stopwords(lang) or ())
    return len(stops.intersection(words)), float(np.mean(lengths)) if lengths else 0.0, len(lengths)


def _reached(unjudged: tuple[str, ...], reason: str) -> list[str]:
    """The unjudged Gopher quality rules a document reached: all when it kept it, else those before its reason."""
    if reason not in GOPHER_QUALITY_ORDER:
        return list(unjudged)
    return [rule for rule in unjudged if GOPHER_QUALITY_ORDER.index(rule) < GOPHER_QUALITY_ORDER.index(reason)]


class DocumentQuality(TextFilter):
    """All document-level quality rules: OBELICS, then Gopher quality and repetition, then FineWeb."""

    def __init__(self, settings: DocumentSettings):
        super().__init__()
        self.obelics = ObelicsDocumentRules(settings.obelics) if settings.obelics.enabled else None
        self.datatrove = DatatroveRules(settings)

    def filter(self, item: TextItem) -> Verdict:
        scores: dict[str, Any] = {}
        skipped: tuple[str, ...] = ()
        if self.obelics is not None:
            verdict = self.obelics(item)
            if not verdict.keep:
                return verdict
            scores.update(verdict.scores)
            skipped = verdict.skipped
        verdict = self.datatrove(item)
        skipped += verdict.skipped
        if not verdict.keep:
            return dataclasses.replace(verdict, skipped=skipped)
        return Verdict(True, "", scores, skipped)
