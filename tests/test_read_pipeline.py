"""The read → extract → write job on damaged and hostile input: every record is counted, nothing crashes the run."""

from __future__ import annotations

import gzip
import io
import json
import os

import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.io.documents import read_documents
from pipeline.jobs.stages import run_extract
from pipeline.settings import load_config

ARTICLE = (
    "<html><head><title>T{n}</title></head><body><nav><img src='/logo.png'></nav><article>"
    "<h1>Story number {n}</h1><p>{text}</p><figure><img src='/photos/p{n}.jpg' width='640' height='480'"
    " alt='photo {n}'><figcaption>Caption {n}</figcaption></figure><p>{text} And then more words follow here.</p>"
    "</article></body></html>"
)
TEXT = "This is a perfectly ordinary paragraph about gardens, rivers and the long summer evenings of the north."


def warc_bytes(records: list[tuple[str, int, str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for url, status, content_type, body in records:
        headers = StatusAndHeaders(f"{status} X", [("Content-Type", content_type)], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                      http_headers=headers))
    return buffer.getvalue()


@pytest.fixture
def crawl_dir(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    good = [(f"https://news.example/s{n}.html", 200, "text/html; charset=utf-8",
             ARTICLE.format(n=n, text=TEXT).encode()) for n in range(3)]
    junk = [
        ("https://news.example/missing", 404, "text/html", b"<html><body>gone</body></html>"),
        ("https://news.example/p.jpg", 200, "image/jpeg", b"\xff\xd8\xff" + b"0" * 100),
        ("https://news.example/huge", 200, "text/html", b"<html><body><img src=a.jpg>" + b"x" * 300_000 + b"</html>"),
        ("https://news.example/empty", 200, "text/html", b"   "),
        ("https://news.example/binary", 200, "text/html", b"<img " + bytes(range(256)) * 40),
        ("https://news.example/noimg", 200, "text/html", f"<html><body><p>{TEXT}</p></body></html>".encode()),
    ]
    (crawl / "a.warc.gz").write_bytes(warc_bytes(good + junk))
    whole = warc_bytes(good)
    (crawl / "clipped.warc.gz").write_bytes(whole[: int(len(whole) * 0.7)])
    (crawl / "garbage.bin").write_bytes(os.urandom(2000))
    (crawl / "page.html").write_text(ARTICLE.format(n=7, text=TEXT).replace(
        "<head>", "<head><link rel='canonical' href='https://blog.example/seven'>"))
    (crawl / "page2.html.gz").write_bytes(gzip.compress(ARTICLE.format(n=8, text=TEXT).encode()))
    return crawl


def run(inputs, output, *overrides):
    config = load_config(overrides=["runner.direct_running_mode=in_memory", "read.max_html_bytes=200000",
                                    *overrides])
    return run_extract([str(i) for i in inputs], str(output), config)


def test_every_record_is_counted_and_balanced(crawl_dir, tmp_path):
    report = run([crawl_dir], tmp_path / "out")
    stages = report["stages"]
    assert report["unbalanced"] == []
    files = stages["read"]["files"]
    assert files["in"] == 5 and files["dropped"] == {"unsupported_type": 1}
    records = stages["read"]["records"]
    assert records["dropped"] == {"empty": 1, "http_status": 1, "too_large": 1}
    # the picture is an image record, counted apart; `m3w extract` keeps no crawl archive (`m3w build` does)
    assert stages["read"]["images"] == {"in": 1, "out": 0, "dropped": {"no_archive": 1}, "info": {}, "balanced": True}
    pages = stages["extract"]["pages"]
    # 3 good + the clipped file's readable ones + 2 html files + binary + noimg
    assert pages["dropped"]["undecodable"] == 1
    assert pages["dropped"]["no_img_tag"] == 1
    assert pages["out"] >= 6
    assert stages["extract"]["images"]["out"] == pages["out"]  # one figure per article, nav logos left out
    docs = read_documents(sorted(str(p) for p in (tmp_path / "out" / "documents").glob("*.parquet")))
    assert len(docs) == pages["out"]
    by_url = {d.url: d for d in docs}
    assert "https://blog.example/seven" in by_url  # canonical URL of a plain HTML file
    assert not any("logo" in n.image.url for d in docs for n in d.nodes if n.image)
    doc = by_url["https://news.example/s1.html"]
    assert [n.image.url for n in doc.nodes if n.image] == ["https://news.example/photos/p1.jpg"]
    assert doc.nodes[0].text.startswith("Story number 1") and doc.nodes[1].image.caption == "Caption 1"
    assert (tmp_path / "out" / "config.yaml").exists()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["stages"] == stages


def test_clipped_warc_keeps_readable_records(crawl_dir, tmp_path):
    report = run([crawl_dir / "clipped.warc.gz"], tmp_path / "out")
    assert report["stages"]["read"]["records"]["out"] >= 1
    info = report["stages"]["read"]["files"]["info"]
    assert info.get("damaged", 0) == 1 and info["skipped_members"] == 1 and info["skipped_bytes"] > 0
    assert report["unbalanced"] == []


def test_real_damaged_fixtures_do_not_crash(fixtures_dir, tmp_path):
    inputs = [fixtures_dir / "warc" / "clipped.warc.gz", fixtures_dir / "warc" / "warcio-edge-cases",
              fixtures_dir / "warc" / "block-sized-records.warc.gz"]
    report = run(inputs, tmp_path / "out")
    assert report["unbalanced"] == []
    assert report["stages"]["read"]["files"]["in"] >= 15
    assert report["stages"]["read"]["records"]["out"] >= 5  # the readable HTML responses


def test_same_input_gives_identical_parquet(crawl_dir, tmp_path):
    run([crawl_dir], tmp_path / "one")
    run([crawl_dir], tmp_path / "two", "runner.direct_running_mode=multi_processing", "runner.direct_num_workers=2")
    one = sorted((tmp_path / "one" / "documents").glob("*.parquet"))
    assert len(one) == 4
    for path in one:
        assert path.read_bytes() == (tmp_path / "two" / "documents" / path.name).read_bytes()
    assert sum(pq.read_table(p).num_rows for p in one) >= 6


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        run([tmp_path / "nothing-*.warc.gz"], tmp_path / "out")


def test_extraction_timeout_is_a_counted_drop(crawl_dir, tmp_path, monkeypatch):
    report = run([crawl_dir / "page.html"], tmp_path / "out", "extract.timeout_s=0.001")
    assert report["stages"]["extract"]["pages"]["dropped"] == {"timeout": 1}
    assert report["unbalanced"] == []
