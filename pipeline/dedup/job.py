"""The `m3w dedup` job: OBELICS Parquet documents → deduplicated documents + report.json + config.yaml."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.accounting import StageCounters
from pipeline.dedup import STAGES, DedupDocuments, DedupImages, DropFrequentImageUrls
from schemas.document import Document, row_to_document

READ_STAGE = "dedup_read"


def expand_document_inputs(inputs: list[str]) -> list[str]:
    """Parquet files named by paths, globs or directories (a directory: its `*.parquet`, else `documents/`)."""
    paths: set[str] = set()
    for item in inputs:
        if item.endswith(".parquet") or any(char in item for char in "*?["):
            patterns = [item]
        else:
            patterns = [FileSystems.join(item, "*.parquet"), FileSystems.join(item, "documents", "*.parquet")]
        matched = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list
                   if m.path.endswith(".parquet")]
        if not matched:
            raise FileNotFoundError(f"no Parquet document files found for input '{item}'")
        paths.update(matched)
    return sorted(paths)


def has_image_bytes(paths: list[str]) -> bool:
    """Whether the documents carry downloaded images (the `image_bytes` column), from the files' footers."""
    for path in paths:
        try:
            with FileSystems.open(path) as handle:
                names = pq.read_schema(handle).names
        except Exception as error:
            raise ValueError(f"cannot read documents from {path}: {type(error).__name__}: {error}") from error
        if "image_bytes" in names:
            return True
    return False


class _ReadDocumentFile(beam.DoFn):
    """One Parquet file → its documents; a row that does not parse is a counted drop (`bad_row`)."""

    def __init__(self):
        self.counts = StageCounters(READ_STAGE)

    def process(self, path: str) -> Iterator[Document]:
        try:
            with FileSystems.open(path) as handle:
                table = pq.read_table(handle)
        except Exception as error:
            raise ValueError(f"cannot read documents from {path}: {type(error).__name__}: {error}") from error
        for row in table.to_pylist():
            self.counts.seen("documents")
            try:
                doc = row_to_document(row)
            except (KeyError, TypeError, ValueError):
                self.counts.dropped("documents", "bad_row")
                continue
            self.counts.kept("documents")
            yield doc


class ReadDocumentFiles(beam.PTransform):
    """Parquet document files → Documents, one file per element so reading spreads over the workers."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = paths

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(self.paths)
            | "Spread files" >> beam.Reshuffle()
            | "Read files" >> beam.ParDo(_ReadDocumentFile())
        )


def run_dedup(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None
              ) -> dict[str, Any]:
    """Document dedup and image-URL frequency always; image content dedup when the documents carry bytes."""
    from pipeline.jobs import finish_report, write_config
    from pipeline.runner import make_pipeline
    from pipeline.sinks import WriteDocuments

    started = time.time()
    paths = expand_document_inputs(inputs)
    with_bytes = has_image_bytes(paths)
    write_config(output, config)
    pipeline = make_pipeline(beam_args, config)
    docs = (
        pipeline
        | "Read documents" >> ReadDocumentFiles(paths)
        | "Dedup documents" >> DedupDocuments(config)
        | "Drop frequent image URLs" >> DropFrequentImageUrls(config)
    )
    if with_bytes:
        docs = docs | "Dedup images" >> DedupImages(config)
    docs | "Write documents" >> WriteDocuments(FileSystems.join(output, "documents"), config, with_bytes=with_bytes)
    result = pipeline.run()
    result.wait_until_finish()
    return finish_report(result, output, [READ_STAGE, *STAGES], started,
                         {"inputs": paths, "image_dedup": with_bytes})
