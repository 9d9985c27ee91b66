"""Images from the crawl archive (issue 24, part 1): image records kept by the read stage, indexed by normalised
URL (revisits resolved), and looked up by the images stage before anything is downloaded, through another
candidate of the tag when the chosen one is missing; and a WARC written by GNU wget builds offline."""

from __future__ import annotations

import glob
import hashlib
import io
import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.cli import main
from pipeline.core.accounting import query_counts, stage_table
from pipeline.dedup.urls import UrlDedupSettings, url_normalizer
from pipeline.extract.html_images import mark_images, parse_html
from pipeline.images.archive import ArchiveEntry, ChooseSource, CrawlArchive, WriteArchiveIndex, index_table
from pipeline.images.store import ImageStore
from pipeline.images.transforms import STAGES
from pipeline.io.documents import OutputSettings, WriteDocuments, read_documents
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from pipeline.jobs.stages import download_images, runner_settings
from pipeline.read.crawl import ReadCrawl, ReadCrawlFiles, ReadSettings
from pipeline.read.images import ArchivedImage, KeepImages, payload_digest, sniff_image
from pipeline.sampledata.imagehost import ImageHost
from pipeline.settings import load_config
from schemas.document import Document, Image, Node
from tests.wget_crawl import picture

ARTICLE = ("<html><head><title>A walk</title></head><body><article><h1>A walk by the river</h1>"
           "<p>{text}</p><figure><img src='{src}'{srcset}><figcaption>The river at dawn</figcaption></figure>"
           "<p>{text}</p></article></body></html>")
TEXT = ("We walked along the river in the early morning, when the light was soft and the water still. "
        "Herons stood in the shallows and the town was quiet behind us. ") * 4


def http_record(writer: WARCWriter, url: str, body: bytes, content_type: str, status: str = "200 OK",
                headers: tuple[tuple[str, str], ...] = ()) -> None:
    http = StatusAndHeaders(status, [("Content-Type", content_type), *headers], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))


def revisit(writer: WARCWriter, url: str, digest: str, refers_to: str) -> None:
    http = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")], protocol="HTTP/1.1")
    writer.write_record(writer.create_revisit_record(url, digest, refers_to, "2024-01-01T00:00:00Z",
                                                     http_headers=http))


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [picture(n) for n in range(6)]


@pytest.fixture(scope="module")
def crawl(tmp_path_factory, photos) -> Path:
    """One page and every kind of image record: image/jpeg (with an X-Robots-Tag), an octet-stream PNG, a WARC
    resource, a too-large picture, a 404 picture, a stylesheet, a revisit of the first picture under another URL,
    a revisit whose original is not among the inputs."""
    from PIL import Image as PILImage

    png = io.BytesIO()
    PILImage.open(io.BytesIO(photos[1])).resize((160, 160)).save(png, format="PNG")
    path = tmp_path_factory.mktemp("crawl") / "crawl.warc.gz"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        http_record(writer, "https://site.test/walk.html",
                    ARTICLE.format(text=TEXT, src="/p/a.jpg", srcset="").encode(), "text/html; charset=utf-8")
        http_record(writer, "https://site.test/p/a.jpg", photos[0], "image/jpeg", headers=(("X-Robots-Tag", "noai"),))
        http_record(writer, "https://site.test/p/b", png.getvalue(), "application/octet-stream")
        writer.write_record(writer.create_warc_record("https://site.test/p/c.jpg", "resource",
                                                      payload=io.BytesIO(photos[2]), warc_content_type="image/jpeg"))
        http_record(writer, "https://site.test/p/huge.jpg", photos[3] * 40, "image/jpeg")
        http_record(writer, "https://site.test/p/gone.jpg", b"not found", "image/jpeg", status="404 Not Found")
        http_record(writer, "https://site.test/style.css", b"body{color:red}", "text/css")
        digest = payload_digest("", photos[0])
        revisit(writer, "https://mirror.test/a-copy.jpg", digest, "https://site.test/p/a.jpg")
        revisit(writer, "https://site.test/p/elsewhere.jpg", payload_digest("", b"not in this crawl"),
                "https://other.test/x.jpg")
    return path


