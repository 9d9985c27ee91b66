"""The stage commands' Beam jobs (`m3w extract`, `filter`, `download`, `dedup`, `decontaminate`, `shard`, `export`).

Each job is a few lines: which stages it runs, what it reads and writes. `run_job` does the rest the
same way for every one of them: load the heavy dependencies first (a broken install fails in seconds),
clear the command's earlier output (or refuse a folder holding anything else), write config.yaml, build the
pipeline on the chosen runner, run it with progress lines, and write report.json with every stage's balance
and every link between stages checked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from filters.image_nodes import ImageNodeSettings
from filters.images import ImageFilterSettings
from pipeline.config import dump_config
from pipeline.core.accounting import (
    broken_links,
    empty_result,
    flow_of,
    metric_kind,
    query_counts,
    stage_table,
    unbalanced,
    unverified,
)
from pipeline.core.files import write_atomically, write_json
from pipeline.core.outputs import claim_output
from pipeline.core.preflight import preflight
from pipeline.core.progress import run_pipeline
from pipeline.core.stages import switched_on
from pipeline.decontaminate import STAGE as DECONTAMINATE
from pipeline.decontaminate import DecontaminateDocuments, DecontaminateSettings
from pipeline.decontaminate.audit import AUDIT_NAME, contamination_summary, read_audit
from pipeline.decontaminate.transforms import check_benchmarks
from pipeline.dedup import STAGES as DEDUP_STAGES
from pipeline.dedup import DedupDocuments, DedupImages, DedupSettings, DropFrequentImageUrls
from pipeline.dedup.images import STAGE as IMAGE_DEDUP
from pipeline.dedup.urls import UrlDedupSettings
from pipeline.export.writer import READ_STAGE as EXPORT_READ
from pipeline.export.writer import ExportSettings, Mmc4DoFn, PairsDoFn, WriteExport, check_export_config, stage_of
from pipeline.extract.pages import Extracted, PageExtractor, extract_with
from pipeline.extract.settings import ExtractSettings
from pipeline.extract.transforms import ExtractDocuments, ExtractDoFn
from pipeline.filter.transforms import FILTER_STAGES, FilterDocuments, FilterSettings
from pipeline.images.archive import CrawlArchive
from pipeline.images.download import DownloadSettings
from pipeline.images.store import ImageStore
from pipeline.images.transforms import STAGES as IMAGE_STAGES
from pipeline.images.transforms import DownloadImages
from pipeline.io.documents import OutputSettings, ReadDocumentFiles, WriteDocuments, document_files
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from pipeline.read.crawl import Page, ReadSettings
from pipeline.read.images import KeepImages
from pipeline.shards.settings import ShardSettings
from pipeline.shards.writer import STAGE as SHARD_STAGE
from pipeline.shards.writer import WriteShards, check_shard_config, scratch_store
from schemas.shards import MANIFEST_NAME, manifest_summary, read_manifest

log = logging.getLogger(__name__)

EXTRACT_STAGES = ["read", "gate", "extract"]
DEDUP_READ = "dedup_read"

Extra = dict[str, Any] | Callable[[], dict[str, Any]]


def write_config(output: str, config: dict[str, Any]) -> None:
    FileSystems.mkdirs(output) if not FileSystems.exists(output) else None
    write_atomically(FileSystems.join(output, "config.yaml"), dump_config(config).encode("utf-8"))


def finish_report(result, output: str, stages: list[str], started: float, extra: dict[str, Any] | None = None):
    """report.json over the `stages` the job ran: each one's balance, every link between them, whether the
    runner returned metrics at all (`unverified`) and why non-empty input gave no output (`empty`)."""
    counts = query_counts(result)
    table = stage_table(counts, stages)
    flow = flow_of(stages)
    report = {
        "stages": table,
        "unbalanced": unbalanced(table),
        "broken_links": broken_links(table, flow),
        "unverified": unverified(counts),
        "empty": empty_result(table, flow),
        "metrics": metric_kind(result),
        "seconds": round(time.time() - started, 3),
        **(extra or {}),
    }
    write_json(FileSystems.join(output, "report.json"), report)
    if report["unbalanced"]:
        log.error("m3w: counts do not balance for %s", report["unbalanced"])
    if report["broken_links"]:
        log.error("m3w: items lost between stages: %s", "; ".join(report["broken_links"]))
    return report


def run_job(output: str, config: dict[str, Any], beam_args: list[str] | None, stages: list[str],
            build: Callable[[beam.Pipeline], None], needs: list[str] = (), extra: Extra | None = None, *,
            command: str, overwrite: bool = False, keep: Sequence[str] = (), reads: Sequence[str] = ()
            ) -> dict[str, Any]:
    """Preflight `needs`, claim `output` for `command`, write config.yaml, run the pipeline `build` wires,
    write report.json over `stages`.

    `extra` (a dict, or a function called once the pipeline has finished) adds fields to the report. The
    output folder is cleared of the command's earlier output first, or refused when it holds anything else
    (`overwrite`: clear it anyway); `keep` survives either, `reads` (the inputs) must lie outside what is
    cleared (pipeline/core/outputs.py).
    """
    started = time.time()
    preflight(needs, config)
    claim_output(output, command, overwrite=overwrite, keep=keep, reads=reads)
    write_config(output, config)
    pipeline = make_pipeline(beam_args, runner_settings(config))
    build(pipeline)
    result = run_pipeline(pipeline, output_settings(config).progress_interval_s)
    ran = [name for name in stages if switched_on(name, config)]
    return finish_report(result, output, ran, started, extra() if callable(extra) else extra)


def output_settings(config: dict[str, Any]) -> OutputSettings:
    return OutputSettings.from_config(config["output"], "output")


def runner_settings(config: dict[str, Any]) -> RunnerSettings:
    """The `runner` section; its `circuit_breaker` goes to every stage that turns item errors into drops."""
    return RunnerSettings.from_config(config["runner"], "runner")


def documents_dir(output: str) -> str:
    return FileSystems.join(output, "documents")


def extract_documents(inputs: list[str], config: dict[str, Any], output: str | None,
                      keep_images: KeepImages | None = None, archive: beam.PTransform | None = None
                      ) -> ExtractDocuments:
    """read → gate → extract with their sections from `config`; dropped pages listed under `output` when
    `output.audit_drops` is on; the crawl's image records kept and indexed with `keep_images` and `archive`."""
    read = ReadSettings.from_config(config["read"], "read")
    return ExtractDocuments(
        inputs, read=read, filters=FilterSettings.from_config(config["filters"], "filters"),
        extract=ExtractSettings.from_config(config["extract"], "extract"),
        image_nodes=ImageNodeSettings.from_config(config["image_nodes"], "image_nodes"),
        circuit_breaker=runner_settings(config).circuit_breaker,
        audit_dir=output if output_settings(config).audit_drops else None, keep_images=keep_images, archive=archive)


