"""Pure dedup keys: URL and text normalisation, MinHash signatures and band keys, image hashes."""

from __future__ import annotations

import io
import random
import string

import numpy as np
import pytest
from PIL import Image

from pipeline.dedup.keys import (
    MinHasher,
    estimated_jaccard,
    exact_document_key,
    hamming,
    image_phash,
    normalize_text,
    normalize_url,
    pairwise_hamming,
    pairwise_jaccard,
    paragraph_key,
    phash_band_keys,
    shingle_hashes,
    shingle_words,
    url_domain,
)

TRACKING = ["utm_*", "fbclid", "gclid"]


def words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM/a/b", "https://example.com/a/b"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://example.com/a#section-2", "https://example.com/a"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com/a?b=2&a=1", "https://example.com/a?a=1&b=2"),
        ("https://example.com/a?utm_source=x&id=7&UTM_Medium=y&fbclid=z", "https://example.com/a?id=7"),
        ("https://example.com/a?utm_source=x", "https://example.com/a"),
        ("https://example.com/%7euser/%2f", "https://example.com/~user/%2F"),
        ("https://user:pw@example.com./a", "https://example.com/a"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url, TRACKING) == expected


def test_normalize_url_options_and_bad_input():
    assert normalize_url("http://example.com/a", ignore_scheme=True) == normalize_url(
        "https://example.com/a", ignore_scheme=True)
    assert normalize_url("http://example.com/a") != normalize_url("https://example.com/a")
    assert normalize_url("https://www.example.com/a", strip_www=True) == "https://example.com/a"
    assert normalize_url("https://www.example.com/a") == "https://www.example.com/a"
    assert normalize_url("https://example.com:99999/a") == "https://example.com:99999/a"  # unparsable port: as is
    assert normalize_url("http://[broken/a") == "http://[broken/a"
    # Different pages stay different.
    assert normalize_url("https://e.com/a?id=1", TRACKING) != normalize_url("https://e.com/a?id=2", TRACKING)
    assert normalize_url("https://example.com/a") != normalize_url("https://example.com/A")


def test_url_domain():
    assert url_domain("https://WWW.Example.com:8443/x") == "example.com"
    assert url_domain("https://blog.example.com/x") == "blog.example.com"
    assert url_domain("not a url") == ""


def test_text_keys():
    assert normalize_text("  Hello\u00a0 WORLD\n\tagain ") == "hello world again"
    assert normalize_text("ﬁne") == "fine"  # NFKC
    same = exact_document_key("Hello  World", ["https://a/1.jpg"])
    assert same == exact_document_key("hello world", ["https://a/1.jpg"])
    assert same != exact_document_key("hello world", ["https://a/2.jpg"])
    assert same != exact_document_key("hello world", [])
    assert exact_document_key("ab", ["c"]) != exact_document_key("a", ["bc"])  # unambiguous joining
    assert paragraph_key("We use  Cookies.") == paragraph_key("we use cookies.")
    assert paragraph_key("We use cookies.") != paragraph_key("We use cookies!")


def test_shingles():
    assert shingle_words("Hello, World! 2024") == ["hello", "world", "0"]
    assert shingle_hashes([], 5).size == 0
    assert shingle_hashes(["a", "b"], 5).size == 1  # shorter than n: one shingle
    text = "a b c d e f a b c d e f".split()
    assert shingle_hashes(text, 5).size == 6  # distinct 5-grams only (abcde bcdef cdefa defab efabc fabcd)
    assert not np.array_equal(shingle_hashes("a b c d e".split(), 5), shingle_hashes("e d c b a".split(), 5))


def test_minhash_is_deterministic_and_estimates_jaccard():
    hasher = MinHasher(ngram=5, bands=14, rows=8, seed=1)
    assert hasher.num_hashes == 112
    assert hasher.threshold() == pytest.approx(0.719, abs=0.001)
    rng = random.Random(0)
    base = words(rng, 400)
    edited = list(base)
    for position in rng.sample(range(len(base)), 4):  # Jaccard ≈ 0.9: a candidate with p > 0.999
        edited[position] = "changed"
    sig_a = hasher.signature(" ".join(base))
    sig_b = MinHasher(5, 14, 8, 1).signature(" ".join(edited))
    assert np.array_equal(sig_a, MinHasher(5, 14, 8, 1).signature(" ".join(base)))
    assert not np.array_equal(sig_a, MinHasher(5, 14, 8, 2).signature(" ".join(base)))
    shingles_a = {tuple(base[i:i + 5]) for i in range(len(base) - 4)}
    shingles_b = {tuple(edited[i:i + 5]) for i in range(len(edited) - 4)}
    true_jaccard = len(shingles_a & shingles_b) / len(shingles_a | shingles_b)
    assert estimated_jaccard(sig_a, sig_b) == pytest.approx(true_jaccard, abs=0.12)
    assert len(set(hasher.band_keys(sig_a)) & set(hasher.band_keys(sig_b))) >= 1  # a candidate pair
    other = hasher.signature(" ".join(words(rng, 400)))
    assert estimated_jaccard(sig_a, other) < 0.1
    assert not set(hasher.band_keys(sig_a)) & set(hasher.band_keys(other))
    assert len(hasher.band_keys(sig_a)) == 14
    assert hasher.signature("") is None and hasher.signature(" ,;! ") is None
    matrix = pairwise_jaccard(np.stack([sig_a, sig_b, other]))
    assert matrix[0, 1] == pytest.approx(estimated_jaccard(sig_a, sig_b)) and matrix[2, 2] == 1.0


def test_minhash_handles_long_texts_in_chunks():
    text = " ".join(words(random.Random(3), 12000))  # more shingles than one chunk
    hasher = MinHasher(5, 14, 8, 1)
    assert hasher.signature(text).shape == (112,)
    with pytest.raises(ValueError):
        MinHasher(5, 0, 8, 1)


def _photo(seed: int, size: int = 256) -> Image.Image:
    """A smooth random picture (low-frequency noise), like a photograph for pHash purposes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_phash_survives_reencoding_and_resizing_but_separates_pictures():
    picture = _photo(1)
    original = image_phash(_encode(picture, "PNG"), 8)
    copy = image_phash(_encode(picture.resize((160, 160)), "JPEG", quality=60), 8)
    webp = image_phash(_encode(picture.resize((200, 200)), "WEBP", quality=70), 8)
    assert hamming(original, copy) <= 4 and hamming(original, webp) <= 4
    others = [image_phash(_encode(_photo(seed), "PNG"), 8) for seed in range(2, 12)]
    assert min(hamming(original, other) for other in others) > 10
    distances = pairwise_hamming([original, copy, *others])
    assert distances[0, 1] == hamming(original, copy) and distances[0, 2] == hamming(original, others[0])
    with pytest.raises(ValueError, match="undecodable"):
        image_phash(b"\x89PNG\r\n\x1a\n not really", 8)


def test_phash_bands_find_every_pair_within_the_threshold():
    rng = random.Random(5)
    for threshold in (0, 2, 4, 7):
        for _ in range(300):
            value = rng.getrandbits(64)
            flipped = value
            for bit in rng.sample(range(64), threshold):
                flipped ^= 1 << bit
            bands_a = set(phash_band_keys(value, 64, threshold + 1))
            assert bands_a & set(phash_band_keys(flipped, 64, threshold + 1))
    keys = phash_band_keys((1 << 64) - 1, 64, 5)
    assert [band for band, _ in keys] == [0, 1, 2, 3, 4]
    assert sum(value.bit_count() for _, value in keys) == 64  # the bands cover every bit exactly once
