"""The alignment canaries' branch of `m3w build`: the same stages as the user's crawl, counted and written apart.

Each of the build's three jobs runs the canaries beside the user's documents, in the same pipeline:

- documents: `ensure_canary_warc` writes the canary WARC (pages and their pictures) under `OUTPUT/canaries/`;
  read → gate → extract (the pictures kept as the crawl's archive, `pipeline.images.archive`, an index of
  their own) → each document marked (`as_canary`) → filters → `stages/documents/canaries/`;
- images: the pictures resolved from that archive (never requested from the network) → image filters →
  `stages/images/canaries/`, the bytes in an image store of their own (`work/canaries/`);
- shards: read beside the user's documents; the shard writer sends marked documents to shard files of their
  own (`pipeline.shards.writer`).

The stages' transforms are built inside `counted_apart(CANARY_GROUP)`, so their counters read `canary:<stage>|...`
and the report shows the canaries' funnel apart from the user's. What the canaries skip is what they must not
take part in: document and image dedup (a canary is neither another page's duplicate nor its original) and
every computation over the whole crawl (the tokenizer, the shard count, frequent image URLs and boilerplate
paragraphs are the dedup and shard stages' and see only the user's documents). Under the user's config
otherwise, with `canary_config`'s exceptions: English is admitted by the language rule (the canaries are
English) and their pictures come from their archive only.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.canaries.riding import CANARY_DIR, canary_config, ensure_canary_warc
from pipeline.canaries.settings import CanarySettings
from pipeline.canaries.shapes import CANARY_FLAG, CANARY_GROUP
from pipeline.core.accounting import counted_apart
from pipeline.io.documents import ReadDocumentFiles, WriteDocuments, parquet_files
from schemas.document import Document

if TYPE_CHECKING:
    from pipeline.images.store import ImageStore

BuildContext = Any  # pipeline.jobs.build.BuildContext (which imports this module): stage folders, config, store



def canary_settings(config: dict[str, Any]) -> CanarySettings:
    return CanarySettings.from_config(config["canaries"], "canaries")


def as_canary(doc: Document) -> Document:
    """The document marked as a canary (`metadata.canary`): how every later stage and reader tells it apart."""
    return dataclasses.replace(doc, metadata={**doc.metadata, CANARY_FLAG: True})


def canaries_of(directory: str) -> str:
    """Where a stage folder keeps the canaries' documents."""
    return FileSystems.join(directory, CANARY_DIR)


def canary_workdir(ctx: BuildContext) -> str:
    """The canaries' image work folder: their pictures' bytes (read from their WARC) and finished URL shards."""
    return FileSystems.join(ctx.output, "work", CANARY_DIR)


def canary_store(ctx: BuildContext) -> ImageStore:
    from pipeline.images.store import ImageStore

    return ImageStore.in_workdir(canary_workdir(ctx))


def canary_archive_dir(ctx: BuildContext) -> str:
    from pipeline.images.archive import ARCHIVE_DIR

    return FileSystems.join(canaries_of(ctx.stage_dir("documents")), ARCHIVE_DIR)


def extract_canaries(pipeline: beam.Pipeline, ctx: BuildContext, out: str) -> None:
    """Documents job: the canary WARC → marked, filtered canary documents in `out/canaries/` (none: no branch)."""
    from pipeline.filter.transforms import FilterDocuments, FilterSettings
    from pipeline.images.archive import WriteArchiveIndex
    from pipeline.jobs.stages import extract_documents
    from pipeline.read.images import KeepImages

    settings = canary_settings(ctx.config)
    if not settings.pages:
        return
    warc = ensure_canary_warc(ctx.output, settings)
    config, _ = canary_config(ctx.config)
    audit = FileSystems.join(ctx.output, CANARY_DIR)  # dropped canaries listed apart (`output.audit_drops`)
    with counted_apart(CANARY_GROUP):
        keep_images = KeepImages(canary_store(ctx), config["download"]["max_bytes"])
        archive = WriteArchiveIndex(canary_archive_dir(ctx), ctx.dedup.url, ctx.output_settings.doc_shards)
        docs = pipeline | "Extract canaries" >> extract_documents([warc], config, audit, keep_images, archive)
        docs = docs | "Mark canaries" >> beam.Map(as_canary)
        docs = docs | "Filter canaries" >> FilterDocuments(
            filters=FilterSettings.from_config(config["filters"], "filters"),
            circuit_breaker=ctx.runner.circuit_breaker, audit_dir=audit if ctx.output_settings.audit_drops else None)
    docs | "Write canaries" >> WriteDocuments(canaries_of(out), ctx.output_settings)


def canary_images(pipeline: beam.Pipeline, ctx: BuildContext, out: str) -> None:
    """Images job: the canaries' pictures from their archive, image filters → `out/canaries/` (with bytes)."""
    from pipeline.images.archive import CrawlArchive, index_files
    from pipeline.jobs.stages import download_images

    files = parquet_files(canaries_of(ctx.stage_dir("documents")))
    if not files:
        return
    config, _ = canary_config(ctx.config)
    store = canary_store(ctx)
    archive = CrawlArchive(index_files(canary_archive_dir(ctx)), store)
    with counted_apart(CANARY_GROUP):
        docs = pipeline | "Read canaries" >> ReadDocumentFiles(files)
        docs = docs | "Canary images" >> download_images(config, canary_workdir(ctx), archive)
    docs | "Write canaries" >> WriteDocuments(canaries_of(out), ctx.output_settings, with_bytes=True,
                                              image_store=store)


def canary_documents(pipeline: beam.Pipeline, ctx: BuildContext) -> beam.PCollection | None:
    """Shards job: the canary documents with their pictures (bytes into `ctx.image_store` as they are read)."""
    files = parquet_files(canaries_of(ctx.stage_dir("images")))
    if not files:
        return None
    return pipeline | "Read canaries" >> ReadDocumentFiles(files, image_store=ctx.image_store)


def canary_note(ctx: BuildContext) -> dict[str, Any]:
    """What the shard set's manifest tells the smoke trainer about the canaries before the shard stage: the pages
    asked for, the exceptions to the user's config, what dropped any (pipeline/report/canaries.py)."""
    from pipeline.report.canaries import canary_report, manifest_note

    settings = canary_settings(ctx.config)
    report = (canary_report(ctx.canary_counts, ctx.config, canary_config(ctx.config)[1], None)
              if settings.pages else None)
    return manifest_note(report, settings.pages)
