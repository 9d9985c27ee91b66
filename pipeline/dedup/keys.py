"""Pure keys for deduplication: normalised URLs and texts, paragraph keys, MinHash signatures, image hashes.

Everything here is deterministic across processes and machines (no Python `hash()`, whose value changes
with PYTHONHASHSEED), so the same document gets the same keys on every Beam worker.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import numpy as np
import xxhash

# ---------------------------------------------------------------------------------------------- URLs

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalize_percent(part: str) -> str:
    """RFC 3986 6.2.2: decode escaped unreserved characters, upper-case the other escapes."""

    def fix(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, part)


def _is_tracking(name: str, patterns: Sequence[str]) -> bool:
    lowered = _normalize_percent(name).lower()
    return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in patterns)


def normalize_url(
    url: str,
    tracking_params: Sequence[str] = (),
    ignore_scheme: bool = False,
    strip_www: bool = False,
) -> str:
    """The key under which two URLs name the same page.

    Lower-cases scheme and host, drops default ports, user info, the fragment and query parameters
    matching `tracking_params` (fnmatch patterns such as `utm_*`), sorts the remaining parameters and
    normalises percent-escapes. `ignore_scheme` treats http and https as one; `strip_www` treats
    `www.host` and `host` as one. A URL that cannot be parsed is returned stripped, so it still
    groups with identical strings instead of failing the run.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if strip_www and host.startswith("www."):
        host = host[4:]
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    path = _normalize_percent(parts.path) or "/"
    params = [p for p in parts.query.split("&") if p and not _is_tracking(p.split("=", 1)[0], tracking_params)]
    query = "&".join(sorted(_normalize_percent(p) for p in params))
    if ignore_scheme and scheme in _DEFAULT_PORTS:
        scheme = "http(s)"
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def url_domain(url: str) -> str:
    """Host of a URL, lower-cased, without `www.` and port: the scope of paragraph boilerplate."""
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:
        return ""
    return host[4:] if host.startswith("www.") else host


# ---------------------------------------------------------------------------------------------- texts

def normalize_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed: what exact dedup and paragraph keys compare."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())  # str.split: every Unicode space


def digest(*parts: str) -> str:
    """128-bit hex digest of strings joined unambiguously (collisions are negligible at web scale)."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()


def exact_document_key(text: str, image_urls: Iterable[str]) -> str:
    """Documents with this key in common have the same normalised text and the same images in order."""
    return digest(normalize_text(text), *image_urls)


def split_paragraphs(text: str) -> list[str]:
    """A text node's paragraphs, as the extractor joined them (blank-line separated)."""
    return [p for p in text.split("\n\n") if p.strip()]


def paragraph_key(paragraph: str) -> str:
    return digest(normalize_text(paragraph))


# ---------------------------------------------------------------------------------------------- MinHash

_MASK_32 = np.uint64(0xFFFFFFFF)
# Odd 64-bit multipliers for combining n word hashes into one shingle hash (position matters).
_POSITION_MULTIPLIERS = [np.uint64((0x9E3779B97F4A7C15 * (2 * i + 1)) & 0xFFFFFFFFFFFFFFFF) for i in range(64)]
_SHINGLE_CHUNK = 4096


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the bits of a combined hash (uint64 arithmetic wraps on purpose)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def shingle_words(text: str) -> list[str]:
    """Words after datatrove's `simplify_text` (lower case, no punctuation, numbers as 0, no diacritics).

    ASCII text has no diacritics, so its (costly) Unicode decomposition step is skipped: same words.
    """
    from datatrove.utils.text import DEF_TEXT_NORM_CONFIG, TextNormConfig, simplify_text

    if text.isascii():
        return simplify_text(text, TextNormConfig(norm_unicode_diacritics=False)).split()
    return simplify_text(text, DEF_TEXT_NORM_CONFIG).split()


def shingle_hashes(words: Sequence[str], ngram: int) -> np.ndarray:
    """64-bit hashes of the distinct word n-grams (a text shorter than n is one shingle; empty gives none)."""
    return np.unique(word_window_hashes(words, ngram))


