"""Writing documents as sharded OBELICS Parquet, deterministically and atomically.

Documents are spread over a fixed number of shards by a hash of their id, each shard is sorted by
id and written to a temporary name first, then renamed: the same input always gives byte-identical
files, and a crash never leaves a half-written shard under its final name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from pydantic import NonNegativeFloat, PositiveInt

from pipeline.config import Section
from pipeline.core.failures import BreakerSettings, FailureBreaker
from pipeline.core.files import open_atomically
from schemas.document import (
    OBELICS_SCHEMA,
    OBELICS_SCHEMA_WITH_BYTES,
    Document,
    document_to_dict,
    document_to_row,
)

if TYPE_CHECKING:
    from pipeline.images.store import ImageStore


@dataclass(frozen=True)
class OutputSettings(Section):
    """The `output` section: how document Parquet is written, drop audits, progress lines."""

    doc_shards: PositiveInt
    parquet_compression: Literal["none", "snappy", "gzip", "brotli", "lz4", "zstd"]  # pyarrow's codecs
    audit_drops: bool
    progress_interval_s: NonNegativeFloat  # 0: off


def shard_of(doc_id: str, shards: int) -> int:
    return int(doc_id[:12], 16) % shards


def shard_name(prefix: str, index: int, shards: int, suffix: str) -> str:
    return f"{prefix}-{index:05d}-of-{shards:05d}{suffix}"


# A row group is cut once its documents hold this many bytes (text and images): writing a shard of documents
# with their images then holds one row group in memory, not the shard. Part of the file's bytes, so fixed.
ROW_GROUP_BYTES = 64 * 2**20


def parquet_bytes(docs: list[Document], with_bytes: bool, compression: str) -> bytes:
    sink = pa.BufferOutputStream()
    write_parquet(sink, docs, with_bytes, compression)
    return sink.getvalue().to_pybytes()


def write_parquet(sink: Any, docs: Iterable[Document], with_bytes: bool, compression: str) -> None:
    """Documents (in the order given) → one Parquet file on `sink`, streamed row group by row group."""
    schema = OBELICS_SCHEMA_WITH_BYTES if with_bytes else OBELICS_SCHEMA
    with pq.ParquetWriter(sink, schema, compression=compression) as writer:
        rows: list[dict[str, Any]] = []
        held = groups = 0
        for doc in docs:
            rows.append(document_to_row(doc, with_bytes=with_bytes))
            held += _payload_bytes(doc, with_bytes)
            if held >= ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows, held, groups = [], 0, groups + 1
        if rows or not groups:  # an empty shard still gets its (empty) row group, as a whole-table write gives
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def _payload_bytes(doc: Document, with_bytes: bool) -> int:
    text = sum(len(node.text) for node in doc.nodes if node.text is not None)
    if not with_bytes:
        return text
    return text + sum(len(node.image.data) for node in doc.nodes if node.image is not None and node.image.data)


class WriteDocuments(beam.PTransform):
    """Documents → `{directory}/docs-SSSSS-of-NNNNN.parquet`; returns the written paths."""

    def __init__(self, directory: str, output: OutputSettings, with_bytes: bool = False,
                 image_store: ImageStore | None = None):
        """`output`: the `output` section (shard count, compression)."""
        super().__init__()
        self.directory = directory.rstrip("/")
        self.shards = output.doc_shards
        self.compression = output.parquet_compression
        self.with_bytes = with_bytes
        self.image_store = image_store  # documents carry image references; bytes are read back here, last

    def expand(self, docs):
        shards, directory, compression, with_bytes = self.shards, self.directory, self.compression, self.with_bytes
        store = self.image_store if with_bytes else None

        def write(item: tuple[int, dict[str, Any]]) -> str:
            index, grouped = item
            batch = sorted(grouped["docs"], key=lambda d: d.doc_id)
            # The group carries image references; each document's bytes are read back as its row group is built.
            docs = (store.with_bytes(d) for d in batch) if store is not None else batch
            path = FileSystems.join(directory, shard_name("docs", index, shards, ".parquet"))
            with open_atomically(path) as handle:
                write_parquet(handle, docs, with_bytes, compression)
            return path

        keyed = docs | "Key by shard" >> beam.Map(lambda d: (shard_of(d.doc_id, shards), d))
        # Every shard index exists even when empty, so a run's file set never depends on the data.
        every = docs.pipeline | "Shard ids" >> beam.Create([(i, None) for i in range(shards)])
        return (
            {"docs": keyed, "ids": every}
            | "Join shards" >> beam.CoGroupByKey()
            | "Write shards" >> beam.Map(write)
        )


class WriteDropAudit(beam.PTransform):
    """(stage, reason, detail, element) → `{directory}/dropped/{prefix}-SSSSS-of-NNNNN.jsonl`, for threshold audits.

    Each stage writes under its own file prefix, so several stages' audits share one output directory.
    """

    def __init__(self, directory: str, prefix: str = "dropped"):
        super().__init__()
        self.directory = directory.rstrip("/")
        self.prefix = prefix

    def expand(self, dropped):
        def as_json(item: tuple[str, str, str, Any]) -> str:
            stage, reason, detail, element = item
            payload = document_to_dict(element) if isinstance(element, Document) else element
            return json.dumps({"stage": stage, "reason": reason, "detail": detail, "item": payload},
                              ensure_ascii=False, sort_keys=True, default=str)

        return (
            dropped
            | "Audit JSON" >> beam.Map(as_json)
            | "Write audit" >> beam.io.WriteToText(FileSystems.join(self.directory, "dropped", self.prefix),
                                                   file_name_suffix=".jsonl")
        )


def stage_dir(output: str, name: str) -> str:
    """Where a build under `output` keeps stage `name`'s results (documents, images, shards)."""
    return FileSystems.join(output, "stages", name)


