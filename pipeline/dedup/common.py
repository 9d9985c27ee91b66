"""Pieces every dedup step shares: the deterministic document order, keep-one-per-key, cluster-size buckets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam

from pipeline.core.accounting import StageCounters
from schemas.document import Document

# Cluster-size buckets of the run report (`<stage>|clusters|info|size_<bucket>`).
_SIZE_BUCKETS = ((2, "2"), (5, "3-5"), (10, "6-10"), (100, "11-100"))


def size_bucket(size: int) -> str:
    for upper, name in _SIZE_BUCKETS:
        if size <= upper:
            return name
    return ">100"


def _parse_date(warc_date: str) -> datetime | None:
    """WARC-Date (ISO 8601) → aware UTC datetime; naive dates read as UTC; unknown or bad dates → None."""
    if not warc_date:
        return None
    try:
        moment = datetime.fromisoformat(warc_date.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def crawl_order_key(doc: Document) -> str:
    """`<UTC crawl time>|<doc_id>`: strings that sort earliest crawl first, unknown dates last, then by id.

    Content dedup (exact, near, images) keeps the *first crawled* copy, the likely original of a
    mirror or a reprint; these keys are the node names of the near-duplicate graph, so the smallest
    node of a cluster, which connected components returns as its label, is the copy to keep.
    """
    moment = _parse_date(doc.warc_date)
    stamp = "~" if moment is None else (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}T{moment.hour:02d}{moment.minute:02d}"
        f"{moment.second:02d}.{moment.microsecond:06d}")
    return f"{stamp}|{doc.doc_id}"


def doc_order(doc: Document) -> tuple:
    """The deterministic "first" document: earliest crawl, then lowest doc_id, then the record it came from."""
    return (crawl_order_key(doc), doc.warc_filename, doc.warc_record_offset, doc.url)


def newest_first_order(doc: Document) -> tuple:
    """URL dedup's order: the most recent crawl of a page first (its current version), ties by lowest doc_id."""
    moment = _parse_date(doc.warc_date)
    return (-(moment.timestamp() if moment else float("-inf")), doc.doc_id, doc.warc_filename,
            doc.warc_record_offset, doc.url)


class _KeepBestFn(beam.CombineFn):
    """Per key: the best document under `order` and how many documents shared the key.

    A combiner, so a hot key (one URL crawled thousands of times) is reduced before the shuffle and
    never held as a list: memory is one document per key and bundle.
    """

    def __init__(self, order: Callable[[Document], tuple]):
        self.order = order

    def create_accumulator(self) -> tuple[Document | None, int]:
        return (None, 0)

    def add_input(self, accumulator, doc: Document):
        best, count = accumulator
        if best is None or self.order(doc) < self.order(best):
            best = doc
        return (best, count + 1)

    def merge_accumulators(self, accumulators):
        best, count = None, 0
        for candidate, n in accumulators:
            count += n
            if candidate is not None and (best is None or self.order(candidate) < self.order(best)):
                best = candidate
        return (best, count)

    def extract_output(self, accumulator):
        return accumulator


class _CountKept(beam.DoFn):
    def __init__(self, stage: str, reason: str):
        self.reason = reason
        self.counts = StageCounters(stage)

    def process(self, item: tuple[Any, tuple[Document, int]]) -> Iterator[Document]:
        _, (best, count) = item
        self.counts.seen("documents", count)
        self.counts.kept("documents")
        self.counts.dropped("documents", self.reason, count - 1)
        yield best


class KeepOnePerKey(beam.PTransform):
    """Documents → the first document (under `order`) of every `key`; the others dropped with `reason`."""

    def __init__(self, stage: str, reason: str, key: Callable[[Document], str], order: Callable[[Document], tuple]):
        super().__init__()
        self.stage, self.reason, self.key, self.order = stage, reason, key, order

    def expand(self, docs):
        key = self.key
        return (
            docs
            | "Key" >> beam.Map(lambda doc: (key(doc), doc))
            | "Keep best" >> beam.CombinePerKey(_KeepBestFn(self.order))
            | "Count" >> beam.ParDo(_CountKept(self.stage, self.reason))
        )


class NoteClusterSizes(beam.PTransform):
    """(member, cluster label) pairs → `clusters|info|<prefix>size_<bucket>` counters of the stage."""

    def __init__(self, stage: str, prefix: str = ""):
        super().__init__()
        self.stage, self.prefix = stage, prefix

    def expand(self, labels):
        counts, prefix = StageCounters(self.stage), self.prefix

        def note(item: tuple[Any, int]) -> tuple:
            if item[1] >= 2:
                counts.note("clusters", f"{prefix}size_{size_bucket(item[1])}")
            return ()

        return (
            labels
            | "Per cluster" >> beam.Map(lambda pair: (pair[1], 1))
            | "Sizes" >> beam.CombinePerKey(sum)
            | "Note sizes" >> beam.FlatMap(note)
        )
