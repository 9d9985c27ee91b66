"""The crawl's own pictures: an index of its image records by normalised URL, and the images stage's look-up in it.

    documents stage: read ─ image records (bytes → image store) ─ ArchivedImage / ArchivedRevisit
                       → WriteArchiveIndex: revisits resolved (payload digest, else the URL they refer to),
                         one entry per normalised URL → OUTPUT/stages/documents/archive/archive-*.parquet
    images stage:    ReadArchiveIndex → (normalised URL, ArchiveEntry)
                     every candidate URL of every image use ─ CoGroupByKey on normalised URL ─┐
                       → per use: the first candidate the crawl holds (the chosen URL, else src, other
                         srcset entries, lazy-loading attributes), else the chosen URL, to download
                       → (url, uses, entry) per unique URL → the URL shards of `FetchShardsDoFn`

Only references cross the shuffles: an entry is a URL, a sha256 and the response's headers; the bytes stay in
the image store the read stage wrote them to, and the fetch step reads them back as a download would have
received them, so opt-outs, image filters, NSFW, resizing and image dedup treat them the same. URLs are
normalised as image-URL dedup does (`dedup.url`, `pipeline.dedup.urls.url_normalizer`), so `http://` and
`https://` of one picture, or a tracking parameter, do not make it missing. Both stages build the normaliser from
the same config, which both stages' resume fingerprints cover.

A join, not a side input: at web scale the index has as many entries as the crawl has pictures, more than one
worker should hold; the join moves only the candidates of the images documents still use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.core.accounting import StageCounters
from pipeline.core.files import open_atomically
from pipeline.dedup.keys import digest
from pipeline.dedup.urls import UrlDedupSettings, url_normalizer
from pipeline.images.store import ImageStore
from pipeline.read.images import IMAGES, ArchivedImage, ArchivedRevisit

ARCHIVE_DIR = "archive"  # the index's folder inside the documents stage's output
INDEX_PREFIX = "archive"
MAX_CANDIDATES = 16  # candidate URLs of one image looked up in the archive (the chosen one first; extraction
# records at most 8 srcset variants, then the lazy-loading attributes and src)

INDEX_SCHEMA = pa.schema([
    pa.field("key", pa.string()),
    pa.field("url", pa.string()),
    pa.field("sha256", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("robots", pa.string()),
    pa.field("date", pa.string()),
    pa.field("via", pa.string()),
])


@dataclass(frozen=True)
class ArchiveEntry:
    """One picture the crawl holds, under its normalised URL `key`."""

    key: str
    url: str  # as crawled
    sha256: str  # of the bytes as crawled, in the image store
    content_type: str
    robots: str  # X-Robots-Tag values of the response, one per line
    date: str  # WARC-Date
    via: str = ""  # for a revisit: the URL of the record holding the bytes ("" for the record itself)


@dataclass(frozen=True)
class CrawlArchive:
    """Where the images stage finds the crawl's pictures: the index files and the store holding their bytes."""

    index_files: tuple[str, ...]
    store: ImageStore


def index_files(directory: str) -> tuple[str, ...]:
    """The index files a documents stage wrote under `directory` (none when it kept no archive)."""
    pattern = FileSystems.join(directory.rstrip("/"), f"{INDEX_PREFIX}-*.parquet")
    return tuple(sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list))


# ------------------------------------------------------------------------------------------------
# The documents stage: image records → the index
# ------------------------------------------------------------------------------------------------
def _references(item: ArchivedImage | ArchivedRevisit, normalize: Callable[[str], str]) -> Iterator[tuple[str, Any]]:
    """An image record under its payload digest and its URL; a revisit under what it refers to."""
    if isinstance(item, ArchivedImage):
        yield "d:" + item.digest, item
        yield "u:" + normalize(item.url), item
        return
    if item.digest:
        yield "d:" + item.digest, item
    if item.refers_to:
        yield "u:" + normalize(item.refers_to), item


def _newest_first(images: Iterable[ArchivedImage]) -> list[ArchivedImage]:
    return sorted(images, key=lambda i: (i.date, i.sha256, i.url), reverse=True)


