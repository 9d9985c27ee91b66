"""`m3w build`: crawl → documents → images → shards as three resumable Beam jobs, and the run report.

Each stage writes its output under `OUTPUT/stages/<name>/` and, last, a `_SUCCESS.json` marker
holding its counts and the fingerprint of what it depended on (settings, input files, m3w's version:
pipeline/core/fingerprint.py). A re-run skips every stage whose marker matches and redoes the others
from scratch (a stage without a marker may be half-written, so it is cleared first). Inside the images
stage, finished download shards are kept across runs as well. Every stage is deterministic, so an
interrupted-then-resumed build writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.canaries.shapes import CANARY_GROUP
from pipeline.core import stages as registry
from pipeline.core.accounting import (
    broken_links,
    empty_result,
    metric_kind,
    query_counts,
    split_group,
    stage_table,
    unbalanced,
    unverified,
)
from pipeline.core.files import write_json
from pipeline.core.fingerprint import (
    RUNTIME_ONLY,
    FileState,
    files_named_by,
    output_relevant,
    read_files,
    stage_fingerprint,
)
from pipeline.core.preflight import preflight
from pipeline.core.progress import run_pipeline
from pipeline.decontaminate import DecontaminateDocuments, DecontaminateSettings
from pipeline.decontaminate.audit import AUDIT_NAME
from pipeline.decontaminate.transforms import check_benchmarks
from pipeline.dedup import DedupSettings
from pipeline.images.download import DOWNLOAD, retry_summary
from pipeline.io.documents import OutputSettings, ReadDocumentFiles, WriteDocuments, parquet_files, stage_dir
from pipeline.jobs.canaries import canary_documents, canary_images, canary_note, extract_canaries
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from pipeline.jobs.stages import download_images, extract_documents, output_settings, runner_settings, write_config
from pipeline.read.crawl import expand_inputs
from pipeline.report.run_report import enrich_report, write_report
from pipeline.report.summary import WriteSummary

log = logging.getLogger(__name__)

MARKER = "_SUCCESS.json"


@dataclass
class BuildContext:
    inputs: list[str]
    output: str
    config: dict[str, Any]
    beam_args: list[str]
    canary_counts: dict[str, int] = field(default_factory=dict)  # the alignment canaries' counters so far

    def stage_dir(self, name: str) -> str:
        return stage_dir(self.output, name)

    @property
    def download_dir(self) -> str:
        """The resumable download shards and, beside them, the image store."""
        return FileSystems.join(self.output, "work", "download")

    @property
    def runner(self) -> RunnerSettings:
        return runner_settings(self.config)

    @property
    def dedup(self) -> DedupSettings:
        return DedupSettings.from_config(self.config["dedup"], "dedup")

    @property
    def output_settings(self) -> OutputSettings:
        return output_settings(self.config)

    @property
    def image_store(self):
        from pipeline.images.store import ImageStore

        return ImageStore.in_workdir(self.download_dir)

    @property
    def archive_dir(self) -> str:
        """The index of the crawl's own pictures (pipeline/images/archive.py): part of the documents stage's
        output, so it is cleared, redone and resumed with it; the bytes are in `image_store`."""
        from pipeline.images.archive import ARCHIVE_DIR

        return FileSystems.join(self.stage_dir("documents"), ARCHIVE_DIR)

    @cached_property
    def files_read(self) -> list[FileState]:
        """The crawl files the inputs match, as the reader expands them, and the files settings name (a URL
        map, models): listed once per run, for the stages' fingerprints."""
        return read_files([*expand_inputs(self.inputs), *files_named_by(self.config)])


def _run(pipeline: beam.Pipeline, config: dict[str, Any]) -> tuple[dict[str, int], str]:
    result = run_pipeline(pipeline, output_settings(config).progress_interval_s)
    return query_counts(result), metric_kind(result)


def documents_stage(ctx: BuildContext, out: str) -> beam.Pipeline:
    """read → gate → extract → filter → dedup documents → drop over-used image URLs → Parquet."""
    from pipeline.dedup import DedupDocuments, DropFrequentImageUrls
    from pipeline.filter.transforms import FilterDocuments, FilterSettings
    from pipeline.images.archive import WriteArchiveIndex
    from pipeline.read.images import KeepImages

    pipeline = make_pipeline(ctx.beam_args, ctx.runner)
    keep_images = archive = None
    if ctx.config["download"]["from_archive"]:  # the crawl's image records: bytes to the store, an index of URLs
        keep_images = KeepImages(ctx.image_store, ctx.config["download"]["max_bytes"])
        archive = WriteArchiveIndex(ctx.archive_dir, ctx.dedup.url, ctx.output_settings.doc_shards)
    docs = pipeline | "Extract documents" >> extract_documents(ctx.inputs, ctx.config, ctx.output, keep_images, archive)
    docs = docs | "Filter" >> FilterDocuments(
        filters=FilterSettings.from_config(ctx.config["filters"], "filters"),
        circuit_breaker=ctx.runner.circuit_breaker,
        audit_dir=ctx.output if ctx.output_settings.audit_drops else None)
    docs = docs | "Dedup documents" >> DedupDocuments(ctx.dedup)
    docs = docs | "Drop frequent image URLs" >> DropFrequentImageUrls(ctx.dedup.image_urls, ctx.dedup.url)
    docs | "Write documents" >> WriteDocuments(out, ctx.output_settings)
    extract_canaries(pipeline, ctx, out)  # beside the user's documents, counted and written apart
    return pipeline


