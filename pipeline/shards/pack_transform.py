"""The Beam step of packed shards: window samples → rows, one buffer of about `packing_buffer` windows per worker.

Windows go to buffers by a hash of their key, the number of buffers set by the number of windows (known before
any is packed), so each buffer's contents, and the rows `pipeline.shards.packing.pack_records` makes of them,
depend on the input alone, on any runner and worker count. No step sees all windows at once.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from pipeline.core.accounting import StageCounters
from pipeline.shards.packing import Record, pack_records
from schemas.shards import METADATA

STAGE = "shard"


def buffer_index(key: str, buffers: int) -> int:
    return int(hashlib.sha256(f"m3w-packing\x00{key}".encode()).hexdigest()[:16], 16) % buffers


def _payload_digest(data: Any) -> str:
    return data.sha256 if hasattr(data, "sha256") else hashlib.sha256(data).hexdigest()


def _content_digest(members: dict[str, Any]) -> str:
    """The same for the same window whatever carries it (image bytes or their store reference)."""
    return hashlib.sha256("".join(f"{suffix}:{_payload_digest(members[suffix])};"
                                  for suffix in sorted(members)).encode()).hexdigest()


class PackBufferDoFn(beam.DoFn):
    """(buffer, window samples) → packed rows. A window given twice (the same document twice) is packed once,
    counted as `duplicate_key`; the padding of the rows is counted (`real_tokens`, `padding_tokens`, `rows`)."""

    def __init__(self, seq_len: int, max_images: int):
        self.seq_len = seq_len
        self.max_images = max_images
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[int, Any], tokenizer) -> Iterator[Record]:
        _, windows = item
        unique: list[Record] = []
        for record in sorted(windows, key=lambda r: (r[0], _content_digest(r[1]))):
            if unique and unique[-1][0] == record[0]:
                self.counts.dropped("sequences", "duplicate_key")
                continue
            unique.append(record)
        rows = pack_records(unique, self.seq_len, self.max_images, tokenizer.id_of("image"), tokenizer.id_of("pad"))
        real = sum(json.loads(members[METADATA].decode("utf-8"))["n_tokens"] for _, members in rows)
        self.counts.note("sequences", "rows", len(rows))
        self.counts.note("sequences", "real_tokens", real)
        self.counts.note("sequences", "padding_tokens", len(rows) * self.seq_len - real)
        yield from rows


class PackRows(beam.PTransform):
    """Window samples → packed row samples, buffer by buffer (`packing_buffer` windows each, by key hash).

    `tokenizer` is the one-element PCollection of the run's `TokenizerInfo` (the `<image>` and `<pad>` ids)."""

    def __init__(self, seq_len: int, max_images: int, packing_buffer: int, tokenizer):
        super().__init__()
        self.seq_len = seq_len
        self.max_images = max_images
        self.packing_buffer = packing_buffer
        self.tokenizer = tokenizer

    def expand(self, windows):
        buffers = (
            windows
            | "Count windows" >> beam.combiners.Count.Globally()
            | "Buffer count" >> beam.Map(lambda count, size: max(1, math.ceil(count / size)), self.packing_buffer)
        )
        return (
            windows
            | "Assign buffer" >> beam.Map(lambda record, n: (buffer_index(record[0], n), record),
                                          n=beam.pvalue.AsSingleton(buffers))
            | "Group buffers" >> beam.GroupByKey()
            | "Pack buffers" >> beam.ParDo(PackBufferDoFn(self.seq_len, self.max_images),
                                           tokenizer=beam.pvalue.AsSingleton(self.tokenizer))
        )
