"""`m3w build` against a benchmark made from the sample crawl's own data (issue 26, done when): 25 of its pictures
resized to 90% and re-encoded at JPEG quality 70, 8 of them also cropped 3% on each side, and 10 passages of 20
words from other documents. The shards hold none of them, and the build loses little else."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from pipeline.cli import main as m3w
from pipeline.dedup.keys import shingle_words, split_paragraphs
from pipeline.io.documents import read_documents
from pipeline.jobs.stages import extract_page
from pipeline.read.crawl import Page, charset_of
from pipeline.sampledata.imagehost import ImageHost
from pipeline.settings import load_config
from schemas.document import Document

PICTURES, CROPPED, PASSAGES, PASSAGE_WORDS = 25, 8, 10, 20
UNRELATED_PICTURES_LOST = 24  # "all but at most a few dozen": 2 were lost on this crawl (overlapping crops)


def file_of(crawl: Path, url: str) -> Path:
    return crawl / "images" / url.split("://", 1)[1].split("?", 1)[0]


def planted_picture(data: bytes, cropped: bool) -> bytes:
    with Image.open(io.BytesIO(data)) as original:
        picture = original.convert("RGB")
    picture = picture.resize((round(picture.width * 0.9), round(picture.height * 0.9)), Image.Resampling.LANCZOS)
    if cropped:
        dx, dy = round(picture.width * 0.03), round(picture.height * 0.03)
        picture = picture.crop((dx, dy, picture.width - dx, picture.height - dy))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def kept_pages(truth: dict) -> list[dict]:
    """Pages whose documents reach the shards with pictures (the crawl's ground truth), canaries aside."""
    return [page for page in truth["pages"] if page["expected"].get("images") == "keep"
            and page["expected"].get("dedup") == "keep" and not page.get("canary_classes")]


def extracted(crawl: Path, truth: dict) -> dict[str, Document]:
    """The documents this m3w extracts from the pages that reach the shards, by page URL."""
    pages = {(page["url"], page["warc_date"]) for page in kept_pages(truth)}
    config = load_config(overrides=["extract.timeout_s=0"])
    documents = {}
    with open(crawl / "crawl.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            key = (record.rec_headers.get_header("WARC-Target-URI"), record.rec_headers.get_header("WARC-Date"))
            if record.rec_type != "response" or key not in pages:
                continue
            page = Page(url=key[0], body=record.content_stream().read(), source="crawl.warc.gz", date=key[1],
                        charset=charset_of(record.http_headers.get_header("Content-Type")))
            document = extract_page(page, config).document
            if document is not None:
                documents[key[0]] = document
    return documents


def benchmark_pictures(crawl: Path, truth: dict, documents: dict[str, Document]) -> list[str]:
    """25 pictures that reach the shards: extracted, downloaded and kept by the image filters (ground truth),
    photographs and drawings served as files, no planted duplicate."""
    after_download = {url for page in kept_pages(truth) for url in page["images_after_download"]}
    candidates = sorted({image.url for document in documents.values() for image in document.images
                         if image.url in after_download and truth["images"][image.url]["kind"] in ("photo", "generated")
                         and not truth["images"][image.url]["duplicate_of"] and file_of(crawl, image.url).exists()})
    return candidates[::len(candidates) // PICTURES][:PICTURES]


def benchmark_passages(truth: dict, documents: dict[str, Document], pictures: list[str]) -> list[str]:
    """20 words from the longest paragraph of each of 10 other documents (none of the site's boilerplate)."""
    shared = {" ".join(p["text"].split()) for p in truth["shared_paragraphs"]}
    others = [doc for url, doc in sorted(documents.items()) if not {i.url for i in doc.images} & set(pictures)]
    passages = []
    for document in others[:PASSAGES]:
        paragraphs = [p for text in document.texts for p in split_paragraphs(text) if " ".join(p.split()) not in shared]
        longest = max(paragraphs, key=lambda p: len(p.split())).split()
        passages.append(" ".join(longest[4:4 + PASSAGE_WORDS]))
    assert len(passages) == PASSAGES
    return passages


@pytest.fixture(scope="module")
def build(small_sample_crawl, tmp_path_factory) -> dict:
    crawl = small_sample_crawl
    truth = json.loads((crawl / "ground_truth.json").read_text())
    root = tmp_path_factory.mktemp("decontaminate-build")
    documents = extracted(crawl, truth)
    urls = benchmark_pictures(crawl, truth, documents)
    (root / "bench").mkdir()
    for number, url in enumerate(urls):
        (root / "bench" / f"{number:02d}.jpg").write_bytes(planted_picture(file_of(crawl, url).read_bytes(),
                                                                          cropped=number < CROPPED))
    passages = benchmark_passages(truth, documents, urls)
    (root / "passages.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))
    out = root / "build"
    with ImageHost(crawl / "images") as host:
        settings = [f"download.rewrite_to={host.base_url}", "download.allow_loopback=true",
                    "image_filters.nsfw.enabled=false", "runner.direct_running_mode=in_memory",
                    f'decontaminate.images=["{root}/bench/*.jpg"]', f'decontaminate.texts=["{root}/passages.jsonl"]']
        argv = ["build", "--input", str(crawl / "crawl.warc.gz"), "--output", str(out), "--canaries", "0"]
        code = m3w([*argv, *(arg for setting in settings for arg in ("--set", setting))])
    return {"code": code, "out": out, "urls": urls, "passages": passages, "root": root}


@pytest.mark.slow
def test_the_shards_hold_no_benchmark_picture_or_passage_and_lose_little_else(build):
    out = build["out"]
    assert build["code"] == 0
    report = json.loads((out / "report.json").read_text())
    assert report["unbalanced"] == [] and report["broken_links"] == []
    stage = report["stages"]["decontaminate"]

    # Every planted picture and passage was found, and named in the audit trail beside the report.
    audit = [json.loads(line) for line in (out / "contamination.jsonl").read_text().splitlines()]
    pictures = [r for r in audit if r["match"] == "picture"]
    assert {Path(r["file"]).name for r in pictures} == {f"{n:02d}.jpg" for n in range(PICTURES)}
    assert {r["picture"] for r in pictures} >= set(build["urls"])
    assert {r["item"] for r in audit if r["match"] == "paragraph"} == {f"line {n} text" for n in range(1, 11)}
    assert stage["benchmark_pictures"]["info"] == {"indexed": PICTURES}
    assert stage["benchmark_passages"]["info"] == {"indexed": PASSAGES}

    # The shards' documents hold none of them.
    docs = read_documents(sorted(str(p) for p in (out / "stages" / "shards" / "docs").glob("*.parquet")))
    assert docs
    assert not {image.url for doc in docs for image in doc.images} & set(build["urls"])
    texts = [" ".join(shingle_words(doc.text)) for doc in docs]
    for passage in build["passages"]:
        assert not any(" ".join(shingle_words(passage)) in text for text in texts), passage

    # Little else is lost: the paragraphs that held the passages, no document, a few overlapping pictures.
    unrelated = {r["picture"] for r in pictures} - set(build["urls"])
    assert len(unrelated) <= UNRELATED_PICTURES_LOST, sorted(unrelated)
    assert stage["paragraphs"]["dropped"] == {"contaminated": PASSAGES}
    assert stage["documents"]["dropped"].get("contaminated", 0) == 0
    assert "Benchmark contamination" in (out / "report.html").read_text()
    assert report["contamination"]["matches"] == len(audit)