def images_stage(ctx: BuildContext, out: str) -> beam.Pipeline:
    """download (resumable per URL shard) → image filters → decontaminate → image dedup → Parquet with image bytes
    (and `contamination.jsonl` when benchmarks are configured)."""
    from pipeline.dedup import DedupImages
    from pipeline.images.archive import CrawlArchive, index_files

    pipeline = make_pipeline(ctx.beam_args, ctx.runner)
    docs = pipeline | "Read documents" >> ReadDocumentFiles(parquet_files(ctx.stage_dir("documents")))
    archived = index_files(ctx.archive_dir)  # none when the documents stage kept no archive (from_archive off)
    archive = CrawlArchive(archived, ctx.image_store) if archived else None
    docs = docs | "Download images" >> download_images(ctx.config, ctx.download_dir, archive)
    docs = docs | "Decontaminate" >> DecontaminateDocuments(
        DecontaminateSettings.from_config(ctx.config["decontaminate"], "decontaminate"), ctx.runner.circuit_breaker,
        ctx.image_store, FileSystems.join(out, AUDIT_NAME))
    # Image bytes stay in the store; only the last writer reads them back (pipeline/images/store.py).
    docs = docs | "Dedup images" >> DedupImages(ctx.dedup.images, ctx.runner.circuit_breaker, ctx.image_store)
    docs | "Write documents" >> WriteDocuments(out, ctx.output_settings, with_bytes=True, image_store=ctx.image_store)
    docs | "Summary" >> WriteSummary(FileSystems.join(out, "summary.json"))
    canary_images(pipeline, ctx, out)
    return pipeline


def shards_stage(ctx: BuildContext, out: str) -> beam.Pipeline:
    """documents with images → training sequences → webdataset shards + manifest."""
    from pipeline.shards.settings import ShardSettings
    from pipeline.shards.writer import WriteShards

    pipeline = make_pipeline(ctx.beam_args, ctx.runner)
    # Bytes go back into the store as they are read: the shuffles before the shard writer carry references.
    docs = pipeline | "Read documents" >> ReadDocumentFiles(parquet_files(ctx.stage_dir("images")),
                                                            image_store=ctx.image_store)
    canaries = canary_documents(pipeline, ctx)  # marked: the writer gives them shard files of their own
    if canaries is not None:
        docs = (docs, canaries) | "With canaries" >> beam.Flatten()
    shards = ShardSettings.from_config(ctx.config["shards"], "shards")
    docs | "Write shards" >> WriteShards(out, shards, ctx.output_settings, ctx.runner.circuit_breaker, ctx.image_store,
                                         canaries=canary_note(ctx))
    return pipeline


# Each stage builds (does not run) its Beam pipeline, so the graphs can be checked without running them.
STAGES: list[tuple[str, Callable[[BuildContext, str], beam.Pipeline]]] = [
    ("documents", documents_stage),
    ("images", images_stage),
    ("shards", shards_stage),
]


# Settings no stage of a build reads (`m3w smoke`, `m3w export`), and those that change how a stage runs but
# never what it writes (pipeline/core/fingerprint.py, shared with the download cache): a resume may change them.
NOT_IN_FINGERPRINT = RUNTIME_ONLY | {("smoke",), ("export",)}


def _output_relevant(config: dict[str, Any]) -> dict[str, Any]:
    return output_relevant(config, NOT_IN_FINGERPRINT)


def fingerprint(ctx: BuildContext, stage: str) -> str:
    """What a stage's output depends on: the output-relevant config, the files the build reads (the crawl
    files its inputs match, with their size and modification time, and the files settings name) and m3w's
    version. Every stage's covers the crawl files, so one finished with older input is never trusted, even
    when only an earlier stage ran since (`run_build(only=...)`)."""
    return stage_fingerprint(stage, _output_relevant(ctx.config), ctx.files_read)


def _read_marker(directory: str) -> dict[str, Any] | None:
    path = FileSystems.join(directory, MARKER)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def _clear(directory: str) -> None:
    if FileSystems.exists(directory):
        FileSystems.delete([directory])
    FileSystems.mkdirs(directory)


