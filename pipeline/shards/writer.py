"""Documents with images → webdataset training shards + manifest + tokenizer + document Parquet (Beam).

`WriteShards(output_dir, settings, output, circuit_breaker)` (the `shards`, `output` and
`runner.circuit_breaker` sections):

1. the tokenizer: the configured file, or a byte-level BPE trained on a deterministic sample of the
   run's documents (`pipeline.shards.tokenizer.TrainTokenizer`, a top-k combiner, never all text in one place);
2. `BuildSamplesDoFn`: each document's images fitted to the slot size, its token stream cut into
   windows (`pipeline.shards.sequences`), each window encoded as webdataset members (`schemas.shards`);
   with `packing`, the windows are packed into rows of several documents (`pipeline.shards.packing`);
3. shard count = `num_shards`, or total sample bytes / `target_shard_bytes`; each sample goes to the
   shard its key hashes to, so placement depends on nothing but the key;
4. each shard written sorted by key with fixed tar headers, under a temporary name, then renamed (the
   writer holds one shard in memory: size the workers for `target_shard_bytes`);
5. last, `tokenizer.json` and `manifest.json` (counts and sha256 of every shard): a reader that finds
   the manifest finds a complete shard set. Stale shards of an earlier run are removed then.

Documents marked as alignment canaries (`m3w build`, pipeline/jobs/canaries.py) are cut into samples the same
way, with the user's tokenizer, but take no part in what is computed over the user's documents (the tokenizer,
the shard count, docs/): they go to shard files of their own under `canaries/`, counted under `canary:shard`
and listed in the manifest's `canaries` entry (`canaries`: what the build says about them). With or without
canaries, `shards/`, `tokenizer.json` and `docs/` are the same bytes.

Image bytes never ride through the shuffles: documents come with inline bytes or a reference into the
run's image store (`pipeline.images.store`); the fitted slots go into that store and samples carry
`StoredMember` references, which the shard writer reads back last (as the document writer does).
The same input and config give byte-identical shards and manifest, on any runner and worker count.
Counts (stage `shard`): documents in = documents with ≥1 sequence + drops; images in = images placed
in ≥1 sequence + drops; sequences (windows) in = written + drops (a packed row counts its windows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.canaries.shapes import CANARY_GROUP, is_canary
from pipeline.core.accounting import StageCounters, counted_apart
from pipeline.core.failures import BreakerSettings, FailureBreaker
from pipeline.core.files import HashingWriter, open_atomically, write_atomically
from pipeline.images.store import STORE_DIR, ImageStore
from pipeline.io.documents import OutputSettings, WriteDocuments
from pipeline.shards.pack_transform import PackRows
from pipeline.shards.packing import layout_mode, sample_slots, windows_in
from pipeline.shards.sequences import (
    SpecialIds,
    UndecodableImage,
    Window,
    WindowConfig,
    build_windows,
    drop_reason,
    fit_image,
    parse_image_size,
    token_stream,
)
from pipeline.shards.settings import ShardSettings
from pipeline.shards.tokenizer import TokenizerInfo, TrainTokenizer, tokenizer_from_json
from schemas.document import Document
from schemas.shards import (
    ATTENTION_MASK,
    CANARY_SHARDS_DIR,
    DOCS_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_EXTENSIONS,
    INPUT_IDS,
    INPUT_IDS_DTYPE,
    MANIFEST_NAME,
    MASK_DTYPE,
    METADATA,
    PHI,
    PHI_DTYPE,
    PHI_NEXT,
    SHARDS_DIR,
    TOKENIZER_NAME,
    npy_bytes,
    shard_file_name,
    write_tar,
)

log = logging.getLogger(__name__)

STAGE = "shard"
DOCS_TAG = "docs"
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclasses.dataclass(frozen=True)
class StoredMember:
    """A tar member's bytes left in the image store: what a sample carries through the shuffle instead."""

    sha256: str
    size: int


SampleRecord = tuple[str, dict[str, "bytes | StoredMember"]]  # (key, {member suffix: bytes or a reference})


def check_shard_config(shards: ShardSettings) -> None:
    """Fail before any work when the `shards` section cannot be honoured: its types, ranges and choices (checked
    at load for a config; here again for a section built in code)."""
    ShardSettings.from_config(dataclasses.asdict(shards), "shards")


def sample_key(doc_id: str, window: int) -> str:
    """Webdataset key: no dots (they separate the key from the member suffix), unique per window."""
    return f"{_KEY_UNSAFE.sub('_', doc_id)}-{window:04d}"


