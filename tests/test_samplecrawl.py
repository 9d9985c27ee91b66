"""The bundled sample crawl: deterministic bytes, a readable WARC, served images as promised, canaries,
and the planted cases (blocklisted domain, profanity, duplicates) really planted."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from pipeline.canaries.shapes import CANARY_CLASSES, is_canary_url, render_canary
from pipeline.core.failures import BreakerSettings
from pipeline.read.crawl import ReadCrawlFiles, ReadSettings
from pipeline.sampledata.crawl import generate_sample_crawl
from pipeline.sampledata.crawl import text as text_module
from pipeline.sampledata.crawl.generate import BLOCKLISTED_DOMAIN, FAIL_KINDS, IMG_HOST
from pipeline.sampledata.crawl.text import Topic, profanity_words
from pipeline.settings import load_config

PAGE_FIELDS = {"url", "kind", "lang", "warc_date", "images", "text_before_image", "excluded_images", "expected",
               "duplicate_of", "tags"}
IMAGE_FIELDS = {"kind", "class", "duplicate_of", "served", "failure"}
CONTENT_KINDS = {"photo", "generated", "canary", "logo"}


def generated_sample(tmp_path_factory) -> tuple[Path, dict]:
    """The seed-0 sample crawl, generated once per test session (ground_truth.json is written last)."""
    out = tmp_path_factory.getbasetemp() / "sample-crawl-seed0"
    if not (out / "ground_truth.json").exists():
        generate_sample_crawl(out, seed=0)
    return out, json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> tuple[Path, dict]:
    return generated_sample(tmp_path_factory)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _image_path(root: Path, url: str) -> Path:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return root / "images" / parts.hostname / parts.path.lstrip("/")


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(crawl, tmp_path):
    root, _ = crawl
    generate_sample_crawl(tmp_path / "again", seed=0)
    assert _tree(tmp_path / "again") == _tree(root)
    generate_sample_crawl(tmp_path / "other", seed=1, n_canary_pages=2)
    assert (tmp_path / "other" / "crawl.warc.gz").read_bytes() != (root / "crawl.warc.gz").read_bytes()


def test_ground_truth_has_every_planted_kind(crawl):
    _, truth = crawl
    pages = truth["pages"]
    assert 80 <= len(pages) <= 130
    for page in pages:
        assert PAGE_FIELDS <= set(page), page["url"]
        assert len(page["images"]) == len(page["text_before_image"])
        assert set(page["expected"]) == {"extract", "filters", "dedup", "images"}
    kinds = Counter(p["kind"] for p in pages)
    for kind in ("article", "blog", "gallery", "canary", "no_images", "boilerplate_only", "non_english", "spam",
                 "profane", "blocklisted", "duplicate", "near_duplicate", "old_crawl", "opt_out", "image_failure",
                 "image_filters"):
        assert kinds[kind] >= 1, kind
    assert kinds["canary"] == 48
    assert {p["lang"] for p in pages if p["kind"] == "non_english"} == {"de", "fr", "es"}
    reasons = Counter(p["expected"]["filters"] for p in pages)
    assert {"language", "spam", "flagged_words", "url_blocklist"} <= set(reasons)
    tags = {t for p in pages for t in p["tags"]}
    for tag in ("srcset_w", "srcset_x", "picture", "lazy", "relative", "root_relative", "base_href", "data_srcset",
                "noscript", "latin1", "frequent_image", "shared_paragraphs", "opt_out_meta", "opt_out_header"):
        assert tag in tags, tag
    for page in pages:
        for url in page["images"]:
            assert url in truth["images"], url
    statuses = {r["status"] for r in truth["other_records"]}
    assert {200, 301, 404} <= statuses


def default_reader() -> ReadCrawlFiles:
    config = load_config()
    return ReadCrawlFiles(ReadSettings.from_config(config["read"], "read"),
                          BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker"))


def test_pipeline_reader_keeps_exactly_the_html_pages(crawl):
    root, truth = crawl
    reader = default_reader()
    read = list(reader.process(str(root / "crawl.warc.gz")))
    assert sorted((p.url, p.date) for p in read) == sorted((p["url"], p["warc_date"]) for p in truth["pages"])
    by_url = {(p.url, p.date): p for p in read}
    latin = next(p for p in truth["pages"] if "latin1" in p["tags"])
    assert by_url[(latin["url"], latin["warc_date"])].charset == "iso-8859-1"
    header_opt_out = next(p for p in truth["pages"] if "opt_out_header" in p["tags"])
    assert by_url[(header_opt_out["url"], header_opt_out["warc_date"])].robots_header == "noai"


def test_warc_has_requests_fixed_dates_and_a_newer_crawl_first(crawl):
    from warcio.archiveiterator import ArchiveIterator

    root, truth = crawl
    types, order = Counter(), []
    with open(root / "crawl.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            types[record.rec_type] += 1
            if record.rec_type == "response":
                order.append((record.rec_headers.get_header("WARC-Target-URI"),
                              record.rec_headers.get_header("WARC-Date")))
    assert types["request"] == types["response"] == len(truth["pages"]) + len(truth["other_records"])
    assert types["warcinfo"] == 1
    old = next(p for p in truth["pages"] if p["kind"] == "old_crawl")
    dates = [d for u, d in order if u == old["url"]]
    assert len(dates) == 2 and dates[0] > dates[1] == old["warc_date"]


def test_served_images_exist_decode_and_pass_the_image_filters_unless_planted(crawl):
    root, truth = crawl
    total = 0
    for url, image in truth["images"].items():
        path = _image_path(root, url) if url.startswith("http") else None
        if image["failure"]:
            assert image["failure"] in FAIL_KINDS
            assert url.startswith(f"{IMG_HOST}/fail/{image['failure']}/")
            assert not image["served"] and not path.exists()
            continue
        if not image["served"]:
            continue
        data = path.read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        if image["format"] == "svg":
            assert data.startswith(b"<svg") and image["node_rule"] == "bad_format"
            continue
        with Image.open(io.BytesIO(data)) as decoded:
            size = decoded.size
        assert [size[0], size[1]] == [image["width"], image["height"]], url
        if image["kind"] in CONTENT_KINDS and image["pages"]:
            short, long_ = min(size), max(size)
            if image["filter"] == "min_side":
                assert short < 150, url
            elif image["filter"] == "aspect_ratio":
                assert not 0.5 <= size[0] / size[1] <= 2, url
            else:
                assert short >= 200 and long_ <= 640 and 0.5 <= size[0] / size[1] <= 2, (url, size)
    assert total < 8_000_000
    failures = {i["failure"] for i in truth["images"].values() if i["failure"]}
    assert failures == set(FAIL_KINDS)


def test_distinct_images_are_perceptually_distinct_and_planted_duplicates_are_not(crawl):
    root, truth = crawl
    hashes = {}
    for url, image in truth["images"].items():  # every served picture, logos and icons too (not 1x1 pixels)
        if image["served"] and image["format"] != "svg" and min(image["width"], image["height"]) > 1:
            with Image.open(_image_path(root, url)) as decoded:
                hashes[url] = imagehash.phash(decoded.convert("RGB"))
    planted = {url: image["duplicate_of"] for url, image in truth["images"].items() if image["duplicate_of"]}
    distinct = [u for u in hashes if u not in planted]
    closest = min(hashes[a] - hashes[b] for a, b in itertools.combinations(distinct, 2))
    assert closest >= 10
    kinds = Counter(truth["images"][u]["duplicate_kind"] for u in planted if u in hashes)
    assert kinds["perceptual"] >= 1 and kinds["exact_bytes"] >= 1
    for url, original in planted.items():
        if url in hashes:
            assert hashes[url] - hashes[original] <= 6, url
            if truth["images"][url]["duplicate_kind"] == "exact_bytes":
                assert truth["images"][url]["sha256"] == truth["images"][original]["sha256"]
            else:
                assert truth["images"][url]["sha256"] != truth["images"][original]["sha256"]


def test_planted_page_duplicates(crawl):
    root, truth = crawl
    from warcio.archiveiterator import ArchiveIterator

    bodies = {}
    with open(root / "crawl.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            if record.rec_type == "response":
                key = (record.rec_headers.get_header("WARC-Target-URI"), record.rec_headers.get_header("WARC-Date"))
                bodies[key] = record.content_stream().read()
    pages = {p["url"]: p for p in truth["pages"] if p["kind"] != "old_crawl"}
    for page in truth["pages"]:
        if page["expected"]["dedup"] == "duplicate":
            original = pages[page["duplicate_of"]]
            assert original["expected"]["dedup"] == "keep"
            mine, theirs = bodies[(page["url"], page["warc_date"])], bodies[(original["url"], original["warc_date"])]
            assert (mine == theirs) == (page["kind"] == "duplicate")
            if page["kind"] == "old_crawl":
                assert page["url"] == original["url"] and page["warc_date"] < original["warc_date"]
            else:
                assert page["url"] > original["url"] and page["warc_date"] > original["warc_date"]
    frequent = [u for u, i in truth["images"].items() if i["frequent"]]
    assert frequent and all(len(truth["images"][u]["pages"]) > 10 for u in frequent)
    shared = truth["shared_paragraphs"]
    assert shared and all(len(entry["pages"]) > 10 for entry in shared)


def test_blocklisted_domain_is_in_datatrove_ut1_list_and_no_other_sample_url_is():
    import datatrove

    archive = Path(datatrove.__file__).parent / "assets" / "url_filterblacklistsv0_3_0.tar.gz"
    with tarfile.open(archive) as tar:
        domains = b"\n" + tar.extractfile("domains").read()
    assert b"\n" + BLOCKLISTED_DOMAIN.encode() + b"\n" in domains
    for host in ("sample-web.test", "www.sample-web.test", "img.sample-web.test", "canary.sample-web.test"):
        assert b"\n" + host.encode() + b"\n" not in domains


def test_only_the_blocklisted_page_trips_datatrove_url_word_lists(crawl):
    import datatrove

    _, truth = crawl
    assets = Path(datatrove.__file__).parent / "assets"

    def words(name: str) -> set[str]:
        lines = (assets / name).read_text().splitlines()
        return {re.sub(r"[^a-z0-9]+", "", w.lower()) for w in lines if w and not w.startswith("#")} - {""}

    banned, subwords = words("banned_words.txt"), words("banned_subwords.txt")
    for page in truth["pages"]:
        if page["kind"] == "blocklisted":
            continue
        url_words = set(re.split(r"[^a-zA-Z0-9]+", page["url"].lower()))
        assert not url_words & banned, page["url"]
        flat = re.sub(r"[^a-z0-9]+", "", page["url"].lower())
        assert not [w for w in subwords if w in flat], page["url"]


def test_profanity_only_on_the_profane_page(crawl):
    root, truth = crawl
    from lxml import html as lxml_html
    from warcio.archiveiterator import ArchiveIterator

    flagged = set(profanity_words())
    kinds = {(p["url"], p["warc_date"]): p["kind"] for p in truth["pages"]}
    seen = Counter()
    with open(root / "crawl.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            key = (record.rec_headers.get_header("WARC-Target-URI"), record.rec_headers.get_header("WARC-Date"))
            if record.rec_type != "response" or key not in kinds:
                continue
            body = record.content_stream().read()
            text = lxml_html.document_fromstring(body).text_content().lower()
            words = re.findall(r"[a-z]+", text)
            ratio = sum(w in flagged for w in words) / len(words)
            if kinds[key] == "profane":
                assert ratio > 0.03
                seen["profane"] += 1
            else:
                assert ratio == 0, (key, [w for w in words if w in flagged][:5])
    assert seen["profane"] == 1
    vocabulary = set()
    for name, value in vars(text_module).items():
        if not name.isupper():
            continue
        values = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else ()
        for item in values:
            if isinstance(item, Topic):
                parts = item.nouns + item.adjectives
            else:
                parts = item if isinstance(item, tuple) else (item,)
            vocabulary.update(w for part in parts if isinstance(part, str) for w in re.findall(r"[a-z]+", part.lower()))
    for writer in text_module.FOREIGN_WRITERS.values():
        for options in writer.slots.values():
            vocabulary.update(w for option in options for w in re.findall(r"[a-z]+", option.lower()))
    assert len(vocabulary) > 800
    assert not vocabulary & flagged


def test_canary_rendering_is_deterministic_and_varied():
    assert len(CANARY_CLASSES) == 8 and len(set(CANARY_CLASSES)) == 8
    first = np.asarray(render_canary("star", 7, 128))
    assert first.shape == (128, 128, 3)
    assert np.array_equal(first, np.asarray(render_canary("star", 7, 128)))
    assert not np.array_equal(first, np.asarray(render_canary("star", 8, 128)))
    with pytest.raises(ValueError):
        render_canary("hexagon", 0, 64)


def test_canary_shapes_are_separable_from_their_background():
    """Each picture's shape stands out: the shape colour covers a sizeable, not overwhelming, area."""
    for cls in CANARY_CLASSES:
        for variant in range(6):
            pixels = np.asarray(render_canary(cls, variant, 96), dtype=np.float32)
            grey = pixels.mean(axis=2)
            border = np.concatenate([grey[:4].ravel(), grey[-4:].ravel(), grey[:, :4].ravel(), grey[:, -4:].ravel()])
            far = np.abs(grey - np.median(border)) > 60
            assert 0.02 < far.mean() < 0.7, (cls, variant, far.mean())