def page_extractor(config: dict[str, Any]) -> PageExtractor:
    """The pure page → document step with its sections from `config` (tests, benchmarks: no Beam)."""
    return PageExtractor(extract=ExtractSettings.from_config(config["extract"], "extract"),
                         image_nodes=ImageNodeSettings.from_config(config["image_nodes"], "image_nodes"),
                         max_replacement_ratio=ReadSettings.from_config(config["read"], "read").max_replacement_ratio)


_EXTRACTORS: dict[str, PageExtractor] = {}


def extract_page(page: Page, config: dict[str, Any]) -> Extracted:
    """One page through `page_extractor(config)`, built once per config in this process (tests, benchmarks)."""
    key = repr((config["extract"], config["image_nodes"], config["read"]["max_replacement_ratio"]))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = page_extractor(config)
    return _EXTRACTORS[key](page)


def extract_dofn(config: dict[str, Any], audit_drops: bool = False, step: Callable = extract_with) -> ExtractDoFn:
    """The extract step alone, with its sections from `config` (benchmarks, tests; `step`: see ExtractDoFn)."""
    return ExtractDoFn(extract=ExtractSettings.from_config(config["extract"], "extract"),
                       image_nodes=ImageNodeSettings.from_config(config["image_nodes"], "image_nodes"),
                       max_replacement_ratio=ReadSettings.from_config(config["read"], "read").max_replacement_ratio,
                       audit_drops=audit_drops, circuit_breaker=runner_settings(config).circuit_breaker, step=step)