def document_parts(doc: Document, kept_images: dict[int, int], tokenizer) -> list[list[int] | int]:
    """Document nodes → text token lists and image indices, in reading order.

    Neighbouring text nodes form one chunk joined by blank lines (as `Document.text` does); each
    chunk is stripped, so whitespace around an image never becomes tokens of its own. Images not in
    `kept_images` (node position → image index) are left out.
    """
    pieces: list[list[str] | int] = [[]]
    for position, node in enumerate(doc.nodes):
        if node.image is not None:
            if position in kept_images:
                pieces += [kept_images[position], []]
        elif node.text:
            pieces[-1].append(node.text)
    chunks = ["\n\n".join(piece).strip() for piece in pieces if not isinstance(piece, int)]
    encoded = iter(tokenizer.encode_batch(chunks, add_special_tokens=False) if chunks else [])
    parts: list[list[int] | int] = []
    for piece in pieces:
        if isinstance(piece, int):
            parts.append(piece)
        else:
            ids = next(encoded).ids
            if ids:
                parts.append(list(ids))
    return parts


class BuildSamplesDoFn(beam.DoFn):
    """Document → its windows as webdataset sample records; the kept document on the `docs` output."""

    def __init__(self, settings: ShardSettings, circuit_breaker: BreakerSettings, store: ImageStore):
        """`settings`: the `shards` section; `circuit_breaker`: `runner.circuit_breaker` (undecodable images);
        `store`: where images by reference are read and fitted slots are put."""
        check_shard_config(settings)
        self.store = store
        self.circuit_breaker = circuit_breaker
        self.breaker: FailureBreaker | None = None
        self.settings = settings
        self.window_config = WindowConfig.from_config(settings)
        self.image_size = parse_image_size(settings.image_size)
        self.extension = IMAGE_EXTENSIONS[settings.image_format]
        self.counts = StageCounters(STAGE)
        self._tokenizer = None
        self._tokenizer_sha = ""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokenizer": None, "_tokenizer_sha": ""}

    def setup(self) -> None:
        self.breaker = FailureBreaker.from_config(STAGE, self.circuit_breaker)

    def _tokenizer_for(self, info: TokenizerInfo):
        if info.sha256 != self._tokenizer_sha:
            self._tokenizer = tokenizer_from_json(info.json)
            self._tokenizer_sha = info.sha256
        return self._tokenizer

    def _fit_images(self, doc: Document) -> tuple[dict[int, int], list[tuple[str, StoredMember]], dict[str, int]]:
        """Usable images: node position → image index, (url, stored slot) per image index, drops by reason.

        Only the decoder refusing an image's own bytes is that image's fault (`undecodable`); any other error
        of fitting (resizing, encoding, the store) stops the run, and so does (nearly) every image of a worker
        being undecodable (`FailureBreaker`)."""
        settings = self.settings
        index_of: dict[int, int] = {}
        fitted: list[tuple[str, StoredMember]] = []
        drops: dict[str, int] = {}
        for position, node in enumerate(doc.nodes):
            if node.image is None:
                continue
            source = self.store.bytes_of(node.image)
            if not source:
                drops["no_bytes"] = drops.get("no_bytes", 0) + 1
                continue
            try:
                data = fit_image(source, self.image_size, settings.resize_mode, settings.image_format,
                                 settings.image_quality)
            except UndecodableImage as error:
                self.breaker.failed(error)
                drops["undecodable"] = drops.get("undecodable", 0) + 1
                continue
            self.breaker.succeeded()
            index_of[position] = len(fitted)
            fitted.append((node.image.url, StoredMember(self.store.put(data), len(data))))
        return index_of, fitted, drops

    def process(self, doc: Document, tokenizer: TokenizerInfo) -> Iterator[Any]:
        counts = self.counts
        counts.seen("documents")
        counts.seen("images", len(doc.images))
        index_of, fitted, image_drops = self._fit_images(doc)
        for reason, n in sorted(image_drops.items()):
            counts.dropped("images", reason, n)

        special = SpecialIds(*(tokenizer.id_of(role) for role in ("image", "eoc", "eos", "pad")))
        parts = document_parts(doc, index_of, self._tokenizer_for(tokenizer))
        ids, image_at = token_stream(parts, special)
        windows = build_windows(ids, image_at, self.window_config, special, doc.doc_id)
        counts.seen("sequences", len(windows))
        emitted: list[Window] = []
        window_drops: dict[str, int] = {}
        for window in windows:
            reason = drop_reason(window, self.window_config)
            if reason:
                window_drops[reason] = window_drops.get(reason, 0) + 1
                counts.dropped("sequences", reason)
            else:
                emitted.append(window)

        placed = {index for window in emitted for index in window.image_indices}
        counts.kept("images", len(placed))
        counts.dropped("images", "not_in_sequence", len(fitted) - len(placed))
        if not emitted:
            reason = max(sorted(window_drops), key=window_drops.get) if window_drops else "no_sequence"
            counts.dropped("documents", reason)
            return
        counts.kept("documents")
        if not self.settings.packing:  # packed: the rows' padding is counted where they are packed
            counts.note("sequences", "real_tokens", sum(w.n_tokens for w in emitted))
            counts.note("sequences", "padding_tokens", sum(self.window_config.seq_len - w.n_tokens for w in emitted))
        for window in emitted:
            yield self.record(doc, window, len(windows), fitted)
        yield beam.pvalue.TaggedOutput(DOCS_TAG, self.store.by_reference(without_unusable_images(doc, index_of)))

    def record(self, doc: Document, window: Window, n_windows: int,
               fitted: list[tuple[str, StoredMember]]) -> SampleRecord:
        """One window → (key, members), the layout of `schemas.shards`."""
        key = sample_key(doc.doc_id, window.index)
        slots = [fitted[index] for index in window.image_indices]
        members: dict[str, bytes | StoredMember] = {
            INPUT_IDS: npy_bytes(window.input_ids, INPUT_IDS_DTYPE),
            ATTENTION_MASK: npy_bytes(window.attention_mask, MASK_DTYPE),
            PHI: npy_bytes(window.phi, PHI_DTYPE),
            PHI_NEXT: npy_bytes(window.phi_next, PHI_DTYPE),
        }
        for slot, (_, data) in enumerate(slots):
            members[f"img{slot}.{self.extension}"] = data
        metadata = {
            "key": key,
            "doc_id": doc.doc_id,
            "url": doc.url,
            "domain": (urlsplit(doc.url).hostname or "").lower(),
            "language": str(doc.metadata.get("language") or ""),
            "window": window.index,
            "n_windows": n_windows,
            "token_start": window.token_start,
            "n_tokens": window.n_tokens,
            "n_targets": window.n_targets,
            "starts_at_boundary": window.starts_at_boundary,
            "n_images": len(slots),
            "max_images": self.window_config.max_images,
            "image_urls": [url for url, _ in slots],
            "image_sha256": [stored.sha256 for _, stored in slots],
            "image_size": list(self.image_size),
            "resize_mode": self.settings.resize_mode,
            "image_format": self.settings.image_format,
            "seq_len": self.window_config.seq_len,
            "mode": "random_window" if self.window_config.random_window else "chunked",
        }
        members[METADATA] = json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return key, members