def _resolve(item: tuple[str, Iterable[Any]], normalize: Callable[[str], str]) -> Iterator[tuple[str, Any]]:
    """(normalised URL, entry or None) per reference: the image records themselves (once, from their URL's
    group), and each revisit resolved to the newest original it refers to (None when the inputs lack it)."""
    reference, items = item
    items = list(items)
    originals = _newest_first(i for i in items if isinstance(i, ArchivedImage))
    if reference.startswith("u:"):
        for image in originals:
            yield reference[2:], ArchiveEntry(reference[2:], image.url, image.sha256, image.content_type,
                                              image.robots, image.date)
    for revisit in (i for i in items if isinstance(i, ArchivedRevisit)):
        key = normalize(revisit.url)
        if not originals:
            yield key, None
            continue
        original = originals[0]
        yield key, ArchiveEntry(key, revisit.url, original.sha256, original.content_type,
                                revisit.robots or original.robots, revisit.date, via=original.url)


class _ChooseEntry(beam.DoFn):
    """(normalised URL, [entry or None]) → the newest entry (an image record before a revisit on the same date),
    counted per URL under the read stage's `images` info: `archive_urls` indexed, `revisits_resolved` of them
    whose entry a revisit gave, `revisits_unresolved` URLs of revisits whose original the inputs lack."""

    def __init__(self):
        self.counts = StageCounters("read")

    def process(self, item: tuple[str, Iterable[ArchiveEntry | None]]) -> Iterator[ArchiveEntry]:
        _, entries = item
        found = [entry for entry in entries if entry is not None]
        if not found:
            self.counts.note(IMAGES, "revisits_unresolved")
            return
        best = max(found, key=lambda e: (e.date, not e.via, e.sha256, e.url))
        self.counts.note(IMAGES, "archive_urls")
        self.counts.note(IMAGES, "revisits_resolved", int(bool(best.via)))
        yield best


def _index_shard(key: str, shards: int) -> int:
    return int(digest(key)[:12], 16) % shards


def index_table(entries: Iterable[ArchiveEntry]) -> pa.Table:
    rows = [{"key": e.key, "url": e.url, "sha256": e.sha256, "content_type": e.content_type, "robots": e.robots,
             "date": e.date, "via": e.via} for e in sorted(entries, key=lambda e: e.key)]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


class WriteArchiveIndex(beam.PTransform):
    """`ArchivedImage`s and `ArchivedRevisit`s → `{directory}/archive-SSSSS-of-NNNNN.parquet`, one row per
    normalised URL, sorted; every shard is written, also when empty, so a run's file set never depends on the
    data. `url`: the `dedup.url` section (the normalisation image URLs get)."""

    def __init__(self, directory: str, url: UrlDedupSettings, shards: int):
        super().__init__()
        self.directory = directory.rstrip("/")
        self.url = url
        self.shards = shards

    def expand(self, archived):
        normalize = url_normalizer(self.url)
        directory, shards = self.directory, self.shards

        def write(item: tuple[int, dict[str, list[Any]]]) -> str:
            index, grouped = item
            path = FileSystems.join(directory, f"{INDEX_PREFIX}-{index:05d}-of-{shards:05d}.parquet")
            with open_atomically(path) as handle:
                pq.write_table(index_table(grouped["entries"]), handle, compression="zstd")
            return path

        entries = (
            archived
            | "Key by reference" >> beam.FlatMap(_references, normalize)
            | "Group by reference" >> beam.GroupByKey()
            | "Resolve revisits" >> beam.FlatMap(_resolve, normalize)
            | "Group by URL" >> beam.GroupByKey()
            | "Newest per URL" >> beam.ParDo(_ChooseEntry())
            | "Key by index shard" >> beam.Map(lambda entry: (_index_shard(entry.key, shards), entry))
        )
        every = archived.pipeline | "Index shard ids" >> beam.Create([(i, None) for i in range(shards)])
        return (
            {"entries": entries, "ids": every}
            | "Join index shards" >> beam.CoGroupByKey()
            | "Write index shards" >> beam.Map(write)
        )


# ------------------------------------------------------------------------------------------------
# The images stage: each image use → the URL to take, and the crawl's copy when it holds one
# ------------------------------------------------------------------------------------------------
def read_index_file(path: str) -> Iterator[tuple[str, ArchiveEntry]]:
    with FileSystems.open(path) as handle:
        table = pq.read_table(pa.BufferReader(handle.read()))
    for row in table.to_pylist():
        yield row["key"], ArchiveEntry(**row)


