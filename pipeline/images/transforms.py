"""The image stage: documents with image URLs → documents with stored images, each image where it stood.

    documents ─ Plan ─┬─ (doc key, document) ──────────────────────────────────────┐
                      └─ (url, (doc key, node index)) per image use                  │
                         → GroupByKey on URL: each unique URL with its uses          │
                         → URL shards (hash of the URL; GroupByKey on the shard)     │
                         → FetchShardsDoFn: img2dataset, checks, NSFW, resize        │
                         → (doc key, (node index, result)) per use ─── CoGroupByKey on doc key
                                                                       → rebuilt documents

Nothing is held in one machine's memory: every step is a keyed shuffle, the fetching is spread over
the workers by URL shard, and image bytes never cross a shuffle: each kept image is written once to the
image store in the work folder (`pipeline.images.store`, by sha256) and documents carry that reference
(`Image.stored`); the final writer reads the bytes back. Pages
that opted out of AI use (`noai` / `noimageai`, recorded at extraction) never have an image requested.
Counted per stage: `download` (images and documents per use; `urls` per unique URL, the network
work) and `image_filter` (checks, NSFW); a document with an NSFW image is dropped (`nsfw`) and one
left without images is dropped (`no_images`).

With the crawl's own pictures (`download.from_archive` and a `CrawlArchive`: pipeline/images/archive.py), each
image use is first resolved against the crawl's index, its chosen URL or another candidate of its tag; only the
URLs the crawl lacks are downloaded (and only with `download.network`), and the outbound check judges those
alone: a crawl of 127.0.0.1 holds its pictures, nothing is requested.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from filters.images import ImageFilterSettings
from pipeline.core.accounting import StageCounters
from pipeline.core.failures import BreakerSettings
from pipeline.core.stages import names
from pipeline.dedup.urls import UrlDedupSettings
from pipeline.images.archive import ChooseSource, CrawlArchive, ReadArchiveIndex, ResolveFromArchive
from pipeline.images.download import (
    DOWNLOAD,
    IMAGE_FILTER,
    DownloadSettings,
    FetchShardsDoFn,
    ImageResult,
    OutboundPolicy,
    fetch_url,
    shard_count,
    url_shard,
)
from schemas.document import Document

STAGES = names("images")
USES = "uses"
CANDIDATES_KEY = "candidate_urls"  # Image.meta: the tag's other candidate URLs, best first (pipeline/extract)


def document_key(doc: Document) -> str:
    """Join key: the id plus a digest of the node layout, so two different documents never share a key."""
    layout = "\n".join(n.image.url if n.image is not None else "" for n in doc.nodes)
    return f"{doc.doc_id}:{hashlib.sha1(layout.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def page_opted_out(doc: Document, directives: set[str]) -> bool:
    return bool(directives.intersection(str(d).lower() for d in doc.metadata.get("opt_out") or []))


class PlanDownloadsDoFn(beam.DoFn):
    """Document → (key, (document, opted-out image count)) and one (url, (key, node index)) per image to fetch.

    Images that must not be requested are removed here, before any URL leaves the document:
    the page opted out (`opted_out`), the fetch URL's host is a refused address (`unsafe_address`,
    judged without DNS; names are judged again at connect time), or it is not http(s).
    `with_candidates` (the crawl archive is looked up): one ((key, node index), [url, other candidates]) per
    image instead, and only the opt-out is judged here; the address of a URL is judged once it is known that
    the crawl lacks it (`RefuseDownload`).
    """

    def __init__(self, download: DownloadSettings, with_candidates: bool = False):
        """`download`: the `download` section (rewrite_to, allow_loopback and page_opt_out are used)."""
        self.rewrite_to = download.rewrite_to
        self.policy = OutboundPolicy(download.allow_loopback)
        self.opt_out = {directive.lower() for directive in download.page_opt_out}
        self.with_candidates = with_candidates
        self.counts = StageCounters(DOWNLOAD)

    def process(self, doc: Document) -> Iterator[Any]:
        self.counts.seen("documents")
        self.counts.seen("images", len(doc.images))
        opted_out = page_opted_out(doc, self.opt_out)
        refused = 0
        nodes = []
        for node in doc.nodes:
            if node.image is not None:
                reason = "opted_out" if opted_out else \
                    "" if self.with_candidates else self.policy.check_url(fetch_url(node.image.url, self.rewrite_to))
                if reason:
                    self.counts.dropped("images", reason)
                    refused += reason == "opted_out"
                    continue
            nodes.append(node)
        doc = dataclasses.replace(doc, nodes=nodes)  # Beam inputs must not be mutated
        key = document_key(doc)
        for index, node in enumerate(nodes):
            if node.image is None:
                continue
            if self.with_candidates:
                others = [url for url in node.image.meta.get(CANDIDATES_KEY) or () if url != node.image.url]
                yield beam.pvalue.TaggedOutput(USES, ((key, index), [node.image.url, *dict.fromkeys(others)]))
            else:
                yield beam.pvalue.TaggedOutput(USES, (node.image.url, (key, index)))
        yield key, (doc, refused)


class RefuseDownload:
    """The result for a URL the crawl lacks and that must not be requested (None when it may): its address is
    refused (`unsafe_address`) or it is no http(s) URL. With `download.network` off nothing is refused here:
    the fetch step answers every such URL `not_in_archive` without a request."""

    def __init__(self, download: DownloadSettings):
        self.network = download.network
        self.rewrite_to = download.rewrite_to
        self.policy = OutboundPolicy(download.allow_loopback)

    def __call__(self, url: str) -> ImageResult | None:
        if not self.network:
            return None
        reason = self.policy.check_url(fetch_url(url, self.rewrite_to))
        return ImageResult(url, reason, DOWNLOAD) if reason else None


class RebuildDocumentsDoFn(beam.DoFn):
    """(key, {docs, images}) → the document with its surviving images in place, or nothing (counted)."""

    def __init__(self):
        self.download_counts = StageCounters(DOWNLOAD)
        self.filter_counts = StageCounters(IMAGE_FILTER)

    def process(self, item: tuple[str, dict[str, list[Any]]]) -> Iterator[Document]:
        _, grouped = item
        results = dict(grouped["images"])
        for doc, opted_out in grouped["docs"]:
            rebuilt = self.rebuild(doc, opted_out, results)
            if rebuilt is not None:
                yield rebuilt

    def rebuild(self, doc: Document, opted_out: int, results: dict[int, ImageResult]) -> Document | None:
        nodes, fetched, filtered, nsfw = [], 0, 0, False
        for index, node in enumerate(doc.nodes):
            if node.image is None:
                nodes.append(node)
                continue
            result = results.get(index) or ImageResult(node.image.url, "missing_result", DOWNLOAD)
            if result.stage == DOWNLOAD:
                self.download_counts.dropped("images", result.reason)
                continue
            fetched += 1
            if result.stage == IMAGE_FILTER:
                filtered += 1
                self.filter_counts.dropped("images", result.reason)
                nsfw = nsfw or result.reason == "nsfw"
                continue
            if result.url != node.image.url:  # the crawl held another candidate of the tag (src for srcset's)
                node.image.meta["chosen_url"] = node.image.url
                node.image.url = result.url
            node.image.data = None  # the bytes stay in the image store; the document carries their sha256
            node.image.stored = result.meta["sha256"]
            node.image.meta.update(result.meta)
            nodes.append(node)
        kept = fetched - filtered
        self.download_counts.kept("images", fetched)
        self.filter_counts.seen("images", fetched)
        if not fetched:
            self.download_counts.dropped("documents", "opted_out" if opted_out else "no_images")
            return None
        self.download_counts.kept("documents")
        self.filter_counts.seen("documents")
        if nsfw:  # OBELICS: one NSFW image and the whole document goes
            self.filter_counts.dropped("images", "in_nsfw_document", kept)
            self.filter_counts.dropped("documents", "nsfw")
            return None
        self.filter_counts.kept("images", kept)
        if not kept:
            self.filter_counts.dropped("documents", "no_images")
            return None
        self.filter_counts.kept("documents")
        doc.nodes = nodes
        doc.normalize_nodes()
        return doc


def _assign_shard(item: tuple[Any, ...], unique_urls: int, urls_per_shard: int):
    """(url, uses[, archive entry]) → ((shard, shard count), the same with the uses as a list)."""
    url, uses, *entry = item
    count = shard_count(unique_urls, urls_per_shard)
    return (url_shard(url, count), count), (url, list(uses), *entry)


class DownloadImages(beam.PTransform):
    """Documents → documents whose images refer to their (resized) bytes in the image store, with meta.

    `workdir` (any Beam filesystem path) keeps finished URL shards and the image store
    (`ImageStore.in_workdir(workdir)`), so a re-run fetches only the rest. The commands load its heavy
    dependencies in the driver first (`pipeline.core.preflight`), and every worker again in `setup()`.
    `download` and `image_filters` are the config sections of those names, `circuit_breaker` is
    `runner.circuit_breaker` (transport and processing errors). `archive`: the crawl's own pictures, looked up
    first when `download.from_archive` is on, by URLs normalised as `url` (the `dedup.url` section) says.
    """

    def __init__(self, workdir: str, download: DownloadSettings, image_filters: ImageFilterSettings,
                 circuit_breaker: BreakerSettings, archive: CrawlArchive | None = None,
                 url: UrlDedupSettings | None = None):
        super().__init__()
        if archive is not None and url is None:
            raise ValueError("DownloadImages looks up the crawl archive by normalised URL: give the dedup.url section")
        self.workdir = workdir
        self.download = download
        self.image_filters = image_filters
        self.circuit_breaker = circuit_breaker
        self.archive = archive if download.from_archive else None
        self.url = url

    def expand(self, docs):
        per_shard = self.download.urls_per_shard
        archive = self.archive
        plan = PlanDownloadsDoFn(self.download, with_candidates=archive is not None)
        planned = docs | "Plan downloads" >> beam.ParDo(plan).with_outputs(USES, main="docs")
        refused = None
        if archive is None:
            urls = planned[USES] | "Uses by URL" >> beam.GroupByKey()
        else:
            index = docs.pipeline | "Read archive index" >> ReadArchiveIndex(archive.index_files)
            urls, refused = planned[USES] | "Resolve from archive" >> ResolveFromArchive(
                index, self.url, ChooseSource(DOWNLOAD, RefuseDownload(self.download)))
        total = urls | "Count URLs" >> beam.combiners.Count.Globally()
        per_use = (
            urls
            | "Assign URL shards" >> beam.Map(_assign_shard, beam.pvalue.AsSingleton(total), per_shard)
            | "Group URL shards" >> beam.GroupByKey()
            | "Fetch URL shards" >> beam.ParDo(
                FetchShardsDoFn(self.workdir, self.download, self.image_filters, self.circuit_breaker,
                                archive_store=archive.store if archive is not None else None))
        )
        if refused is not None:
            per_use = (per_use, refused) | "With refused uses" >> beam.Flatten()
        return (
            {"docs": planned.docs, "images": per_use}
            | "Join images by document" >> beam.CoGroupByKey()
            | "Rebuild documents" >> beam.ParDo(RebuildDocumentsDoFn())
        )
