"""Planted duplicates of the generated sample crawl: each is found, nothing distinct is merged.

The sample crawl (pipeline.sampledata.crawl) plants an exact copy of a page on a mirror, a near copy with
small edits, the same URL crawled at two dates, a cookie notice shared by the pages of one domain, a
site emblem inside the content of more than ten pages, and one photograph re-encoded and resized at
other URLs on other pages. The test extracts the crawl, keeps what the earlier stages would keep
(documents the filters keep, images that download and pass the image filters, bytes read from the
sample's image folder), runs `m3w dedup` and scores documents, paragraphs and images against the
ground truth, printing precision and recall.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.cli import main as m3w
from pipeline.io.documents import parquet_bytes, read_documents
from pipeline.settings import load_config

pytestmark = pytest.mark.slow
# The sample's clusters are tiny: 8 rounds of connected components are plenty (checked: nothing unconverged).
FAST = ["--set", "runner.direct_running_mode=in_memory", "--set", "dedup.near.max_rounds=8",
        "--set", "dedup.images.max_rounds=8"]


def _image_file(root: Path, url: str) -> Path:
    parts = urlsplit(url)
    return root / "images" / parts.netloc / parts.path.lstrip("/")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """(ground truth, documents with image bytes as the download stage would hand them to dedup)."""
    from pipeline.jobs.stages import run_extract
    from pipeline.sampledata.crawl import generate_sample_crawl

    root = tmp_path_factory.mktemp("sample")
    generate_sample_crawl(root / "crawl", seed=0)
    truth = json.loads((root / "crawl" / "ground_truth.json").read_text())
    config = load_config(overrides=["runner.direct_running_mode=in_memory", "extract.timeout_s=0"])
    run_extract([str(root / "crawl" / "crawl.warc.gz")], str(root / "extracted"), config)
    docs = read_documents(sorted(str(p) for p in (root / "extracted" / "documents").glob("*.parquet")))
    pages = {(p["url"], p["warc_date"]): p for p in truth["pages"]}
    reaching = []
    for doc in docs:
        page = pages[(doc.url, doc.warc_date)]
        if page["expected"]["filters"] != "keep" or page["expected"]["images"] == "no_images":
            continue  # the filters or the download stage remove it before image dedup
        # The emblem is never downloaded in a real run (image-URL dedup runs first); here it gets bytes too.
        served = set(page["images_after_download"]) | {u for u, i in truth["images"].items() if i["frequent"]}
        nodes = []
        for node in doc.nodes:
            if node.image is None:
                nodes.append(node)
            elif node.image.url in served:
                node.image.data = _image_file(root / "crawl", node.image.url).read_bytes()
                nodes.append(node)
        doc.nodes = nodes
        reaching.append(doc)
    (root / "input").mkdir()
    (root / "input" / "docs.parquet").write_bytes(parquet_bytes(reaching, True, "zstd"))
    return truth, pages, reaching, root


@pytest.fixture(scope="module")
def deduped(sample):
    truth, pages, docs, root = sample
    out = root / "deduped"
    assert m3w(["dedup", "--input", str(root / "input"), "--output", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    kept = read_documents(sorted(str(p) for p in (out / "documents").glob("*.parquet")))
    return report, kept


def _score(name: str, predicted: set, expected: set) -> tuple[float, float]:
    true_positives = len(predicted & expected)
    precision = true_positives / len(predicted) if predicted else 1.0
    recall = true_positives / len(expected) if expected else 1.0
    print(f"{name:<28} planted={len(expected):<4} found={len(predicted):<4} "
          f"precision={precision:.3f} recall={recall:.3f}")
    return precision, recall


def test_planted_document_duplicates_are_found_and_the_originals_kept(sample, deduped):
    truth, pages, docs, _ = sample
    report, kept = deduped
    key = lambda d: (d.url, d.warc_date)  # noqa: E731
    dropped = {key(d) for d in docs} - {key(d) for d in kept}
    planted = {k for k in map(key, docs) if pages[k]["expected"]["dedup"] == "duplicate"}
    kinds = {pages[k]["kind"] for k in planted}
    assert {"duplicate", "near_duplicate", "old_crawl"} <= kinds  # exact copy, near copy, older crawl
    assert _score("documents", dropped, planted) == (1.0, 1.0)
    kept_urls = {d.url for d in kept}
    assert all(pages[k]["duplicate_of"] in kept_urls for k in planted)  # the original of each copy survives
    stages = report["stages"]
    assert stages["dedup_url"]["documents"]["dropped"] == {"duplicate_url": 1}
    assert stages["dedup_exact"]["documents"]["dropped"] == {"exact_duplicate": 1}
    assert stages["dedup_near"]["documents"]["dropped"] == {"near_duplicate": 1}
    assert stages["dedup_near"]["clusters"]["info"] == {"size_2": 1}
    assert "unconverged_nodes" not in stages["dedup_near"]["components"]["info"]
    assert report["unbalanced"] == []


def test_shared_boilerplate_paragraphs_are_removed_and_nothing_else(sample, deduped):
    truth, _, docs, _ = sample
    _, kept = deduped
    shared = [entry["text"] for entry in truth["shared_paragraphs"]]
    before = {d.doc_id: d for d in docs}
    planted, removed = set(), set()
    for doc in kept:
        old = [p for t in before[doc.doc_id].texts for p in t.split("\n\n")]
        new = {p for t in doc.texts for p in t.split("\n\n")}
        planted |= {(doc.doc_id, p) for p in old if p in shared}
        removed |= {(doc.doc_id, p) for p in old if p not in new}
    assert len(planted) >= 10  # the cookie notice (and the byline, where extraction keeps it) on the domain's pages
    assert _score("boilerplate paragraphs", removed, planted) == (1.0, 1.0)


def test_frequent_and_duplicate_images_are_found_and_distinct_images_kept(sample, deduped):
    truth, pages, docs, _ = sample
    report, kept = deduped
    images = truth["images"]

    def original(url: str) -> str:
        while images.get(url, {}).get("duplicate_of"):
            url = images[url]["duplicate_of"]
        return url

    kept_ids = {d.doc_id for d in kept}
    reaching = [d for d in docs if pages[(d.url, d.warc_date)]["expected"]["dedup"] == "keep"]
    assert {d.doc_id for d in reaching} == kept_ids  # image dedup drops no document of the sample
    occurrences = {(d.doc_id, i, n.image.url) for d in reaching for i, n in enumerate(d.nodes) if n.image}
    after = {(d.doc_id, n.image.url) for d in kept for n in d.nodes if n.image}
    removed = {(doc_id, url) for doc_id, _, url in occurrences if (doc_id, url) not in after}
    frequent = {(doc_id, url) for doc_id, _, url in occurrences if images[url]["frequent"]}
    groups: dict[str, list] = defaultdict(list)
    for doc_id, index, url in occurrences:
        groups[original(url)].append((doc_id, index, url))
    duplicated = {root: members for root, members in groups.items() if len(members) > 1 and root not in
                  {u for _, u in frequent}}
    kinds = {images[url]["duplicate_kind"] for members in duplicated.values() for _, _, url in members}
    assert {"exact_bytes", "perceptual"} <= kinds  # the photo's exact copy and its re-encoded, resized copy
    expected_copies = set()
    for members in duplicated.values():
        survivors = [(doc_id, url) for doc_id, _, url in members if (doc_id, url) in after]
        assert len(survivors) == 1, members  # max_copies = 1: one document keeps the photograph
        expected_copies |= {(doc_id, url) for doc_id, _, url in members} - set(survivors)
    assert len(frequent) > 10
    assert _score("images: frequent URL", removed & frequent, frequent) == (1.0, 1.0)
    assert _score("images: exact + perceptual", removed - frequent, expected_copies) == (1.0, 1.0)
    image_drops = report["stages"]["dedup_images"]["images"]["dropped"]
    assert image_drops.get("exact_duplicate", 0) >= 1 and image_drops.get("perceptual_duplicate", 0) >= 1
    assert report["stages"]["dedup_image_urls"]["images"]["dropped"] == {"frequent_url": len(frequent)}