class ReadArchiveIndex(beam.PTransform):
    """Index files → (normalised URL, `ArchiveEntry`)."""

    def __init__(self, files: Iterable[str]):
        super().__init__()
        self.files = list(files)

    def expand(self, pbegin):
        return (pbegin
                | "Index files" >> beam.Create(self.files)
                | "Read index" >> beam.FlatMap(read_index_file))


Use = tuple[str, int]  # (document key, node index)


def _candidate_keys(item: tuple[Use, list[str]], normalize: Callable[[str], str]
                    ) -> Iterator[tuple[str, tuple[Use, int, str]]]:
    use, candidates = item
    for rank, url in enumerate(candidates[:MAX_CANDIDATES]):
        yield normalize(url), (use, rank, url)


def _found_per_use(item: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[Use, tuple[int, str, Any]]]:
    _, grouped = item
    entries = grouped["archive"]
    entry = entries[0] if entries else None  # the index holds one entry per normalised URL
    for use, rank, url in grouped["uses"]:
        yield use, (rank, url, entry)


class ChooseSource(beam.DoFn):
    """(use, [(rank, candidate URL, entry or None)]) → (URL, (use, entry)): the best-ranked candidate the crawl
    holds (`<stage>|images|info|archive_alternate` when it is not the chosen URL), else the chosen URL with no
    entry, for the download. `refuse(url)` gives the result of a URL that must not be downloaded (None when it
    may): such a use leaves here as that result (tagged `REFUSED`), never as a URL to fetch."""

    REFUSED = "refused"

    def __init__(self, stage: str, refuse: Callable[[str], Any]):
        self.counts = StageCounters(stage)
        self.refuse = refuse

    def process(self, item: tuple[Use, Iterable[tuple[int, str, Any]]]) -> Iterator[Any]:
        use, found = item
        found = sorted(found, key=lambda f: f[0])
        archived = next((f for f in found if f[2] is not None), None)
        if archived is None:
            url = found[0][1]
            refused = self.refuse(url)
            if refused is not None:
                key, index = use
                yield beam.pvalue.TaggedOutput(self.REFUSED, (key, (index, refused)))
                return
            yield url, (use, None)
            return
        rank, url, entry = archived
        if rank:
            self.counts.note("images", "archive_alternate")
        yield url, (use, entry)


def _uses_with_entry(item: tuple[str, Iterable[tuple[Use, Any]]]) -> tuple[str, list[Use], Any]:
    url, uses = item
    uses = list(uses)
    entry = next((entry for _, entry in uses if entry is not None), None)
    return url, [use for use, _ in uses], entry


class ResolveFromArchive(beam.PTransform):
    """(use, [chosen URL, other candidates...]) → ((url, [uses], entry or None) per unique URL, refused results).

    `archive` is the index (`ReadArchiveIndex`'s output), `url` the `dedup.url` section; `choose` the
    `ChooseSource` that picks each use's URL. Returns a tagged result: `main` the URLs, `ChooseSource.REFUSED`
    the (doc key, (node index, result)) of the uses refused before any request.
    """

    def __init__(self, archive, url: UrlDedupSettings, choose: ChooseSource):
        super().__init__()
        self.archive = archive
        self.url = url
        self.choose = choose

    def expand(self, candidates):
        normalize = url_normalizer(self.url)
        keyed = candidates | "Candidate keys" >> beam.FlatMap(_candidate_keys, normalize)
        chosen = (
            {"uses": keyed, "archive": self.archive}
            | "Join the archive" >> beam.CoGroupByKey()
            | "Found per use" >> beam.FlatMap(_found_per_use)
            | "Group per use" >> beam.GroupByKey()
            | "Choose sources" >> beam.ParDo(self.choose).with_outputs(ChooseSource.REFUSED, main="urls")
        )
        urls = chosen.urls | "Uses by URL" >> beam.GroupByKey() | "With entry" >> beam.Map(_uses_with_entry)
        return urls, chosen[ChooseSource.REFUSED]
