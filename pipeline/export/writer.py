"""The `m3w export` Beam job: Parquet documents → samples of one layout → webdataset tars, sizes.json, manifest.json.

Output directory::

    00000.tar, 00001.tar ...   webdataset shards (members sorted, fixed tar headers), named densely so one brace
                               pattern (`{00000..0000N}.tar`, in the manifest) names them all
    sizes.json                 {shard file: samples}, which open_clip's and OpenFlamingo's get_dataset_size read
    manifest.json              written last: format, shards with samples/bytes/sha256, total, brace pattern, config
    report.json, config.yaml   the run's counts (stages `export_read` and `export_mmc4` / `export_pairs`)

Each sample goes to the shard its key hashes to, so the same documents and config give the same bytes on any
runner. Counts: documents, images (and, for pairs, candidate texts) in = out + drops; `samples` in = written +
`duplicate_key` (the same document given twice).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterator
from typing import Annotated, Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline.canaries.shapes import is_canary
from pipeline.config import ConfigError, Section
from pipeline.core.accounting import StageCounters
from pipeline.core.files import write_atomically
from pipeline.export.mmc4 import mmc4_sample
from pipeline.export.pairs import PairExportSettings, PairRules, document_pairs
from pipeline.shards.writer import record_bytes, sample_key, shard_count, shard_index, write_tar_file
from schemas.document import Document
from schemas.shards import MANIFEST_NAME

KINDS = ("mmc4", "pairs")
READ_STAGE = "export_read"
SIZES_NAME = "sizes.json"
FORMAT_VERSION = 1

SampleRecord = tuple[str, dict[str, bytes]]


@dataclasses.dataclass(frozen=True)
class Mmc4ExportSettings(Section):
    """`export.mmc4`: which documents make MMC4 samples, and the similarity every image gets."""

    min_images: NonNegativeInt
    consumer_min_image_bytes: NonNegativeInt
    similarity: Annotated[float, Field(ge=-1.0, le=1.0)]  # a cosine


@dataclasses.dataclass(frozen=True)
class ExportSettings(Section):
    """The `export` section: shard sizes and one subsection per layout (pipeline/defaults.yaml)."""

    num_shards: PositiveInt | None
    target_shard_bytes: PositiveInt
    mmc4: Mmc4ExportSettings
    pairs: PairExportSettings


def stage_of(kind: str) -> str:
    return f"export_{kind}"


def check_export_config(kind: str, settings: ExportSettings) -> None:
    """Fail before any work when the `export` section cannot be honoured."""
    if kind not in KINDS:
        raise ConfigError(f"unknown export kind {kind!r} (known: {', '.join(KINDS)})")
    if kind == "pairs":
        PairRules.from_config(settings.pairs)


def dropped_as_canary(doc: Document, counts: StageCounters) -> bool:
    """An alignment canary of `m3w build` (marked `canary`) is never exported: counted as a `canary` drop."""
    if not is_canary(doc):
        return False
    counts.seen("documents")
    counts.seen("images", len(doc.images))
    counts.dropped("documents", "canary")
    counts.dropped("images", "canary", len(doc.images))
    return True


class Mmc4DoFn(beam.DoFn):
    """Document → its MMC4 sample (key, {"json": ...}); counts documents, images and samples."""

    def __init__(self, settings: Mmc4ExportSettings):
        """`settings`: the `export.mmc4` section."""
        self.min_images = settings.min_images
        self.small_bytes = settings.consumer_min_image_bytes
        self.similarity = settings.similarity
        self.counts = StageCounters(stage_of("mmc4"))

    def process(self, doc: Document) -> Iterator[SampleRecord]:
        counts = self.counts
        if dropped_as_canary(doc, counts):
            return
        result = mmc4_sample(doc, sample_key(doc.doc_id, 0), self.min_images, self.small_bytes, self.similarity)
        counts.seen("documents")
        counts.seen("images", result.images_in)
        for reason, n in sorted(result.image_drops.items()):
            counts.dropped("images", reason, n)
        counts.kept("images", result.images_kept)
        if result.sample is None:
            counts.dropped("documents", result.document_drop)
            return
        counts.kept("documents")
        counts.note("images", "under_consumer_min_bytes", result.small_images)
        counts.seen("samples")
        yield result.key, result.members()


class PairsDoFn(beam.DoFn):
    """Document → its image-text pairs; counts documents, images, candidate texts and samples."""

    def __init__(self, settings: PairExportSettings):
        """`settings`: the `export.pairs` section."""
        self.rules = PairRules.from_config(settings)
        self.counts = StageCounters(stage_of("pairs"))
        self._language = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_language": None}

    def setup(self) -> None:
        if self.rules.languages:
            from filters.base import TextItem
            from filters.language import LanguageRule, LanguageSettings

            # The bundled lid.176 model, reading 10 labels per prediction (the identifier's own default).
            rule = LanguageRule(LanguageSettings(enabled=True, model=None, languages=list(self.rules.languages),
                                                 threshold=self.rules.language_threshold, top_k=10))
            self._language = lambda text: rule(TextItem(text=text)).reason or None

    def process(self, doc: Document) -> Iterator[SampleRecord]:
        counts = self.counts
        if dropped_as_canary(doc, counts):
            return
        result = document_pairs(doc, self.rules, functools.partial(sample_key, doc.doc_id), self._language)
        counts.seen("documents")
        counts.seen("images", result.images_in)
        counts.seen("texts", result.texts_in)
        for reason, n in sorted(result.image_drops.items()):
            counts.dropped("images", reason, n)
        for reason, n in sorted(result.text_drops.items()):
            counts.dropped("texts", reason, n)
        counts.kept("images", len(result.pairs))
        counts.kept("texts", result.texts_kept)
        if not result.pairs:
            counts.dropped("documents", "no_pairs")
            return
        counts.kept("documents")
        counts.seen("samples", len(result.pairs))
        yield from result.pairs


def export_shard_name(index: int) -> str:
    return f"{index:05d}.tar"


class WriteExportShardDoFn(beam.DoFn):
    """(shard index, records) → `{dense index:05d}.tar` under its final name; yields its manifest entry."""

    def __init__(self, output_dir: str, stage: str):
        self.output_dir = output_dir
        self.counts = StageCounters(stage)

    def process(self, item: tuple[int, Any], used: list[int]) -> Iterator[dict[str, Any]]:
        index, records = item
        ordered = sorted(records, key=lambda r: (r[0], hashlib.sha256(b"".join(r[1][s] for s in sorted(r[1])))
                                                .hexdigest()))
        unique = [record for n, record in enumerate(ordered) if n == 0 or ordered[n - 1][0] != record[0]]
        self.counts.dropped("samples", "duplicate_key", len(ordered) - len(unique))
        self.counts.kept("samples", len(unique))
        name = export_shard_name(sorted(used).index(index))
        size, digest = write_tar_file(FileSystems.join(self.output_dir, name), unique)  # `unique` is sorted by key
        yield {"file": name, "samples": len(unique), "bytes": size, "sha256": digest}


def manifest_config(kind: str, settings: ExportSettings) -> dict[str, Any]:
    """The settings a `kind` export ran with, as its manifest records them: shard sizes and the kind's section."""
    return {"num_shards": settings.num_shards, "target_shard_bytes": settings.target_shard_bytes,
            **dataclasses.asdict(getattr(settings, kind))}