def without_unusable_images(doc: Document, usable_positions: dict[int, int]) -> Document:
    """The document as the shards saw it: image nodes without bytes or undecodable removed."""
    if len(usable_positions) == len(doc.images):
        return doc
    nodes = [node for position, node in enumerate(doc.nodes) if node.image is None or position in usable_positions]
    out = Document(doc_id=doc.doc_id, url=doc.url, nodes=nodes, warc_filename=doc.warc_filename,
                   warc_record_offset=doc.warc_record_offset, warc_record_length=doc.warc_record_length,
                   warc_date=doc.warc_date, metadata=dict(doc.metadata))
    out.normalize_nodes()
    return out


def _size(data: bytes | StoredMember) -> int:
    return data.size if isinstance(data, StoredMember) else len(data)


def record_bytes(record: SampleRecord) -> int:
    """Bytes the sample takes in a tar: a 512-byte header per member, data padded to 512-byte blocks."""
    return sum(512 + -(-_size(data) // 512) * 512 for data in record[1].values())


def shard_index(key: str, shards: int) -> int:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) % shards


def shard_count(total_bytes: int, num_shards: int | None, target_shard_bytes: int) -> int:
    """`num_shards` when set, else enough shards of about `target_shard_bytes` for `total_bytes`."""
    if num_shards:
        return num_shards
    return max(1, math.ceil(total_bytes / target_shard_bytes))


class WriteShardDoFn(beam.DoFn):
    """(shard index, records) → the tar file under its final name; returns its manifest entry.

    Shards are numbered densely over the indices that received samples (`used`), so no empty tar
    is written. Two records with one key (the same document given twice) keep one, counted.
    """

    def __init__(self, shards_dir: str, store: ImageStore, folder: str = SHARDS_DIR):
        """`folder`: the name of `shards_dir` inside the shard set (`shards`, or `canaries`)."""
        self.shards_dir = shards_dir
        self.store = store
        self.folder = folder
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[int, Any], used: list[int]) -> Iterator[dict[str, Any]]:
        index, records = item
        ordered = sorted(records, key=lambda r: (r[0], hashlib.sha256(_canonical(r[1])).hexdigest()))
        unique: list[SampleRecord] = []
        for key, members in ordered:
            if unique and unique[-1][0] == key:
                self.counts.dropped("sequences", "duplicate_key", windows_in(members))
                continue
            unique.append((key, members))
        self.counts.kept("sequences", sum(windows_in(members) for _, members in unique))  # windows, packed or not
        name = shard_file_name(sorted(used).index(index))
        # Streamed: the records carry image references, and one sample's bytes are read back at a time.
        size, digest = write_tar_file(
            FileSystems.join(self.shards_dir, name),
            ((key, {suffix: self.store.get(data.sha256) if isinstance(data, StoredMember) else data
                    for suffix, data in members.items()}) for key, members in unique))
        yield {"file": f"{self.folder}/{name}", "samples": len(unique), "bytes": size, "sha256": digest}


