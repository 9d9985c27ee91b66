"""Language-specific word lists for the text filters, as data files next to this module.

Where each list comes from (every file's header repeats it):
- `stopwords.<lang>.txt`, `common_words.<lang>.txt`, `gopher_stopwords.<lang>.txt`: generated from
  spaCy's stop-word lists and wordfreq's frequency lists by `generate.py` (sources and licences in the files).
- flagged words: better-profanity's bundled `profanity_wordlist.txt` (MIT), read from the installed
  package at run time (not copied here), minus `profanity_allowlist.txt` (ours: words whose everyday
  sense is harmless, e.g. "kill", "organ", "thrust", which would otherwise remove ordinary paragraphs),
  plus `flagged_words.<lang>.txt` (ours: unambiguous adult/obscene terms of other languages).
- `spam_phrases.txt` (ours): phrases of keyword-stuffed sales and SEO spam.
- `calibration.<lang>.yaml`: where the reference language's cut-offs sit in its own distribution, measured by
  `m3w calibrate --language <lang>` on real pages (docs/filters.md): what every other language is placed against.

A language without a file simply has no such list; the rules that need one are skipped for it.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources

SUPPORTED_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl")
_WORD_EDGE = re.compile(r"^[\W\d_]+|[\W\d_]+$")


def normalize_word(word: str) -> str:
    """Lower-case, special characters (punctuation, digits, symbols) stripped from both ends (OBELICS's words)."""
    return _WORD_EDGE.sub("", word.lower())


@cache
def read_list(name: str) -> tuple[str, ...]:
    """Entries of one list file of this package (comments and blank lines skipped); () if there is no such file."""
    path = resources.files(__name__).joinpath(name)
    if not path.is_file():
        return ()
    entries = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(e for e in entries if e and not e.startswith("#"))


@cache
def stopwords(lang: str) -> frozenset[str] | None:
    words = read_list(f"stopwords.{lang}.txt")
    return frozenset(words) if words else None


@cache
def common_words(lang: str) -> frozenset[str] | None:
    words = read_list(f"common_words.{lang}.txt")
    return frozenset(words) if words else None


@cache
def gopher_stopwords(lang: str) -> tuple[str, ...] | None:
    return read_list(f"gopher_stopwords.{lang}.txt") or None


@lru_cache(maxsize=1)
def _profanity_entries() -> tuple[str, ...]:
    text = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text(encoding="utf-8")
    return tuple(sorted({line.strip().lower() for line in text.splitlines() if line.strip()}))


def _split_entries(entries: tuple[str, ...]) -> tuple[frozenset[str], frozenset[tuple[str, ...]]]:
    """Entries → (single words, multi-word phrases); entries our word splitting cannot reproduce are left out."""
    words, phrases = set(), set()
    for entry in entries:
        parts = entry.split()
        normalized = [normalize_word(p) for p in parts]
        if not all(normalized) or normalized != parts:
            continue  # e.g. "2 girls 1 cup": the digits vanish from our words, the phrase would match wrongly
        if len(parts) == 1:
            words.add(parts[0])
        else:
            phrases.add(tuple(parts))
    return frozenset(words), frozenset(phrases)


@cache
def flagged_words(lang: str) -> tuple[frozenset[str], frozenset[tuple[str, ...]]]:
    """(words, phrases) flagged for a document in `lang`: the English profanity list applies to every language."""
    allow = set(read_list("profanity_allowlist.txt"))
    entries = tuple(e for e in _profanity_entries() if e not in allow) + read_list(f"flagged_words.{lang}.txt")
    return _split_entries(entries)


@lru_cache(maxsize=1)
def spam_phrases() -> tuple[tuple[str, ...], ...]:
    phrases = {tuple(normalize_word(w) for w in line.split()) for line in read_list("spam_phrases.txt")}
    return tuple(sorted(p for p in phrases if p and all(p)))
