"""End to end through `DownloadImages` against the local image host: failure kinds, opt-outs, placement,
the generated sample crawl, real fixture pages, and resuming a killed `m3w download`.

Every run records each socket connection and name lookup of this process (an audit hook), so the
tests prove that nothing outside 127.0.0.1 was contacted and no sample host name was ever resolved.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import imagehash
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

from filters.nsfw import NsfwScorer
from pipeline.cli import main
from pipeline.core.accounting import query_counts, stage_table, unbalanced
from pipeline.core.failures import BreakerSettings
from pipeline.images.download import results_from_parquet
from pipeline.images.store import ImageStore
from pipeline.images.transforms import STAGES
from pipeline.io.documents import OutputSettings, WriteDocuments, parquet_bytes, read_documents
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from pipeline.jobs.stages import download_images, extract_page
from pipeline.read.crawl import Page, ReadCrawlFiles, ReadSettings
from pipeline.sampledata.imagehost import FAILURE_REASONS, ImageHost
from pipeline.settings import load_config
from schemas.document import Document, Image, Node, make_doc_id

REPO = Path(__file__).resolve().parents[1]
NETWORK: list[tuple[str, object]] = []


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect" and isinstance(args[1], tuple):
        NETWORK.append(("connect", args[1][0]))
    elif event == "socket.getaddrinfo":
        NETWORK.append(("lookup", args[0]))


sys.addaudithook(_audit)


def images_config(host: ImageHost, *overrides: str, nsfw: bool = False) -> dict:
    return load_config(overrides=[
        "runner.direct_running_mode=in_memory", f"download.rewrite_to={host.base_url}",
        "download.allow_loopback=true", "download.timeout_s=1", "download.retries=0", "download.urls_per_shard=16",
        f"image_filters.nsfw.enabled={str(nsfw).lower()}", "output.doc_shards=2", *overrides])


def run_images(docs: list[Document], config: dict, tmp: Path) -> tuple[list[Document], dict]:
    """DownloadImages on in-memory documents → (written documents read back, stage table)."""
    pipeline = make_pipeline([], RunnerSettings.from_config(config["runner"], "runner"))
    output = OutputSettings.from_config(config["output"], "output")
    (pipeline | beam.Create(docs) | download_images(config, str(tmp / "work"))
     | WriteDocuments(str(tmp / "out"), output, with_bytes=True, image_store=ImageStore.in_workdir(str(tmp / "work"))))
    NETWORK.clear()
    result = pipeline.run()
    result.wait_until_finish()
    table = stage_table(query_counts(result), STAGES)
    return read_documents(sorted(glob.glob(str(tmp / "out" / "*.parquet")))), table


def assert_only_local_network(extra_names: tuple[str, ...] = ()) -> None:
    connects = {address for kind, address in NETWORK if kind == "connect"}
    lookups = {str(name) for kind, name in NETWORK if kind == "lookup"}
    assert connects <= {"127.0.0.1"}, connects
    assert lookups <= {"127.0.0.1", *extra_names}, lookups


def shard_results(workdir: Path) -> dict[str, object]:
    results = {}
    for path in sorted(workdir.glob("shards/*.parquet")):
        results.update((r.url, r) for r in results_from_parquet(path.read_bytes()))
    return results


def served_body(host: ImageHost, url: str) -> bytes:
    """The bytes the host ends up serving for an original image URL (following its redirects)."""
    response = host.response_for(host.url_for(url).removeprefix(host.base_url))
    while response.status in (301, 302):
        response = host.response_for(dict(response.headers)["Location"])
    return response.body


def square_phash(data: bytes) -> imagehash.ImageHash:
    """pHash of the centre square (what center_crop keeps), so originals compare with stored images."""
    picture = PILImage.open(io.BytesIO(data)).convert("RGB")
    w, h = picture.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return imagehash.phash(picture.crop((left, top, left + side, top + side)))


def expected_nodes(doc: Document, survivors: set[str]) -> list[tuple[str, str]]:
    kept = copy.deepcopy(doc)
    kept.nodes = [n for n in kept.nodes if n.image is None or n.image.url in survivors]
    kept.normalize_nodes()
    return [("image", n.image.url) if n.image else ("text", n.text) for n in kept.nodes]


def assert_images_in_place(inputs: list[Document], outputs: list[Document], host: ImageHost, config: dict,
                           survivors: set[str]) -> int:
    """Each output document = its input minus the dropped images, and each stored picture is its own URL's."""
    by_id = {d.doc_id: d for d in inputs}
    assert config["download"]["rewrite_to"] == host.base_url
    originals = {image.url: served_body(host, image.url) for doc in outputs for image in doc.images}
    reference = {url: square_phash(body) for url, body in originals.items()}
    placed = 0
    for doc in outputs:
        assert [(("image", n.image.url) if n.image else ("text", n.text)) for n in doc.nodes] == \
            expected_nodes(by_id[doc.doc_id], survivors), doc.url
        for image in doc.images:
            assert image.data and image.meta["sha256"] == hashlib.sha256(image.data).hexdigest()
            stored = PILImage.open(io.BytesIO(image.data))
            assert stored.size == (320, 320) and image.meta["resize_mode"] == "center_crop"
            original = PILImage.open(io.BytesIO(originals[image.url]))
            assert (image.meta["original_width"], image.meta["original_height"]) == original.size
            stored_hash = square_phash(image.data)
            distances = {url: stored_hash - ref for url, ref in reference.items()}
            # Its own picture is the nearest (planted duplicates of it may tie, nothing else comes close).
            assert distances[image.url] == min(distances.values()) and distances[image.url] <= 8, image.url
            placed += 1
    return placed