def write_tar_file(path: str, samples: Iterable[tuple[str, dict[str, bytes]]]) -> tuple[int, str]:
    """Samples (sorted by key) → a tar shard at `path`, streamed and atomic; returns its size and sha256 for the
    manifest. Shared by the shard writer and `m3w export`."""
    with open_atomically(path) as handle:
        tar = HashingWriter(handle)
        write_tar(tar, samples)
    return tar.size, tar.hexdigest()


def _digest(data: bytes | StoredMember) -> bytes:
    return bytes.fromhex(data.sha256) if isinstance(data, StoredMember) else hashlib.sha256(data).digest()


def _canonical(members: dict[str, bytes | StoredMember]) -> bytes:
    return b"".join(suffix.encode() + b"\x00" + _digest(members[suffix]) for suffix in sorted(members))


def write_manifest(entries: list[dict[str, Any]], output_dir: str, tokenizer: TokenizerInfo, documents: int,
                   shards: ShardSettings, canary_entries: list[dict[str, Any]] = (), canary_documents: int = 0,
                   canaries: dict[str, Any] | None = None) -> str:
    """Tokenizer file, then removal of stale shards, then the manifest (last: it marks completion). The
    `canaries` entry (a build's note, plus the canary shards written) when there is a note or a canary shard."""
    write_atomically(FileSystems.join(output_dir, TOKENIZER_NAME), tokenizer.json.encode("utf-8"))
    entries = sorted(entries, key=lambda e: e["file"])
    canary_entries = sorted(canary_entries, key=lambda e: e["file"])
    listed = {FileSystems.join(output_dir, entry["file"]) for entry in [*entries, *canary_entries]}
    stale_patterns = [FileSystems.join(output_dir, folder, "*") for folder in (SHARDS_DIR, CANARY_SHARDS_DIR)]
    stale = [m.path for result in FileSystems.match(stale_patterns) for m in result.metadata_list
             if m.path not in listed]
    if stale:
        FileSystems.delete(stale)
    window = WindowConfig.from_config(shards)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "seq_len": window.seq_len,
        "max_images": sample_slots(shards.packing, window.max_images, shards.packing_max_images),
        "image_size": list(parse_image_size(shards.image_size)),
        "resize_mode": shards.resize_mode,
        "image_format": shards.image_format,
        "mode": layout_mode(shards.packing, window.random_window),
        "tokenizer": tokenizer.manifest_entry(TOKENIZER_NAME),
        "shards": entries,
        "total_samples": sum(entry["samples"] for entry in entries),
        "total_documents": documents,
        "config": dataclasses.asdict(shards),
    }
    if canaries is not None or canary_entries:
        manifest["canaries"] = {**(canaries or {}), "shards": canary_entries, "documents": canary_documents,
                                "samples": sum(entry["samples"] for entry in canary_entries)}
    path = FileSystems.join(output_dir, MANIFEST_NAME)
    write_atomically(path, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return path


class WriteShards(beam.PTransform):
    """Documents (with image bytes) → `output_dir/{shards/*.tar, tokenizer.json, manifest.json, docs/}`.

    `settings` is the `shards` section, `output` the `output` section (the document Parquet in docs/),
    `circuit_breaker` the `runner.circuit_breaker` one. `image_store` holds the bytes of images that travel
    by reference and receives the fitted slots (a build passes its own; default: `output_dir/work/images`,
    scratch that `m3w shard` removes when done). `canaries`: what the build says about its alignment canaries
    (the manifest's `canaries` entry; None outside a build). Returns a one-element PCollection with the
    manifest's path, available once everything is written.
    """

    def __init__(self, output_dir: str, settings: ShardSettings, output: OutputSettings,
                 circuit_breaker: BreakerSettings, image_store: ImageStore | None = None,
                 canaries: dict[str, Any] | None = None):
        super().__init__()
        check_shard_config(settings)
        self.output_dir = output_dir.rstrip("/")
        self.settings = settings
        self.output = output
        self.circuit_breaker = circuit_breaker
        self.store = image_store or scratch_store(self.output_dir)
        self.canaries = canaries

    def expand(self, docs):
        shards = self.settings
        output_dir = self.output_dir
        docs, canaries = docs | "Canaries apart" >> beam.Partition(lambda doc, _: int(is_canary(doc)), 2)

        tokenizer = docs | "Tokenizer" >> TrainTokenizer(shards)
        built, entries = self._samples_and_shards(docs, tokenizer, SHARDS_DIR, shards.num_shards)
        with counted_apart(CANARY_GROUP):  # the user's tokenizer; a shard count and files of their own
            canary_built, canary_entries = self._samples_and_shards(canaries, tokenizer, CANARY_SHARDS_DIR, None,
                                                                     "Canary ")
        documents = built[DOCS_TAG] | "Count documents" >> beam.combiners.Count.Globally()
        canary_documents = canary_built[DOCS_TAG] | "Count canary documents" >> beam.combiners.Count.Globally()
        manifest = (
            entries
            | "Collect entries" >> beam.combiners.ToList()
            | "Write manifest" >> beam.Map(
                write_manifest, output_dir, beam.pvalue.AsSingleton(tokenizer),
                beam.pvalue.AsSingleton(documents), shards,
                canary_entries=beam.pvalue.AsList(canary_entries),
                canary_documents=beam.pvalue.AsSingleton(canary_documents), canaries=self.canaries,
            )
        )
        mode = shards.docs_parquet_images
        if mode != "none":  # the user's documents only
            built[DOCS_TAG] | "Write documents" >> WriteDocuments(
                FileSystems.join(output_dir, DOCS_DIR), self.output, with_bytes=mode == "bytes", image_store=self.store
            )
        return manifest

    def _samples_and_shards(self, docs, tokenizer, folder: str, num_shards: int | None, label: str = ""):
        """Documents → (their samples with the kept documents on `DOCS_TAG`, the manifest entries of the shards
        written under `folder`: `num_shards` of them, or as many as `target_shard_bytes` asks)."""
        shards = self.settings
        built = docs | f"{label}Build samples" >> beam.ParDo(
            BuildSamplesDoFn(shards, self.circuit_breaker, self.store), tokenizer=beam.pvalue.AsSingleton(tokenizer)
        ).with_outputs(DOCS_TAG, main="samples")
        samples = built.samples
        if shards.packing:
            samples = samples | f"{label}Pack rows" >> PackRows(shards.seq_len, shards.packing_max_images,
                                                                 shards.packing_buffer, tokenizer)

        total = (samples | f"{label}Sample bytes" >> beam.Map(record_bytes)
                 | f"{label}Total bytes" >> beam.CombineGlobally(sum))
        count = total | f"{label}Shard count" >> beam.Map(shard_count, num_shards, shards.target_shard_bytes)
        keyed = samples | f"{label}Assign shard" >> beam.Map(
            lambda record, n: (shard_index(record[0], n), record), n=beam.pvalue.AsSingleton(count)
        )
        used = (
            keyed
            | f"{label}Shard ids" >> beam.Keys()
            | f"{label}Distinct ids" >> beam.Distinct()
            | f"{label}Used ids" >> beam.combiners.ToList()
        )
        entries = (
            keyed
            | f"{label}Group shards" >> beam.GroupByKey()
            | f"{label}Write shards" >> beam.ParDo(
                WriteShardDoFn(FileSystems.join(self.output_dir, folder), self.store, folder),
                used=beam.pvalue.AsSingleton(used))
        )
        return built, entries


def scratch_store(output_dir: str) -> ImageStore:
    """The image store of a standalone shard run: inside its output, removed once the run is done."""
    return ImageStore(FileSystems.join(output_dir, "work", STORE_DIR))