def write_index(entries: list[dict[str, Any]], output_dir: str, kind: str, settings: ExportSettings) -> str:
    """Stale shards of an earlier run removed, then sizes.json, then the manifest (last: it marks completion)."""
    entries = sorted(entries, key=lambda e: e["file"])
    listed = {FileSystems.join(output_dir, e["file"]) for e in entries}
    found = FileSystems.match([FileSystems.join(output_dir, "*.tar")])[0].metadata_list
    stale = [m.path for m in found if m.path not in listed]
    if stale:
        FileSystems.delete(stale)
    write_atomically(FileSystems.join(output_dir, SIZES_NAME),
                     json.dumps({e["file"]: e["samples"] for e in entries}, indent=2).encode("utf-8"))
    manifest = {
        "format": f"m3w-export-{kind}",
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "shards": entries,
        "total_samples": sum(e["samples"] for e in entries),
        "shard_pattern": f"{{00000..{len(entries) - 1:05d}}}.tar" if entries else None,
        "config": manifest_config(kind, settings),
    }
    path = FileSystems.join(output_dir, MANIFEST_NAME)
    write_atomically(path, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return path


class WriteExport(beam.PTransform):
    """Sample records → the shards, sizes.json and manifest.json of `output_dir`."""

    def __init__(self, output_dir: str, kind: str, settings: ExportSettings):
        """`settings`: the `export` section (shard sizes; the `kind` subsection goes into the manifest)."""
        super().__init__()
        self.output_dir = output_dir.rstrip("/")
        self.kind = kind
        self.settings = settings

    def expand(self, records):
        settings, kind, output_dir = self.settings, self.kind, self.output_dir
        total = records | "Sample bytes" >> beam.Map(record_bytes) | "Total bytes" >> beam.CombineGlobally(sum)
        count = total | "Shard count" >> beam.Map(shard_count, settings.num_shards, settings.target_shard_bytes)
        keyed = records | "Assign shard" >> beam.Map(
            lambda record, n: (shard_index(record[0], n), record), n=beam.pvalue.AsSingleton(count))
        used = (keyed | "Shard ids" >> beam.Keys() | "Distinct ids" >> beam.Distinct()
                | "Used ids" >> beam.combiners.ToList())
        return (
            keyed
            | "Group shards" >> beam.GroupByKey()
            | "Write shards" >> beam.ParDo(WriteExportShardDoFn(output_dir, stage_of(kind)),
                                           used=beam.pvalue.AsSingleton(used))
            | "Collect entries" >> beam.combiners.ToList()
            | "Write manifest" >> beam.Map(write_index, output_dir, kind, settings)
        )