def text_image_doc(name: str, urls: list[str], **metadata) -> Document:
    nodes = [Node(text=f"Introduction of {name}.")]
    for i, url in enumerate(urls):
        nodes += [Node(image=Image(url=url, alt=f"alt {i}")), Node(text=f"Text after image {i} of {name}.")]
    page = f"https://site.example/{name}"
    return Document(doc_id=make_doc_id(page, "test.warc.gz", 0), url=page, nodes=nodes, metadata=metadata)


def name_of(doc: Document) -> str:
    return doc.url.rsplit("/", 1)[-1]


@pytest.mark.slow
def test_failure_kinds_opt_outs_nsfw_and_placement(tmp_path):
    good = {f"d{i}": [f"https://img{i}.example.com/photos/{i}-{j}.jpg" for j in range(3)] for i in range(5)}
    good["d4"][1] = "https://img0.example.com/photos/0-0.jpg"  # one URL in two documents: fetched once
    failures = [f"https://cdn.example.com/fail/{kind}/x.{'png' if kind == 'bomb' else 'jpg'}"
                for kind in FAILURE_REASONS]
    docs = [text_image_doc(doc_id, urls) for doc_id, urls in good.items()]
    docs.append(text_image_doc("mixed", failures[:5] + ["https://cdn.example.com/keep.png"] + failures[5:]))
    docs.append(text_image_doc("allfail", ["https://cdn.example.com/fail/404/y.jpg",
                                           "https://cdn.example.com/fail/500/y.jpg"]))
    docs.append(text_image_doc("optout", ["https://private.example.com/secret-1.jpg",
                                          "https://private.example.com/secret-2.jpg"], opt_out=["noimageai"]))
    docs.append(text_image_doc("filtered", ["https://cdn.example.com/size/120x300/tall.jpg",
                                            "https://cdn.example.com/size/700x300/wide.jpg",
                                            "https://cdn.example.com/size/200x160/ok.jpg"]))
    with ImageHost(timeout_sleep_s=3) as host:
        # NSFW: put the threshold between the two highest scores, so exactly one picture counts as NSFW.
        reaching_nsfw = {u for urls in good.values() for u in urls} | {
            "https://cdn.example.com/keep.png", "https://cdn.example.com/fail/redirect/x.jpg",
            "https://cdn.example.com/size/200x160/ok.jpg"}
        pictures = {u: PILImage.open(io.BytesIO(served_body(host, u))) for u in sorted(reaching_nsfw)}
        scores = dict(zip(pictures, NsfwScorer().scores(list(pictures.values()))))
        ranked = sorted(scores, key=scores.get, reverse=True)
        assert scores[ranked[0]] > scores[ranked[1]]
        threshold = (scores[ranked[0]] + scores[ranked[1]]) / 2
        nsfw_docs = {name_of(d) for d in docs if ranked[0] in {i.url for i in d.images}}
        config = images_config(host, f"image_filters.nsfw.threshold={threshold}", "download.urls_per_shard=7",
                               nsfw=True)
        outputs, table = run_images(copy.deepcopy(docs), config, tmp_path)
        requests = host.requests

    assert unbalanced(table) == []
    download, filters = table["download"], table["image_filter"]
    expected_download = {FAILURE_REASONS[k]: 1 for k in ("404", "500", "timeout", "noai", "wrong_type",
                                                          "redirect_metadata")}
    expected_download["http_404"] += 1
    expected_download["http_500"] += 1
    assert download["urls"]["dropped"] == expected_download
    assert filters["urls"]["dropped"] == {"decode_error": 2, "too_many_pixels": 1, "min_side": 1,
                                          "aspect_ratio": 1, "nsfw": 1}
    assert download["images"]["dropped"] == {**expected_download, "opted_out": 2}
    assert download["documents"]["dropped"] == {"opted_out": 1, "no_images": 1}
    assert filters["documents"]["dropped"] == {"nsfw": len(nsfw_docs)}
    nsfw_doc_survivors = sum(u in reaching_nsfw for d in docs if name_of(d) in nsfw_docs for u in
                             (i.url for i in d.images))
    assert filters["images"]["dropped"].get("in_nsfw_document", 0) == nsfw_doc_survivors - 1

    # Opted-out page: none of its images was requested. Every request: ours, from 127.0.0.1.
    assert not [r for r in requests if "private.example.com" in r.target]
    assert {r.user_agent for r in requests} == {config["download"]["user_agent"]}
    assert {r.client for r in requests} == {"127.0.0.1"}
    assert sum(r.target == "/img0.example.com/photos/0-0.jpg" for r in requests) == 1
    assert_only_local_network()

    survivors = reaching_nsfw - {ranked[0]}
    assert {name_of(d) for d in outputs} == (set(good) | {"mixed", "filtered"}) - nsfw_docs
    assert assert_images_in_place(docs, outputs, host, config, survivors) == sum(len(d.images) for d in outputs)
    for doc in outputs:
        for image in doc.images:
            assert 0 <= image.meta["nsfw_score"] < threshold and image.meta["original_format"] in ("jpeg", "png")


