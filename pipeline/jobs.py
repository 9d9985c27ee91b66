"""The Beam jobs behind the CLI: each builds its pipeline, runs it and writes its run report."""

from __future__ import annotations

import logging
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.accounting import (
    DROPPED_TAG,
    broken_links,
    flow_of,
    metric_kind,
    query_counts,
    stage_table,
    unbalanced,
)
from pipeline.config import dump_config
from pipeline.extract import ExtractDoFn
from pipeline.files import write_atomically, write_json
from pipeline.filtering import GatePages
from pipeline.preflight import preflight
from pipeline.progress import run_pipeline
from pipeline.read import ReadCrawl, expand_inputs
from pipeline.runner import make_pipeline
from pipeline.sinks import WriteDocuments, WriteDropAudit

log = logging.getLogger(__name__)

EXTRACT_STAGES = ["read", "gate", "extract"]


def write_config(output: str, config: dict[str, Any]) -> None:
    FileSystems.mkdirs(output) if not FileSystems.exists(output) else None
    write_atomically(FileSystems.join(output, "config.yaml"), dump_config(config).encode("utf-8"))


def extract_documents(pipeline: beam.Pipeline, inputs: list[str], config: dict[str, Any], audit_dir: str | None):
    """read → gate → extract, as a reusable piece of larger jobs; returns the documents PCollection."""
    pages = pipeline | "Read crawl" >> ReadCrawl(expand_inputs(inputs), config)
    pages = pages | "Gate" >> GatePages(config, audit_dir)  # blocklisted and clearly off-language pages
    results = pages | "Extract" >> beam.ParDo(ExtractDoFn(config)).with_outputs(DROPPED_TAG, main="docs")
    if audit_dir and config["output"]["audit_drops"]:
        results[DROPPED_TAG] | "Audit extract drops" >> WriteDropAudit(audit_dir)
    return results.docs


def finish_report(result, output: str, stages: list[str], started: float, extra: dict[str, Any] | None = None):
    table = stage_table(query_counts(result), stages)
    report = {
        "stages": table,
        "unbalanced": unbalanced(table),
        "broken_links": broken_links(table, flow_of(stages)),
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


def run_extract(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None):
    """`m3w extract`: crawl files → OBELICS Parquet documents + report.json + config.yaml."""
    started = time.time()
    preflight(["extract"], config)
    write_config(output, config)
    pipeline = make_pipeline(beam_args, config)
    docs = extract_documents(pipeline, inputs, config, output)
    docs | "Write documents" >> WriteDocuments(FileSystems.join(output, "documents"), config)
    result = run_pipeline(pipeline, config["output"]["progress_interval_s"])
    return finish_report(result, output, EXTRACT_STAGES, started)
