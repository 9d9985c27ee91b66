"""The `m3w dedup` job: OBELICS Parquet documents → deduplicated documents + report.json + config.yaml."""

from __future__ import annotations

import time
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.dedup import STAGES, DedupDocuments, DedupImages, DropFrequentImageUrls
from pipeline.preflight import preflight
from pipeline.progress import run_pipeline
from pipeline.sinks import ReadDocumentFiles, document_files

READ_STAGE = "dedup_read"


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


def run_dedup(inputs: list[str], output: str, config: dict[str, Any], beam_args: list[str] | None = None
              ) -> dict[str, Any]:
    """Document dedup and image-URL frequency always; image content dedup when the documents carry bytes."""
    from pipeline.jobs import finish_report, write_config
    from pipeline.runner import make_pipeline
    from pipeline.sinks import WriteDocuments

    started = time.time()
    paths = document_files(inputs)
    with_bytes = has_image_bytes(paths)
    preflight(["dedup_images"] if with_bytes else [], config)
    write_config(output, config)
    pipeline = make_pipeline(beam_args, config)
    docs = (
        pipeline
        | "Read documents" >> ReadDocumentFiles(paths, stage=READ_STAGE,
                                                     circuit_breaker=config["runner"]["circuit_breaker"])
        | "Dedup documents" >> DedupDocuments(config)
        | "Drop frequent image URLs" >> DropFrequentImageUrls(config)
    )
    if with_bytes:
        docs = docs | "Dedup images" >> DedupImages(config)
    docs | "Write documents" >> WriteDocuments(FileSystems.join(output, "documents"), config, with_bytes=with_bytes)
    result = run_pipeline(pipeline, config["output"]["progress_interval_s"])
    return finish_report(result, output, [READ_STAGE, *STAGES], started,
                         {"inputs": paths, "image_dedup": with_bytes})