def parquet_files(directory: str) -> list[str]:
    """The Parquet files of one documents folder, in name order."""
    pattern = FileSystems.join(directory, "*.parquet")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def document_files(inputs: list[str]) -> list[str]:
    """Parquet document files named by each input: a file or glob, or a directory holding them directly or in
    `documents/` (an `m3w extract`/`filter`/`dedup` output) or `docs/` (a shard output). An input that names
    no document file is an error, never a silent gap."""
    files: set[str] = set()
    for item in inputs:
        item = item.rstrip("/")
        if item.endswith(".parquet") or any(ch in item for ch in "*?["):
            patterns = [item]
        else:
            patterns = [FileSystems.join(item, sub, "*.parquet") for sub in ("documents", "docs")]
            patterns.insert(0, FileSystems.join(item, "*.parquet"))
        found = {m.path for result in FileSystems.match(patterns) for m in result.metadata_list
                 if m.path.endswith(".parquet")}
        if not found:
            raise FileNotFoundError(f"no Parquet document files found for --input {item} (it matches no Parquet "
                                    "document file, directly or in documents/ or docs/)")
        files |= found
    return sorted(files)


class _ReadDocumentFile(beam.DoFn):
    """One Parquet file → its documents. With a stage name, rows are counted and one that does not parse is a
    counted drop (`bad_row`), unless (nearly) every row fails: that is a format this reader does not know, and
    the run stops. Without a stage name, a bad row fails the bundle (files this pipeline wrote itself)."""

    def __init__(self, stage: str | None, circuit_breaker: BreakerSettings | None,
                 image_store: ImageStore | None = None):
        from pipeline.core.accounting import StageCounters

        self.counts = StageCounters(stage) if stage else None
        self.breaker = FailureBreaker.from_config(stage, circuit_breaker) if stage and circuit_breaker else None
        self.image_store = image_store

    def process(self, path: str):
        from schemas.document import row_to_document

        for row in iter_rows(path):
            if self.counts is None:
                yield self._carried(row_to_document(row))
                continue
            self.counts.seen("documents")
            try:
                doc = row_to_document(row)
            except (KeyError, TypeError, ValueError) as error:
                if self.breaker is not None:
                    self.breaker.failed(error)
                self.counts.dropped("documents", "bad_row")
                continue
            if self.breaker is not None:
                self.breaker.succeeded()
            self.counts.kept("documents")
            yield self._carried(doc)

    def _carried(self, doc: Document) -> Document:
        return self.image_store.by_reference(doc) if self.image_store is not None else doc


class ReadDocumentFiles(beam.PTransform):
    """Parquet document files → Documents, one file per element so reading spreads over the workers.

    `stage` names the counters of a reader of files from elsewhere (bad rows are counted drops);
    `circuit_breaker` (the config's `runner.circuit_breaker`) stops it when nearly every row is bad;
    `image_store`: inline image bytes go there as they are read, and documents carry references (so the
    shuffles after the read hold no picture; the writer at the end reads them back).
    """

    def __init__(self, paths: list[str], stage: str | None = None, circuit_breaker: BreakerSettings | None = None,
                 image_store: ImageStore | None = None):
        super().__init__()
        self.paths = sorted(paths)
        self.stage = stage
        self.circuit_breaker = circuit_breaker
        self.image_store = image_store

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(self.paths)
            | "Spread files" >> beam.Reshuffle()
            | "Read parquet" >> beam.ParDo(_ReadDocumentFile(self.stage, self.circuit_breaker, self.image_store))
        )


# Rows decoded at a time: a file of documents with their images is never held whole (a shard of 25,000
# documents with pictures is ~650 MB on disk and several times that as Python objects).
READ_BATCH_ROWS = 256


def iter_rows(path: str) -> Iterator[dict[str, Any]]:
    """The rows of one Parquet file, decoded a batch at a time; a file that cannot be read is an error."""
    try:
        with FileSystems.open(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=READ_BATCH_ROWS):
                yield from batch.to_pylist()
    except Exception as error:
        raise ValueError(f"cannot read documents from {path}: {type(error).__name__}: {error}") from error


def read_documents(paths: list[str]) -> list[Document]:
    """Load documents back from Parquet (tests, inspection, later stages run locally)."""
    from schemas.document import row_to_document

    return [row_to_document(row) for path in paths for row in iter_rows(path)]