def test_sniffing_and_digests():
    assert sniff_image(picture(0)[:64]) == "jpeg"
    assert sniff_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 8) == "png" and sniff_image(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff_image(b"<html><body>") is None and sniff_image(b"BM" + b"\0" * 16) is None  # BMP needs its header
    base32 = payload_digest("", b"x")
    # the same digest written in hex, or in lower case, is the same key
    hex_value = __import__("base64").b32decode(base32.split(":")[1]).hex()
    assert payload_digest(f"SHA1:{hex_value}", b"") == base32 == payload_digest(base32.lower(), b"")


def run_read(crawl_file: Path, tmp: Path, max_bytes: int) -> tuple[dict, dict[str, dict]]:
    """ReadCrawl with image records kept and indexed → (read stage table, index rows by URL)."""
    config = load_config(overrides=["runner.direct_running_mode=in_memory", "output.doc_shards=2"])
    url = UrlDedupSettings.from_config(config["dedup"]["url"], "dedup.url")
    store = ImageStore(str(tmp / "store"))
    pipeline = make_pipeline([], runner_settings(config))
    (pipeline | ReadCrawl([str(crawl_file)], ReadSettings.from_config(config["read"], "read"),
                          runner_settings(config).circuit_breaker, KeepImages(store, max_bytes),
                          WriteArchiveIndex(str(tmp / "archive"), url, shards=2))
     | beam.combiners.Count.Globally())
    result = pipeline.run()
    result.wait_until_finish()
    rows = [row for path in sorted(glob.glob(str(tmp / "archive" / "archive-*.parquet")))
            for row in pq.read_table(path).to_pylist()]
    assert len(glob.glob(str(tmp / "archive" / "archive-*.parquet"))) == 2  # every shard, empty or not
    return stage_table(query_counts(result))["read"], {row["url"]: row for row in rows}


def test_image_records_are_kept_counted_and_revisits_resolved(crawl, photos, tmp_path):
    read, index = run_read(crawl, tmp_path, max_bytes=len(photos[3]) * 40 - 1)
    # every record once: images under their own unit, the rest under `records`; both balance
    assert read["records"] == {"in": 3, "out": 1, "dropped": {"http_status": 1, "not_html": 1}, "info": {},
                               "balanced": True}
    assert read["images"]["in"] == 6 and read["images"]["out"] == 5
    assert read["images"]["dropped"] == {"too_large": 1} and read["images"]["balanced"]
    assert read["images"]["info"] == {"archive_urls": 4, "revisits_resolved": 1, "revisits_unresolved": 1}
    store = ImageStore(str(tmp_path / "store"))
    assert set(index) == {"https://site.test/p/a.jpg", "https://site.test/p/b", "https://site.test/p/c.jpg",
                          "https://mirror.test/a-copy.jpg"}
    assert store.get(index["https://site.test/p/a.jpg"]["sha256"]) == photos[0]  # the bytes as crawled
    assert index["https://site.test/p/a.jpg"]["robots"] == "noai"
    assert index["https://site.test/p/c.jpg"]["content_type"] == "image/jpeg"  # the resource record
    copy = index["https://mirror.test/a-copy.jpg"]
    assert copy["sha256"] == index["https://site.test/p/a.jpg"]["sha256"] and copy["via"] == "https://site.test/p/a.jpg"
    assert copy["key"] == "http(s)://mirror.test/a-copy.jpg"  # normalised as image-URL dedup normalises
    # a picture of exactly `download.max_bytes` is kept: too_large starts one byte above (one byte less above)
    _, index = run_read(crawl, tmp_path / "exact", max_bytes=len(photos[3]) * 40)
    assert "https://site.test/p/huge.jpg" in index


def test_an_arc_image_record_is_kept_and_without_an_archive_images_are_counted_apart(tmp_path, photos):
    def arc_record(url: str, content_type: str, body: bytes) -> bytes:
        http = f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        return f"\n{url} 10.0.0.1 20240101000000 {content_type} {len(http) + len(body)}\n".encode() + http + body

    header = b"1 0 m3w test\nURL IP-address Archive-date Content-type Archive-length\n"
    arc = (f"filedesc://t.arc 0.0.0.0 20240101000000 text/plain {len(header)}\n".encode() + header
           + arc_record("http://old.test/p.jpg", "image/jpeg", photos[4]) + b"\n")
    path = tmp_path / "old.arc"
    path.write_bytes(arc)
    config = load_config()
    read = ReadSettings.from_config(config["read"], "read")
    store = ImageStore(str(tmp_path / "store"))
    keep = ReadCrawlFiles(read, runner_settings(config).circuit_breaker, KeepImages(store, 10**7))
    out = [item.value for item in keep.process(str(path))]
    assert [(o.url, store.get(o.sha256) == photos[4]) for o in out] == [("http://old.test/p.jpg", True)]
    assert isinstance(out[0], ArchivedImage) and out[0].digest.startswith("sha1:")
    # a stage command that keeps no archive (m3w extract): image records leave nothing, pages are unchanged
    assert list(ReadCrawlFiles(read, runner_settings(config).circuit_breaker).process(str(path))) == []


def test_every_candidate_of_an_img_is_recorded_best_first():
    tree = parse_html("<html><body><img src='/s.jpg' data-src='/lazy.jpg' "
                      "srcset='/m.jpg 800w, /l.jpg 1600w, /s.jpg 400w'></body></html>")
    image = mark_images(tree, "https://site.test/a/")[0]
    assert image.url == "https://site.test/l.jpg"
    assert image.others == ["https://site.test/l.jpg", "https://site.test/m.jpg", "https://site.test/s.jpg",
                            "https://site.test/lazy.jpg"]
    # however many variants a <picture> offers, src stays a candidate (8 variants, then the attributes)
    sources = "".join(f"<source type='image/webp' srcset='/v{n}.webp {n}00w'>" for n in range(1, 13))
    tree = parse_html(f"<html><body><picture>{sources}<img src='/plain.jpg'></picture></body></html>")
    image = mark_images(tree, "https://site.test/")[0]
    assert image.url == "https://site.test/v1.webp" and len(image.others) == 9  # the first <source>, as browsers
    assert image.others[7:] == ["https://site.test/v8.webp", "https://site.test/plain.jpg"]


# ------------------------------------------------------------------------------------------------
# The images stage: the archive first, the network for the rest (and only with download.network)
# ------------------------------------------------------------------------------------------------
def doc_with(name: str, images: list[tuple[str, list[str]]]) -> Document:
    nodes = [Node(text=f"{name} {TEXT}")]
    for url, others in images:
        nodes += [Node(image=Image(url=url, meta={"candidate_urls": others} if others else {})), Node(text=TEXT)]
    return Document(hashlib.sha1(name.encode()).hexdigest(), f"https://site.test/{name}.html", nodes)


def write_index(tmp: Path, archived: dict[str, tuple[bytes, str]], config: dict) -> CrawlArchive:
    normalize = url_normalizer(UrlDedupSettings.from_config(config["dedup"]["url"], "dedup.url"))
    store = ImageStore(str(tmp / "crawl-store"))
    entries = [ArchiveEntry(normalize(url), url, store.put(data), "image/jpeg", robots, "2024-01-01")
               for url, (data, robots) in archived.items()]
    (tmp / "index").mkdir()
    pq.write_table(index_table(entries), str(tmp / "index" / "archive-00000-of-00001.parquet"))
    return CrawlArchive((str(tmp / "index" / "archive-00000-of-00001.parquet"),), store)


def run_images(docs: list[Document], archive: CrawlArchive, config: dict, tmp: Path) -> tuple[list[Document], dict]:
    pipeline = make_pipeline([], RunnerSettings.from_config(config["runner"], "runner"))
    store = ImageStore.in_workdir(str(tmp / "work"))
    (pipeline | beam.Create(docs) | download_images(config, str(tmp / "work"), archive)
     | WriteDocuments(str(tmp / "out"), OutputSettings.from_config(config["output"], "output"), with_bytes=True,
                      image_store=store))
    result = pipeline.run()
    result.wait_until_finish()
    return read_documents(sorted(glob.glob(str(tmp / "out" / "*.parquet")))), stage_table(query_counts(result), STAGES)


def images_config(*overrides: str) -> dict:
    return load_config(overrides=["runner.direct_running_mode=in_memory", "image_filters.nsfw.enabled=false",
                                  "download.timeout_s=2", "download.retries=0", "output.doc_shards=1", *overrides])


def test_the_archive_beats_the_download_and_a_missing_srcset_variant_falls_back(photos, tmp_path):
    """With the network on: archived pictures are never requested (the host would serve other pictures), an
    <img> whose largest srcset variant the crawl lacks takes its archived `src`, an archived X-Robots-Tag opts out
    as a live one would, and only the URL the crawl lacks is fetched."""
    with ImageHost() as host:
        config = images_config("download.allow_loopback=true", f"download.rewrite_to={host.base_url}")
        archive = write_index(tmp_path, {"https://site.test/a.jpg": (photos[0], ""),
                                         "http://site.test/small.jpg": (photos[1], ""),  # http: normalised as one
                                         "https://site.test/private.jpg": (photos[2], "m3w: noai")}, config)
        docs = [doc_with("one", [("https://site.test/a.jpg", []),
                                 ("https://site.test/large.jpg", ["https://site.test/small.jpg"])]),
                doc_with("two", [("https://site.test/private.jpg", []), ("https://live.test/fetched.jpg", [])])]
        out, table = run_images(docs, archive, config, tmp_path)
        requested = host.requested_targets()
    assert requested == ["/live.test/fetched.jpg"]
    urls = table["download"]["urls"]
    assert urls["in"] == 4 and urls["info"]["from_archive"] == 3 and urls["info"]["requests"] == 1
    assert urls["dropped"] == {"opted_out_header": 1}
    assert table["download"]["images"]["info"] == {"archive_alternate": 1}
    by_name = {doc.url.rsplit("/", 1)[1].removesuffix(".html"): doc for doc in out}
    one = by_name["one"].images
    assert [i.url for i in one] == ["https://site.test/a.jpg", "https://site.test/small.jpg"]
    assert one[1].meta["chosen_url"] == "https://site.test/large.jpg" and one[1].meta["from_archive"] is True
    assert [(i.url, i.meta.get("from_archive")) for i in by_name["two"].images] == [
        ("https://live.test/fetched.jpg", None)]


def test_network_off_requests_nothing_and_names_what_the_crawl_lacks(photos, tmp_path):
    with ImageHost() as host:
        config = images_config("download.network=false", "download.allow_loopback=true",
                               f"download.rewrite_to={host.base_url}")
        archive = write_index(tmp_path, {"https://site.test/a.jpg": (photos[0], "")}, config)
        docs = [doc_with("one", [("https://site.test/a.jpg", []), ("https://live.test/b.jpg", [])]),
                doc_with("two", [("http://10.0.0.1/c.jpg", [])])]  # an unsafe address: no request either way
        out, table = run_images(docs, archive, config, tmp_path)
        assert host.requested_targets() == []
    urls = table["download"]["urls"]
    assert urls["in"] == 3 and urls["info"]["from_archive"] == 1 and "requests" not in urls["info"]
    assert urls["dropped"] == {"not_in_archive": 2}
    assert [[i.url for i in doc.images] for doc in out] == [["https://site.test/a.jpg"]]


def test_a_refused_address_the_crawl_lacks_is_refused_per_use_before_any_url_shard():
    refused: list = []
    choose = ChooseSource("download", lambda url: "refused:" + url if "10.0.0.1" in url else None)
    found = [(1, "https://x.test/src.jpg", None), (0, "http://10.0.0.1/big.jpg", None)]
    for item in choose.process((("doc", 3), found)):
        refused.append(item.value if isinstance(item, beam.pvalue.TaggedOutput) else ("url", item))
    assert refused == [("doc", (3, "refused:http://10.0.0.1/big.jpg"))]
    entry = ArchiveEntry("k", "https://x.test/src.jpg", "sha", "image/jpeg", "", "")
    assert list(choose.process((("doc", 3), [(1, "https://x.test/src.jpg", entry), *found[1:]]))) == [
        ("https://x.test/src.jpg", (("doc", 3), entry))]


# ------------------------------------------------------------------------------------------------
# A real crawler's WARC, built with the defaults and no image host
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_wget_crawl_builds_offline_with_every_picture_from_the_archive(wget_builds, capsys):
    output = wget_builds / "without"  # the defaults with `--canaries 0` (the canaries prove nothing about the archive)
    report = json.loads((output / "report.json").read_text())
    images = report["images"]
    assert images["urls"] >= 20 and images["from_archive"] >= 0.95 * images["urls"] and images["requests"] == 0
    assert report["stages"]["download"]["images"]["out"] >= 20  # every kept picture came from the crawl
    assert report["stages"]["read"]["images"]["balanced"] and report["unbalanced"] == []
    assert report["stages"]["download"]["images"]["info"]["archive_alternate"] >= 1  # src for a missing srcset
    docs = read_documents(sorted(glob.glob(str(output / "stages" / "images" / "*.parquet"))))
    assert docs and all(image.meta["from_archive"] for doc in docs for image in doc.images)
    capsys.readouterr()
    assert main(["inspect", "validate", str(output / "stages" / "shards")]) == 0
