"""What the document and paragraph rules drop from real pages of each language, side by side with English.

    python -m benchmarks.filter_languages [--tiny] [--write-documents DIR]

The real pages of ../shared/fixtures (article-benchmark and trafilatura-cache: English, German, a few French,
Portuguese, Spanish...) are extracted in this process (`extract.require_images=false`: the text statistics do not
depend on the pictures, and every page counts), labelled by language ID (at `filters.language.threshold`) and
split into halves by a hash of their URL: the shipped cut-offs were calibrated on the calibration half (`m3w
calibrate ... --half calibration`), so the evaluation half shows them on pages they were not set on. Each language's
documents then run through the filters as `m3w filter --set 'filters.language.languages=[<lang>]'` runs them:

- with the language's own cut-offs (`by_language`; a language without an entry is not judged by the word-share
  rules, and the skips are counted), and
- with English's cut-offs copied to it: what m3w did before per-language cut-offs.

For documents, the share of those the quality rules judged that each word-share rule drops with the other document
rules off (so what the other rules drop first does not move it; the paragraph rules run as always), and what every
quality rule drops in a full run; for paragraphs, the share of the judged documents' paragraphs each rule removes
(in rule order). `--write-documents DIR` also writes the
extracted documents as Parquet (DIR/documents/), the input of `m3w calibrate` (docs/filters.md). `--tiny`: every
15th fixture page (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/filter_languages.py`: the repository root on the path
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._fixture_warc import fixture_pages

TINY_STEP = 15  # --tiny: every this-many-th fixture page
NOT_JUDGED = ("language", "url_blocklist", "flagged_words", "spam")  # dropped before the quality rules
WORD_SHARE_DOCUMENT_RULES = ("obelics_stopwords", "obelics_common_words", "gopher_mean_word_length",
                             "gopher_stop_words")
WORD_SHARE_PARAGRAPH_RULES = ("obelics_par_stopwords", "obelics_par_common_words")
HALVES = ("calibration", "evaluation")


@dataclass
class Outcome:
    """What the filters did to one language's documents of one half, with one set of cut-offs."""

    documents: int = 0  # judged by the quality rules
    paragraphs: int = 0  # of those documents, judged by the paragraph rules
    document_drops: Counter = field(default_factory=Counter)  # quality reason → documents
    paragraph_drops: Counter = field(default_factory=Counter)  # reason → paragraphs
    skipped: Counter = field(default_factory=Counter)  # rule → items it could not judge
    every: float | None = None  # share of the documents every quality rule drops, in a full run

    def share(self, reasons: tuple[str, ...] | None, paragraphs: bool = False) -> float | None:
        """Share dropped by `reasons` (None: by any rule)."""
        total, drops = (self.paragraphs, self.paragraph_drops) if paragraphs else (self.documents, self.document_drops)
        if not total:
            return None
        return sum(n for reason, n in drops.items() if reasons is None or reason in reasons) / total


def extracted_documents(pages: list[tuple[str, bytes]]) -> list[Any]:
    from pipeline.jobs.stages import extract_page
    from pipeline.read.crawl import Page
    from pipeline.settings import load_config

    config = load_config(overrides=["extract.timeout_s=0", "extract.require_images=false"])
    docs = [extract_page(Page(url=url, body=body, charset=None, source="fixtures"), config).document
            for url, body in pages]
    return [doc for doc in docs if doc is not None]


def by_language(docs: list[Any]) -> dict[str, list[Any]]:
    """Documents by the language ID label the filters would give them (at `filters.language.threshold`)."""
    from filters.language import LanguageIdentifier
    from pipeline.settings import load_config

    language = load_config()["filters"]["language"]
    identifier = LanguageIdentifier(language["model"], language["top_k"])
    groups: dict[str, list[Any]] = {}
    for doc in docs:
        prediction = identifier.predict(doc.text)
        if prediction.score >= language["threshold"]:
            groups.setdefault(prediction.language, []).append(doc)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] != "en", -len(kv[1]), kv[0])))