@pytest.fixture(scope="module")
def sample_crawl(tmp_path_factory):
    from pipeline.sampledata.crawl import generate_sample_crawl

    root = tmp_path_factory.mktemp("sample")
    generate_sample_crawl(str(root), seed=0)
    return root


def extract_warc(path: Path) -> list[Document]:
    config = load_config(overrides=["extract.timeout_s=0"])
    reader = ReadCrawlFiles(ReadSettings.from_config(config["read"], "read"),
                            BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker"))
    reader.setup()
    return [e.document for e in (extract_page(p, config) for p in reader.process(str(path))) if e.document]


def expected_reason(truth: dict, rules: dict) -> str:
    """What must happen to a sample image: its planted failure, its planted filter, or the size rules."""
    if truth["failure"]:
        return FAILURE_REASONS[truth["failure"]]
    if truth["filter"]:
        return truth["filter"]
    width, height = truth["width"], truth["height"]
    if width and height:
        if min(width, height) < rules["min_side"]:
            return "min_side"
        if not rules["min_aspect_ratio"] <= width / height <= rules["max_aspect_ratio"]:
            return "aspect_ratio"
    return "keep"


@pytest.mark.slow
def test_sample_crawl_end_to_end(sample_crawl, tmp_path):
    truth = json.loads((sample_crawl / "ground_truth.json").read_text())
    docs = extract_warc(sample_crawl / "crawl.warc.gz")
    assert len(docs) >= 50
    with ImageHost(sample_crawl / "images", timeout_sleep_s=3) as host:
        config = images_config(host, "download.urls_per_shard=64", "download.thread_count=16")
        outputs, table = run_images(copy.deepcopy(docs), config, tmp_path)
        requested = set(host.requested_targets())
    assert unbalanced(table) == []
    assert_only_local_network()
    pages = {p["url"]: p for p in truth["pages"]}
    images = truth["images"]
    opted_out = {d.url for d in docs if d.metadata.get("opt_out")}
    assert opted_out, "the sample has opt-out pages"
    results = shard_results(tmp_path / "work")

    # Each planted failure got its reason; served images passed unless a rule says otherwise.
    wanted = {u for d in docs if d.url not in opted_out for u in (i.url for i in d.images)}
    for url in wanted:
        assert (results[url].reason or "keep") == expected_reason(images[url], config["image_filters"]), url
    kinds = {images[u]["failure"] for u in wanted if images[u]["failure"]}
    assert kinds >= {"404", "500", "timeout", "corrupt", "bomb", "wrong_type", "noai"}

    # No image of an opted-out page was requested (unless a page that did not opt out uses it too).
    for doc in docs:
        if doc.url in opted_out:
            for image in doc.images:
                if image.url not in wanted:
                    assert host.url_for(image.url).removeprefix(host.base_url) not in requested

    # Every surviving image is in its document, in order, with its own picture.
    survivors = {u for u in wanted if expected_reason(images[u], config["image_filters"]) == "keep"}
    assert assert_images_in_place(docs, outputs, host, config, survivors) >= 100
    for doc in outputs:
        assert pages[doc.url]["expected"]["images"] in ("keep", None)
        assert [i.url for i in doc.images] == [u for u in pages[doc.url]["images"] if u in survivors]
    dropped = {d.url for d in docs} - {d.url for d in outputs}
    for url in dropped:
        assert pages[url]["expected"]["images"] == "no_images" or url in opted_out, url


@pytest.mark.slow
def test_real_fixture_pages_end_to_end(article_pages, tmp_path):
    config = load_config(overrides=["extract.timeout_s=0"])
    docs = []
    for key, url, html in article_pages[:60]:
        extracted = extract_page(Page(url, html, None, key), config)
        if extracted.document:
            docs.append(extracted.document)
        if len(docs) == 24:
            break
    assert len(docs) >= 20 and sum(len(d.images) for d in docs) >= 80
    with ImageHost(timeout_sleep_s=3) as host:
        for image in (i for d in docs for i in d.images):
            served_body(host, image.url)  # generate ahead: a loaded CI machine must not turn into timeouts
        config = images_config(host, "download.urls_per_shard=32", "download.thread_count=16")
        outputs, table = run_images(copy.deepcopy(docs), config, tmp_path)
        requests = host.requests
    assert unbalanced(table) == []
    assert_only_local_network()
    assert {r.client for r in requests} == {"127.0.0.1"}
    urls = {i.url for d in docs for i in d.images}
    assert table["download"]["urls"]["in"] == len(urls)
    # The generated pictures all pass the rules: every image of every page comes back, in its place.
    assert table["image_filter"]["images"]["out"] == sum(len(d.images) for d in docs)
    assert len(outputs) == len(docs)
    assert assert_images_in_place(docs, outputs, host, config, urls) == sum(len(d.images) for d in docs)


@pytest.mark.slow
def test_killed_download_resumes_without_refetching_finished_shards(tmp_path):
    docs = [text_image_doc(f"r{i}", [f"https://img.example.com/r/{i}-{j}.jpg" for j in range(3)])
            for i in range(8)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.parquet").write_bytes(parquet_bytes(docs, False, "zstd"))
    out = tmp_path / "out"
    markers = out / "work" / "download" / "shards"
    with ImageHost(latency_s=0.25) as host:
        settings = ("runner.direct_running_mode=in_memory", f"download.rewrite_to={host.base_url}",
                    "download.allow_loopback=true", "download.thread_count=1", "download.urls_per_shard=4",
                    "download.retries=0", "image_filters.nsfw.enabled=false", "output.doc_shards=2")
        command = [sys.executable, "-m", "pipeline.cli", "download", "--input", str(tmp_path / "in"),
                   "--output", str(out)]
        for item in settings:
            command += ["--set", item]
        first = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(list(markers.glob("*.done.json"))) < 2 and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        finished = sorted(markers.glob("*.done.json"))
        assert 2 <= len(finished) < 6, "the run must be killed midway (6 shards in all)"
        done_urls = {r.url for m in finished
                     for r in results_from_parquet(Path(str(m).replace(".done.json", ".parquet")).read_bytes())}
        assert not (out / "report.json").exists()

        host.clear_requests()  # the second run goes in-process (the same job the command runs), to save start-up
        assert main(command[3:]) == 0
        targets = host.requested_targets()

    all_urls = {i.url for d in docs for i in d.images}
    refetched = {u for u in done_urls if host.url_for(u).removeprefix(host.base_url) in targets}
    assert refetched == set()
    assert len(targets) == len(all_urls - done_urls)
    report = json.loads((out / "report.json").read_text())
    assert report["unbalanced"] == []
    assert report["stages"]["download"]["urls"]["info"]["shards_reused"] == len(finished)
    assert (out / "config.yaml").exists()
    table = pq.read_table(sorted(glob.glob(str(out / "documents" / "*.parquet"))))
    assert "image_bytes" in table.column_names
    written = read_documents(sorted(glob.glob(str(out / "documents" / "*.parquet"))))
    assert sorted(d.doc_id for d in written) == sorted(d.doc_id for d in docs)
    assert all(len(d.images) == 3 and all(i.data for i in d.images) for d in written)