def run_extract(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
                overwrite: bool = False):
    """`m3w extract`: crawl files → OBELICS Parquet documents + report.json + config.yaml."""
    def build(pipeline: beam.Pipeline) -> None:
        docs = pipeline | "Extract documents" >> extract_documents(inputs, config, output)
        docs | "Write documents" >> WriteDocuments(documents_dir(output), output_settings(config))

    return run_job(output, config, beam_args, EXTRACT_STAGES, build, needs=["extract"], command="extract",
                   overwrite=overwrite, reads=inputs)


def run_filter(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
               overwrite: bool = False):
    """`m3w filter`: OBELICS Parquet documents → filtered documents + report.json + config.yaml."""
    paths = document_files(inputs)

    def build(pipeline: beam.Pipeline) -> None:
        docs = pipeline | "Read documents" >> ReadDocumentFiles(paths)
        docs = docs | "Filter" >> FilterDocuments(
            filters=FilterSettings.from_config(config["filters"], "filters"),
            circuit_breaker=runner_settings(config).circuit_breaker,
            audit_dir=output if output_settings(config).audit_drops else None)
        docs | "Write documents" >> WriteDocuments(documents_dir(output), output_settings(config))

    return run_job(output, config, beam_args, FILTER_STAGES, build, needs=["filter"], extra={"inputs": paths},
                   command="filter", overwrite=overwrite, reads=paths)


def download_images(config: dict[str, Any], workdir: str, archive: CrawlArchive | None = None) -> DownloadImages:
    """The image stage with its sections (`download`, `image_filters`, `runner.circuit_breaker`, and `dedup.url`
    for the crawl `archive`'s URLs) from `config`."""
    return DownloadImages(workdir, DownloadSettings.from_config(config["download"], "download"),
                          ImageFilterSettings.from_config(config["image_filters"], "image_filters"),
                          runner_settings(config).circuit_breaker, archive=archive,
                          url=UrlDedupSettings.from_config(config["dedup"]["url"], "dedup.url"))