def test_canary_notes_pass_the_paragraph_rules():
    """The note after a canary picture must survive the text filters, or its class word never reaches a shard."""
    import random

    from filters.base import TextItem
    from filters.text_quality import ParagraphRules, ParagraphSettings
    from pipeline.canaries.shapes import canary_paragraph
    from pipeline.sampledata.crawl.pages import CANARY_NOTE_WORDS

    rules = ParagraphRules(ParagraphSettings.from_config(load_config()["filters"]["paragraph"]))
    rng = random.Random(0)
    for _ in range(500):
        paragraph = canary_paragraph(rng.choice(CANARY_CLASSES), rng, *CANARY_NOTE_WORDS)
        verdict = rules(TextItem(text=paragraph, lang="en"))
        assert verdict.keep, (paragraph, verdict)


def test_canary_pages_and_urls(crawl):
    _, truth = crawl
    canary_pages = [p for p in truth["pages"] if p["kind"] == "canary"]
    per_class = Counter()
    for page in canary_pages:
        assert is_canary_url(page["url"])
        assert 4 <= len(page["images"]) <= 6
        assert [truth["images"][u]["class"] for u in page["images"]] == page["canary_classes"]
        for url in page["images"]:
            assert is_canary_url(url) and truth["images"][url]["kind"] == "canary"
            per_class[truth["images"][url]["class"]] += 1
    assert set(per_class) == set(CANARY_CLASSES)
    expected = sum(per_class.values()) / len(CANARY_CLASSES)  # independent uniform draws: each near its share
    assert all(0.5 * expected < n < 1.5 * expected for n in per_class.values()), per_class
    others = [p for p in truth["pages"] if p["kind"] != "canary"]
    assert not any(is_canary_url(p["url"]) or any(is_canary_url(u) for u in p["images"]) for p in others)
    assert not is_canary_url("not a url") and not is_canary_url(f"{IMG_HOST}/photos/x.jpg")