def filters_for(lang: str, cutoffs_of: str | None, word_share_alone: bool = False) -> Any:
    """The filters of `m3w filter --set 'filters.language.languages=[lang]'`, with the `by_language` entries of
    `cutoffs_of` given to `lang` (None: the shipped tables as they are); `word_share_alone`: every document rule off
    but the word-share rules and the word-count bounds of their groups (the items they judge)."""
    from pipeline.filter.transforms import DocumentFilters, FilterSettings
    from pipeline.settings import load_config

    section = copy.deepcopy(load_config(overrides=[f"filters.language.languages=[{lang}]"])["filters"])
    document = section["document"]
    if cutoffs_of is not None:
        for table in (section["paragraph"], document["obelics"], document["gopher_quality"]):
            table["by_language"][lang] = copy.deepcopy(table["by_language"][cutoffs_of])
    if word_share_alone:
        for key in ("max_char_repetition", "max_word_repetition", "max_special_chars", "min_punctuation",
                    "min_images", "max_images"):
            document["obelics"][key] = None
        for key in ("max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                    "max_non_alpha_words_ratio"):
            document["gopher_quality"][key] = None
        document["gopher_repetition"]["enabled"] = document["fineweb"]["enabled"] = False
    return DocumentFilters(FilterSettings.from_config(section, "filters"))


def outcome(docs: list[Any], filters: Any) -> Outcome:
    out = Outcome()
    for doc in docs:
        result = filters(doc)
        if result.verdict.reason in NOT_JUDGED:
            continue
        out.documents += 1
        out.paragraphs += result.paragraphs_in
        out.paragraph_drops.update(reason for reason, _, _ in result.paragraph_drops)
        if not result.verdict.keep:
            out.document_drops[result.verdict.reason] += 1
        for counts in (result.document_skips, result.paragraph_skips):
            out.skipped.update({name.removeprefix("skipped_").rsplit("_", 1)[0]: n for name, n in counts.items()})
    return out


def measure(groups: dict[str, list[Any]], full_run: bool = True) -> list[tuple[str, str, str, Outcome]]:
    """(language, whose cut-offs, half, outcome) rows: English first; every other language with word lists (the
    word-share rules judge no other) with its own cut-offs (or none) and with English's. `full_run`: also what every
    quality rule drops (`Outcome.every`)."""
    from filters.calibration import half_of
    from filters.wordlists import SUPPORTED_LANGUAGES

    rows = []
    for lang, docs in groups.items():
        if lang not in SUPPORTED_LANGUAGES:
            continue
        for cutoffs_of in (None,) if lang == "en" else (None, "en"):
            alone = filters_for(lang, cutoffs_of, word_share_alone=True)
            full = filters_for(lang, cutoffs_of) if full_run else None
            label = f"{lang}'s own" if cutoffs_of is None else f"{cutoffs_of}'s"
            for half in HALVES:
                judged = [d for d in docs if half_of(d.url) == half]
                out = outcome(judged, alone)
                out.every = outcome(judged, full).share(None) if full is not None else None
                rows.append((lang, label, half, out))
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_table(rows: list[tuple[str, str, str, Outcome]], paragraphs: bool) -> None:
    """One markdown table: per row, the items judged and the share each word-share rule, all of them and every rule
    of the level drop."""
    unit, rules, every = (("paragraphs", WORD_SHARE_PARAGRAPH_RULES, "every paragraph rule") if paragraphs else
                          ("documents", WORD_SHARE_DOCUMENT_RULES, "every quality rule"))
    header = ["language", "cut-offs", "half", f"{unit} judged", *rules, "word-share rules", every]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for lang, label, half, out in rows:
        cells = [lang, label, half, str(out.paragraphs if paragraphs else out.documents),
                 *(_pct(out.share((rule,), paragraphs)) for rule in rules),
                 _pct(out.share(rules, paragraphs)), _pct(out.share(None, True) if paragraphs else out.every)]
        print("| " + " | ".join(cells) + " |")


def print_tables(rows: list[tuple[str, str, str, Outcome]]) -> None:
    print("documents: share of those the quality rules judged that the word-share rules drop with the other document "
          "rules off (in rule order), and every quality rule in a full run")
    print_table(rows, paragraphs=False)
    print("paragraphs: share of the judged documents' paragraphs that each rule removes (in rule order)")
    print_table(rows, paragraphs=True)
    skipped = [(lang, half, out.skipped) for lang, label, half, out in rows if out.skipped and label.endswith("own")]
    for lang, half, counts in skipped:
        print(f"not judged ({lang}, {half} half: no cut-off for {lang}): "
              + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items())))


def print_verdict(rows: list[tuple[str, str, str, Outcome]]) -> None:
    """Per language with its own cut-offs: its word-share drop share against English's, on the evaluation half."""
    english = {half: out for lang, label, half, out in rows if lang == "en"}
    for lang, label, half, out in rows:
        if lang == "en" or not label.endswith("own") or half != "evaluation" or out.skipped:
            continue
        for level, rules, paragraphs in (("documents", WORD_SHARE_DOCUMENT_RULES, False),
                                         ("paragraphs", WORD_SHARE_PARAGRAPH_RULES, True)):
            ours, theirs = out.share(rules, paragraphs), english[half].share(rules, paragraphs)
            if ours is None or theirs is None:
                continue
            gap = 100 * abs(ours - theirs)
            print(f"word-share rules, {level}, evaluation half: {lang} {_pct(ours)} vs en {_pct(theirs)}: "
                  f"{gap:.1f} points apart ({'within' if gap <= 10 else 'MORE THAN'} 10)")


def write_documents(docs: list[Any], directory: Path) -> None:
    from pipeline.io.documents import parquet_bytes

    (directory / "documents").mkdir(parents=True, exist_ok=True)
    (directory / "documents" / "fixtures.parquet").write_bytes(parquet_bytes(docs, False, "zstd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help=f"every {TINY_STEP}th fixture page")
    parser.add_argument("--write-documents", type=Path, metavar="DIR",
                        help="also write the extracted documents to DIR/documents/ (the input of m3w calibrate)")
    args = parser.parse_args()
    started = time.process_time()
    pages = fixture_pages()[:: TINY_STEP if args.tiny else 1]
    docs = extracted_documents(pages)
    if args.write_documents:
        write_documents(docs, args.write_documents)
    groups = by_language(docs)
    rows = measure(groups)
    print(f"command: python -m benchmarks.filter_languages{' --tiny' if args.tiny else ''}")
    print(f"{len(pages)} real pages (article-benchmark, trafilatura-cache) -> {len(docs)} documents; by language: "
          + ", ".join(f"{lang} {len(group)}" for lang, group in groups.items()))
    print_tables(rows)
    print_verdict(rows)
    print(f"CPU seconds: {time.process_time() - started:.1f}")


if __name__ == "__main__":
    main()
