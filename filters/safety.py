"""Text-side safety: a URL/domain blocklist, a flagged-words ratio and a spam-phrase rule.

- URL blocklist (`url_blocklist`): the UT1 blacklists (Université Toulouse 1: adult, malware, phishing...
  domains and URLs) that datatrove ships in its wheel (`assets/url_filterblacklistsv0_3_0.tar.gz`, the lists
  FineWeb used), plus datatrove's banned / soft-banned words and sub-words in the URL (its `URLFilter`
  rules). A listed domain blocks its subdomains too (UT1/squidGuard semantics: every parent domain of the
  host is looked up); a listed URL blocks the URLs below it. datatrove's `URLFilter` itself is not called:
  it unpacks the lists into the user's home cache, needs pyahocorasick and tldextract (which fetches the
  public-suffix list from the network), and holds 4.5M domains as Python strings (~0.5 GB per worker).
  Here the domains are kept as a sorted array of 64-bit hashes (36 MB), built once per worker process.
- Flagged words (`flagged_words`): share of words on the flagged list (better-profanity's list and ours,
  see `filters.wordlists`), OBELICS's document rule (≤ 0.01).
- Spam (`spam`): share of words inside stock spam phrases (`filters/wordlists/spam_phrases.txt`), a rule
  written for m3w: no library has one.
"""

from __future__ import annotations

import ipaddress
import re
import tarfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pydantic import NonNegativeInt

from filters.base import TextFilter, TextItem, Verdict
from filters.text_quality import flagged_ratio, words_of
from filters.wordlists import spam_phrases
from pipeline.config import Section, Share

UT1_ARCHIVE = "url_filterblacklistsv0_3_0.tar.gz"
_URL_WORD_SPLIT = re.compile(r"[^a-z0-9]+")  # datatrove's URL normalizer, on the lower-cased URL
_LOCK = threading.Lock()
_DOMAIN_HASHES: dict[str, np.ndarray] = {}
_URL_ENTRIES: dict[str, frozenset[str]] = {}


def _ut1_archive() -> str:
    from datatrove.utils._import_utils import ASSETS_PATH

    return f"{ASSETS_PATH}/{UT1_ARCHIVE}"


def _hash_lines(handle, chunk_bytes: int = 8 << 20) -> np.ndarray:
    """Stream a file of one name per line into a sorted int64 array of their hashes (low peak memory)."""
    parts: list[np.ndarray] = []
    tail = b""
    while True:
        chunk = handle.read(chunk_bytes)
        if not chunk:
            break
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        parts.append(np.fromiter((hash(line.strip().lower()) for line in lines if line.strip()), dtype=np.int64))
    if tail.strip():
        parts.append(np.array([hash(tail.strip().lower())], dtype=np.int64))
    hashes = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    hashes.sort()
    return hashes


def ut1_lists(archive: str | None = None) -> tuple[np.ndarray, frozenset[str]]:
    """(sorted hashes of the UT1 domains, the UT1 URL entries), loaded once per process.

    Python's `hash` differs between processes, which is fine: the array is built and used in the same one.
    """
    archive = archive or _ut1_archive()
    with _LOCK:
        if archive not in _DOMAIN_HASHES:
            with tarfile.open(archive, "r:gz") as tar:
                domains = tar.extractfile("domains")
                urls = tar.extractfile("urls")
                if domains is None or urls is None:
                    raise ValueError(f"{archive} lacks the 'domains' or 'urls' list")
                _DOMAIN_HASHES[archive] = _hash_lines(domains)
                entries = urls.read().decode("utf-8", "replace").splitlines()
                _URL_ENTRIES[archive] = frozenset(_url_key(e) for e in entries if e.strip())
        return _DOMAIN_HASHES[archive], _URL_ENTRIES[archive]


def _url_key(url: str) -> str:
    """'https://www.Example.com/a/b/' → 'example.com/a/b' (UT1 URL entries have no scheme and no www.)."""
    text = url.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("#", 1)[0].rstrip("/")
    return text[4:] if text.startswith("www.") else text


def host_of(url: str) -> str:
    try:
        return (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return ""


def parent_domains(host: str) -> list[str]:
    """'a.b.example.com' → ['a.b.example.com', 'b.example.com', 'example.com']; an IP address only itself."""
    if not host:
        return []
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(max(1, len(labels) - 1))]


def _ascii_domain(domain: str) -> bytes:
    """The list's form of a domain: IDNA (punycode) for internationalized names."""
    try:
        return domain.encode("ascii")
    except UnicodeEncodeError:
        try:
            return domain.encode("idna")
        except UnicodeError:
            return domain.encode("utf-8", "surrogatepass")


def _read_asset_words(name: str) -> frozenset[str]:
    """datatrove's URL word lists (banned_words.txt...); '#'-prefixed entries are disabled there too."""
    from datatrove.utils._import_utils import ASSETS_PATH

    with open(f"{ASSETS_PATH}/{name}", encoding="utf-8") as handle:
        return frozenset(_URL_WORD_SPLIT.sub("", line.lower()) for line in handle if line.strip()
                         and not line.startswith("#"))


@dataclass(frozen=True)
class UrlBlocklistSettings(Section):
    """`filters.safety.url_blocklist`: which lists and URL-word rules apply."""

    enabled: bool
    ut1: bool
    url_words: bool
    soft_word_threshold: NonNegativeInt
    extra_domains: list[str]
    extra_urls: list[str]