def test_canary_classes_can_be_chosen(tmp_path):
    truth = generate_sample_crawl(tmp_path / "two", seed=3, n_canary_pages=4, canary_classes=("ring", "dots"))
    assert truth["canary_classes"] == ["ring", "dots"]
    drawn = {truth["images"][u]["class"] for p in truth["pages"] if p["kind"] == "canary" for u in p["images"]}
    assert drawn == {"ring", "dots"}
    with pytest.raises(ValueError, match="canary classes"):
        generate_sample_crawl(tmp_path / "bad", n_canary_pages=1, canary_classes=("hexagon",))


def test_sample_command_writes_a_crawl(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["sample", "--output", str(tmp_path), "--seed", "2", "--canary-pages", "1"]) == 0
    assert (tmp_path / "crawl.warc.gz").stat().st_size > 0
    assert (tmp_path / "ground_truth.json").exists() and (tmp_path / "images").is_dir()
    assert "HTML pages" in capsys.readouterr().out


def test_bulk_pages_add_volume_after_the_planted_web_with_pictures_from_the_image_host(crawl, tmp_path):
    from pipeline.sampledata.crawl.generate import BULK_IMAGE_SIZE, BULK_PAGES_PER_SITE
    from pipeline.sampledata.imagehost import ImageHost

    _, base = crawl
    truth = generate_sample_crawl(tmp_path / "bulk", seed=0, bulk_pages=120, bulk_images_per_page=2)
    bulk = [page for page in truth["pages"] if "bulk" in page["tags"]]
    planted = [page for page in truth["pages"] if "bulk" not in page["tags"]]
    key = lambda page: (page["url"], page["warc_date"])  # noqa: E731
    assert sorted(planted, key=key) == sorted(base["pages"], key=key), "bulk pages leave the planted web as it is"
    assert len(bulk) == 120 and all(len(page["images"]) == 2 and page["expected"]["images"] == "keep"
                                    for page in bulk)
    sites = {page["url"].split("/")[2] for page in bulk}
    assert len(sites) == -(-120 // BULK_PAGES_PER_SITE)
    urls = [url for page in bulk for url in page["images"]]
    assert len(set(urls)) == len(urls) and all(truth["images"][u]["served"] for u in urls)
    assert not (tmp_path / "bulk" / "images" / "img.sample-web.test" / "bulk").exists(), "no file: the host draws it"
    with ImageHost(root=tmp_path / "bulk" / "images") as host:
        pictures = [host.response_for(host.url_for(url).removeprefix(host.base_url)).body for url in urls[:6]]
    for data in pictures:
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.size == BULK_IMAGE_SIZE and decoded.format == "JPEG"
    assert len({hashlib.sha256(data).digest() for data in pictures}) == len(pictures)
    read = {page.url for page in default_reader().process(str(tmp_path / "bulk" / "crawl.warc.gz"))}
    assert read == {page["url"] for page in truth["pages"]}