def word_window_hashes(words: Sequence[str], ngram: int) -> np.ndarray:
    """One 64-bit hash per word window, in order (the i-th starts at word i), repeats included (a minimum does
    not care about repeats, decontamination maps a window back to its words).

    Each word is hashed with xxh64; the n hashes of a window are combined with position-dependent
    odd multipliers (wrapping uint64 arithmetic) and mixed, vectorised in numpy.
    """
    if not words:
        return np.empty(0, dtype=np.uint64)
    digest64 = xxhash.xxh64_intdigest
    word_hash = np.array([digest64(w.encode("utf-8", "surrogatepass")) for w in words], dtype=np.uint64)
    n = min(ngram, len(words))
    windows = len(words) - n + 1
    combined = np.zeros(windows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(n):
            combined = (combined + word_hash[offset:offset + windows]) * _POSITION_MULTIPLIERS[offset]
    return _mix64(combined)


class MinHasher:
    """MinHash signatures and LSH band keys (datatrove's defaults: 5-grams, 14 bands x 8 hashes).

    Hash function i of a 64-bit shingle hash h is `mix64(h XOR s_i)`, with splitmix64's finaliser (a
    bijection of 64-bit integers with full avalanche) and 64-bit salts s_i drawn from a seeded
    generator: one independent-looking permutation per signature value, computed for all shingles and
    hashes at once in numpy with exact uint64 arithmetic. (The textbook `(a*h + b) mod p` family needs
    128-bit products to be exact; truncated to 64 bits it either overflows or, with small a, stays
    nearly monotone in h, which ruins the estimate.) Each signature value keeps the low 32 bits of
    the minimum. Picklable and cheap to build, so every worker computes the same signatures.
    """

    def __init__(self, ngram: int, bands: int, rows: int, seed: int):
        if not 1 <= ngram <= len(_POSITION_MULTIPLIERS) or bands < 1 or rows < 1:
            raise ValueError(f"ngram must be 1..64, bands and rows positive (got {ngram}, {bands}, {rows})")
        self.ngram, self.bands, self.rows, self.seed = ngram, bands, rows, seed
        generator = np.random.default_rng(seed)
        self.salts = generator.integers(0, np.iinfo(np.uint64).max, size=bands * rows, dtype=np.uint64,
                                        endpoint=True)

    @property
    def num_hashes(self) -> int:
        return self.bands * self.rows

    def threshold(self) -> float:
        """The S-curve's usual threshold estimate (1/b)^(1/r): ≈0.72 for 14 x 8.

        A pair of Jaccard similarity s becomes a candidate with probability 1 - (1 - s^r)^b: for 14 x 8,
        0.05 at s = 0.5, 0.57 at 0.7, 0.92 at 0.8 and 0.99 at 0.85.
        """
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def signature(self, text: str) -> np.ndarray | None:
        """uint32 signature of length bands x rows, or None for a text without words."""
        shingles = word_window_hashes(shingle_words(text), self.ngram)
        if shingles.size == 0:
            return None
        minimum = np.full(self.num_hashes, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, shingles.size, _SHINGLE_CHUNK):  # bounded memory for very long texts
            values = _mix64(shingles[start:start + _SHINGLE_CHUNK, None] ^ self.salts[None, :])
            np.minimum(minimum, values.min(axis=0), out=minimum)
        return (minimum & _MASK_32).astype(np.uint32)

    def band_keys(self, signature: np.ndarray) -> list[bytes]:
        """One key per band: the band index and its `rows` hash values; equal keys make candidates."""
        rows = self.rows
        return [band.to_bytes(2, "big") + signature[band * rows:(band + 1) * rows].tobytes()
                for band in range(self.bands)]


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Share of equal MinHash values: an unbiased estimate of the shingle sets' Jaccard similarity."""
    return float(np.count_nonzero(sig_a == sig_b)) / float(len(sig_a))


def pairwise_jaccard(signatures: np.ndarray) -> np.ndarray:
    """Estimated Jaccard of every pair of rows of a (k, hashes) signature matrix, as a (k, k) array."""
    equal = signatures[:, None, :] == signatures[None, :, :]
    return equal.mean(axis=2)


# ---------------------------------------------------------------------------------------------- images


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_phash(data: bytes, hash_size: int) -> int:
    """Perceptual hash (imagehash's pHash: DCT of a 32x32 grey image) as an int of hash_size^2 bits.

    Raises `ValueError` when the bytes do not decode (the caller counts that as a drop). Only the decoder's
    errors on these bytes are the image's: pHash itself (imagehash, its lazy scipy import) raising is a broken
    environment and propagates, so a run never turns every image into "undecodable".
    """
    import imagehash
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as image:
            image.load()
            grey = image.convert("L")
    except Exception as error:  # PIL raises many types (OSError, DecompressionBombError, SyntaxError...)
        raise ValueError(f"undecodable image: {type(error).__name__}: {error}") from error
    bits = imagehash.phash(grey, hash_size=hash_size).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def phash_band_keys(value: int, bits: int, bands: int) -> list[tuple[int, int]]:
    """Split a `bits`-bit hash into `bands` contiguous bit ranges: (band index, band value).

    Pigeonhole: two hashes within Hamming distance `bands - 1` agree exactly on at least one band,
    so grouping by these keys finds every pair within that distance.
    """
    bands = max(1, min(bands, bits))
    keys = []
    start = 0
    for band in range(bands):
        width = bits // bands + (1 if band < bits % bands else 0)
        keys.append((band, (value >> start) & ((1 << width) - 1)))
        start += width
    return keys


def pairwise_hamming(values: Sequence[int]) -> np.ndarray:
    """(k, k) Hamming distances of up-to-64-bit hashes, vectorised."""
    array = np.array(values, dtype=np.uint64)
    xor = array[:, None] ^ array[None, :]
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(xor).astype(np.int64)
    return np.unpackbits(xor.view(np.uint8), axis=-1).reshape(*xor.shape, 64).sum(axis=-1).astype(np.int64)