def run_download(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
                 workdir: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """`m3w download`: OBELICS Parquet documents → documents with image bytes + report.json + config.yaml.

    The image store lives in the work folder (`--workdir`, default `OUTPUT/work/download/images`); the
    written documents carry their image bytes inline, so `m3w shard` and `m3w inspect` read them alone.
    A re-run clears the earlier documents and report but keeps the work folder: its cache.
    """
    files = document_files(inputs)
    workdir = workdir or FileSystems.join(output, "work", "download")

    def build(pipeline: beam.Pipeline) -> None:
        docs = pipeline | "Read documents" >> ReadDocumentFiles(files)
        docs = docs | "Download images" >> download_images(config, workdir)
        docs | "Write documents" >> WriteDocuments(documents_dir(output), output_settings(config), with_bytes=True,
                                                   image_store=ImageStore.in_workdir(workdir))

    return run_job(output, config, beam_args, IMAGE_STAGES, build, needs=["images"], command="download",
                   overwrite=overwrite, keep=[workdir], reads=files)


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


def run_dedup(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """`m3w dedup`: document dedup and image-URL frequency always; image content dedup when the documents
    carry bytes. Reads OBELICS-layout Parquet from other tools as well (counted: a bad row is a drop)."""
    paths = document_files(inputs)
    with_bytes = has_image_bytes(paths)
    dedup = DedupSettings.from_config(config["dedup"], "dedup")
    breaker = runner_settings(config).circuit_breaker

    def build(pipeline: beam.Pipeline) -> None:
        docs = (
            pipeline
            | "Read documents" >> ReadDocumentFiles(paths, stage=DEDUP_READ, circuit_breaker=breaker)
            | "Dedup documents" >> DedupDocuments(dedup)
            | "Drop frequent image URLs" >> DropFrequentImageUrls(dedup.image_urls, dedup.url)
        )
        if with_bytes:
            docs = docs | "Dedup images" >> DedupImages(dedup.images, breaker)
        docs | "Write documents" >> WriteDocuments(documents_dir(output), output_settings(config),
                                                   with_bytes=with_bytes)

    stages = [DEDUP_READ, *(name for name in DEDUP_STAGES if with_bytes or name != IMAGE_DEDUP)]
    return run_job(output, config, beam_args, stages, build,
                   needs=["dedup_images"] if with_bytes else [], extra={"inputs": paths, "image_dedup": with_bytes},
                   command="dedup", overwrite=overwrite, reads=paths)


def run_decontaminate(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """`m3w decontaminate`: Parquet documents → documents without the configured benchmarks' pictures and passages
    + contamination.jsonl + report.json + config.yaml. Pictures are compared only where the documents carry
    their bytes (`m3w download` output); the report says whether they did."""
    settings = DecontaminateSettings.from_config(config["decontaminate"], "decontaminate")
    check_benchmarks(settings)  # a benchmark pattern that matches nothing is refused before the output is touched
    paths = document_files(inputs)
    with_bytes = has_image_bytes(paths)
    audit = FileSystems.join(output, AUDIT_NAME)

    def build(pipeline: beam.Pipeline) -> None:
        docs = pipeline | "Read documents" >> ReadDocumentFiles(paths)
        docs = docs | "Decontaminate" >> DecontaminateDocuments(settings, runner_settings(config).circuit_breaker,
                                                                audit_path=audit)
        docs | "Write documents" >> WriteDocuments(documents_dir(output), output_settings(config),
                                                   with_bytes=with_bytes)

    def summary() -> dict[str, Any]:
        found = read_audit(audit) if FileSystems.exists(audit) else None
        return {"inputs": paths, "pictures_compared": bool(settings.images) and with_bytes,
                "contamination": None if found is None else {
                    "audit": audit, "matches": len(found), "by_benchmark": contamination_summary(found)}}

    return run_job(output, config, beam_args, [DECONTAMINATE], build, extra=summary, command="decontaminate",
                   overwrite=overwrite, reads=paths)


def run_shard(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
              overwrite: bool = False):
    """`m3w shard`: Parquet documents with image bytes → shards + manifest + tokenizer + docs + report.json."""
    shards = ShardSettings.from_config(config["shards"], "shards")
    check_shard_config(shards)
    files = document_files(inputs)
    manifest = FileSystems.join(output, MANIFEST_NAME)  # written last: none until the shards are complete

    def build(pipeline: beam.Pipeline) -> None:
        store = scratch_store(output)  # bytes wait there from the read on, so shuffles carry references
        docs = pipeline | "Read documents" >> ReadDocumentFiles(files, image_store=store)
        docs | "Write shards" >> WriteShards(output, shards, output_settings(config),
                                             runner_settings(config).circuit_breaker, store)

    def summary() -> dict[str, Any]:
        scratch = scratch_store(output).root
        if FileSystems.exists(scratch):  # every byte now lives in the shards and docs/: the scratch store goes
            FileSystems.delete([scratch])
        return {"shards": {**manifest_summary(read_manifest(manifest)), "manifest": manifest}}

    return run_job(output, config, beam_args, [SHARD_STAGE], build, extra=summary, command="shard",
                   overwrite=overwrite, reads=files)


def run_export(kind: str, inputs: list[str], output: str, config: dict[str, Any],
               beam_args: list[str] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """`m3w export KIND`: Parquet documents with image bytes → KIND's shards + manifest + report.json."""
    settings = ExportSettings.from_config(config["export"], "export")
    check_export_config(kind, settings)
    files = document_files(inputs)
    manifest_path = FileSystems.join(output, MANIFEST_NAME)  # written last: none until the shards are complete

    def build(pipeline: beam.Pipeline) -> None:
        samples = Mmc4DoFn(settings.mmc4) if kind == "mmc4" else PairsDoFn(settings.pairs)
        docs = pipeline | "Read documents" >> ReadDocumentFiles(files, stage=EXPORT_READ)
        records = docs | "Build samples" >> beam.ParDo(samples)
        records | "Write export" >> WriteExport(output, kind, settings)

    def summary() -> dict[str, Any]:
        manifest = read_manifest(manifest_path)
        return {"export": {"kind": kind, "samples": manifest["total_samples"], "shards": len(manifest["shards"]),
                           "shard_pattern": manifest["shard_pattern"], "manifest": manifest_path}}

    return run_job(output, config, beam_args, [EXPORT_READ, stage_of(kind)], build, extra=summary,
                   command="export", overwrite=overwrite, reads=files)