@dataclass(frozen=True)
class FlaggedWordsSettings(Section):
    """`filters.safety.flagged_words`: the highest share of flagged words a document may have."""

    enabled: bool
    max_ratio: Share | None


@dataclass(frozen=True)
class SpamSettings(Section):
    """`filters.safety.spam`: the highest share of words inside spam phrases, and the phrases it takes."""

    enabled: bool
    max_ratio: Share | None
    min_hits: NonNegativeInt


@dataclass(frozen=True)
class SafetySettings(Section):
    """`filters.safety`."""

    url_blocklist: UrlBlocklistSettings
    flagged_words: FlaggedWordsSettings
    spam: SpamSettings


class UrlBlocklist(TextFilter):
    """URL/domain blocklist verdict on the item's `url`, a page's or a document's (reason `url_blocklist`)."""

    def __init__(self, settings: UrlBlocklistSettings):
        super().__init__()
        self.use_ut1 = settings.ut1
        self.domain_hashes, self.url_entries = ut1_lists() if self.use_ut1 else (np.empty(0, np.int64), frozenset())
        self.extra_domains = frozenset(d.strip().lower().rstrip(".") for d in settings.extra_domains or ())
        self.extra_urls = frozenset(_url_key(u) for u in settings.extra_urls or ())
        self.url_words = settings.url_words
        self.soft_threshold = settings.soft_word_threshold
        if self.url_words:
            self.banned = _read_asset_words("banned_words.txt")
            self.soft_banned = _read_asset_words("soft_banned_words.txt")
            subwords = sorted(_read_asset_words("banned_subwords.txt") - {""})
            self.subwords = re.compile("|".join(map(re.escape, subwords))) if subwords else None

    def _listed_domain(self, host: str) -> str:
        for domain in parent_domains(host):
            if domain in self.extra_domains:
                return domain
            if self.use_ut1 and len(self.domain_hashes):
                key = hash(_ascii_domain(domain))
                i = int(np.searchsorted(self.domain_hashes, key))
                if i < len(self.domain_hashes) and self.domain_hashes[i] == key:
                    return domain
        return ""

    def _listed_url(self, url: str) -> str:
        key = _url_key(url)
        parts = key.split("/")
        for end in range(len(parts), 1, -1):  # the URL itself, then each parent path
            prefix = "/".join(parts[:end])
            if prefix in self.url_entries or prefix in self.extra_urls:
                return prefix
        return ""

    def filter(self, item: TextItem) -> Verdict:
        url = item.url
        host = host_of(url)
        domain = self._listed_domain(host)
        if domain:
            return Verdict.drop("url_blocklist", rule="domain", match=domain)
        listed = self._listed_url(url)
        if listed:
            return Verdict.drop("url_blocklist", rule="url", match=listed)
        if self.url_words:
            lowered = url.lower()
            words = set(_URL_WORD_SPLIT.split(lowered))
            banned = sorted(words & self.banned)
            if banned:
                return Verdict.drop("url_blocklist", rule="banned_word", match=banned[0])
            soft = sorted(words & self.soft_banned)
            if len(soft) >= self.soft_threshold:
                return Verdict.drop("url_blocklist", rule="soft_banned_words", match=",".join(soft))
            if self.subwords is not None:
                found = self.subwords.search(_URL_WORD_SPLIT.sub("", lowered))
                if found:
                    return Verdict.drop("url_blocklist", rule="banned_subword", match=found.group(0))
        return Verdict.ok()


@lru_cache(maxsize=1)
def _spam_index() -> dict[str, tuple[tuple[str, ...], ...]]:
    index: dict[str, list[tuple[str, ...]]] = {}
    for phrase in spam_phrases():
        index.setdefault(phrase[0], []).append(phrase)
    return {first: tuple(group) for first, group in index.items()}


def spam_ratio(words: list[str]) -> tuple[float, int]:
    """(share of words inside spam-phrase occurrences, number of occurrences)."""
    if not words:
        return 0.0, 0
    index = _spam_index()
    covered = [False] * len(words)
    hits = 0
    for i, word in enumerate(words):
        for phrase in index.get(word, ()):
            if tuple(words[i : i + len(phrase)]) == phrase:
                hits += 1
                covered[i : i + len(phrase)] = [True] * len(phrase)
    return sum(covered) / len(words), hits


class TextSafety(TextFilter):
    """Flagged-words ratio and spam phrases on a document's whole text (before paragraph cleaning), in the
    item's language (for the flagged-word list). One rule for both, so the text is split into words once."""

    def __init__(self, flagged_words: FlaggedWordsSettings, spam: SpamSettings):
        super().__init__()
        self.flagged_enabled = flagged_words.enabled
        self.max_flagged = flagged_words.max_ratio
        self.spam_enabled = spam.enabled
        self.max_spam = spam.max_ratio
        self.min_spam_hits = spam.min_hits

    def filter(self, item: TextItem) -> Verdict:
        words = words_of(item.text)
        scores: dict[str, Any] = {}
        if self.flagged_enabled and self.max_flagged is not None:
            ratio = flagged_ratio(words, item.lang)
            scores["flagged_words"] = round(ratio, 4)
            if ratio > self.max_flagged:
                return Verdict.drop("flagged_words", **scores)
        if self.spam_enabled and self.max_spam is not None:
            ratio, hits = spam_ratio(words)
            scores["spam"] = round(ratio, 4)
            if ratio > self.max_spam and hits >= self.min_spam_hits:
                return Verdict.drop("spam", spam_hits=hits, **scores)
        return Verdict.ok(**scores)