def _merged(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Counter totals of two runs (stages) added up."""
    total = dict(counts)
    for counter, value in more.items():
        total[counter] = total.get(counter, 0) + value
    return total


# The last stage of the document flow each job counts: the continuity check after a job ends there (the
# stages after it have not run yet), so a job whose items all vanish before its last stage loses them.
LAST_STAGE = {"documents": "dedup_image_urls", "images": "dedup_images", "shards": "shard"}


def flow_until(job: str | None, config: dict[str, Any]) -> list[tuple[str, str]]:
    """The links of the document flow that `config` runs, up to the last stage of `job` (none for None)."""
    if job is None:
        return []
    order = registry.names()
    end = order.index(LAST_STAGE[job])
    return [(name, unit) for name, unit in registry.running(registry.document_flow(), config)
            if order.index(name) <= end]


def _lost_on_the_way(before: dict[str, int], stage_counts: dict[str, int], job: str,
                     config: dict[str, Any]) -> list[str]:
    """Broken links that appear once this job's counts join those of the jobs before it."""
    jobs = [name for name, _ in STAGES]
    previous = jobs[jobs.index(job) - 1] if jobs.index(job) else None
    known = set(broken_links(stage_table(before), flow_until(previous, config)))
    after = stage_table(_merged(before, stage_counts))
    return [problem for problem in broken_links(after, flow_until(job, config)) if problem not in known]


def run_build(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None,
              only: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every stage, then write report.json and report.html in OUTPUT."""
    ctx = BuildContext(inputs, output, config, list(beam_args or []))
    preflight(["extract", "filter", "images"], config)
    check_benchmarks(DecontaminateSettings.from_config(config["decontaminate"], "decontaminate"))  # before any work
    write_config(output, config)
    counts: dict[str, int] = {}
    timings: dict[str, float] = {}
    started_at: dict[str, float] = {}  # Unix time each stage that ran (not resumed) started: lines up with samplers
    kinds: dict[str, str] = {}  # per stage: the metric values (committed or attempted) its balance check used
    resumed: list[str] = []
    redoing = False  # once a stage runs, every later one runs too: its input may have changed
    retry_next_run = list(config["download"]["retry_next_run"])
    for name, job in STAGES:
        directory = ctx.stage_dir(name)
        marker = _read_marker(directory)
        key = fingerprint(ctx, name)
        if not redoing and marker is not None and marker.get("fingerprint") == key:
            log.warning("m3w build: stage '%s' already complete, skipped", name)
            resumed.append(name)
            stage_counts, seconds = marker["counts"], marker["seconds"]
            kinds[name] = marker.get("metrics", "unknown")  # markers of older versions do not say
        else:
            if only is not None and name not in only:
                break
            redoing = True
            _clear(directory)
            ctx.canary_counts = split_group(counts, CANARY_GROUP)[1]
            started = started_at[name] = time.time()
            stage_counts, kinds[name] = _run(job(ctx, directory), config)
            seconds = round(time.time() - started, 3)
            lost = _lost_on_the_way(counts, stage_counts, name, config)
            pending = retry_summary(stage_table(stage_counts), retry_next_run) if name == "images" else None
            if lost:  # not marked complete: a re-run redoes this stage instead of trusting its output
                log.error("m3w build: stage '%s' lost items between stages: %s", name, "; ".join(lost))
            elif pending and pending["retry_pending"]:  # not final: the next run fetches those URLs again
                log.warning("m3w build: stage '%s' not marked complete: %d image URLs failed transiently (%s); "
                            "re-run the same command to fetch them (only them: the rest comes from %s)", name,
                            pending["retry_pending"], ", ".join(f"{reason} {n}" for reason, n in
                                                                pending["retry_pending_by_reason"].items()),
                            ctx.download_dir)
            else:
                write_json(FileSystems.join(directory, MARKER),
                           {"fingerprint": key, "counts": stage_counts, "seconds": seconds, "metrics": kinds[name]})
        timings[name] = seconds
        counts = _merged(counts, stage_counts)
    counts, ctx.canary_counts = split_group(counts, CANARY_GROUP)  # the canaries' funnel is reported apart
    table = stage_table(counts, registry.names())
    flow = flow_until(next(reversed(timings), None), config)  # up to the last job that ran or was resumed
    report = {
        "output": output,
        "inputs": inputs,
        "stages": table,
        "unbalanced": unbalanced(table),
        "broken_links": broken_links(table, flow),
        "unverified": unverified(counts),
        "empty": empty_result(table, flow),
        "metrics": kinds,
        "timings_s": timings,
        "stage_started": started_at,
        "resumed_stages": resumed,
    }
    if DOWNLOAD in table:  # what the next run asks again, and what failed for good (docs/failures.md)
        images = report["images"] = retry_summary(table, retry_next_run)
        images["complete"] = not images["retry_pending"]
        images["pending_over_limit"] = images["retry_pending"] > \
            config["download"]["max_retry_pending_share"] * images["urls"]
    enrich_report(report, ctx)
    write_report(report, output)
    return report
