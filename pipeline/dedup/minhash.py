"""Near-duplicate documents: MinHash LSH over word 5-grams, clusters by connected components, one kept each.

1. Every document's MinHash signature (datatrove's defaults: 14 bands x 8 hashes, ≈0.72 Jaccard at
   the S-curve's midpoint) gives one key per band.
2. GroupByKey on the band keys: documents sharing a bucket are candidates. Without verification the
   bucket becomes a star on its smallest node (the same components as the full clique, with k-1
   edges); with `verify_threshold` set, candidate pairs in a bucket are kept only when their estimated
   Jaccard reaches it, and each verified bucket component becomes a star.
3. `ConnectedComponents` (large-star / small-star) labels every candidate document with the smallest
   node of its cluster, so A~B and B~C put A, B and C in one cluster even when A≁C. Nodes are
   `crawl_order_key`s (`<crawl time>|<doc_id>`): the smallest is the first crawled copy, lowest
   doc_id on a tie — the likely original of a mirror or a reprint.
4. CoGroupByKey of documents and labels by node: the document that is its cluster's label is kept,
   the others dropped as `near_duplicate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import apache_beam as beam
import numpy as np
from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline.config import Section, Share
from pipeline.core.accounting import StageCounters
from pipeline.dedup.common import NoteClusterSizes, crawl_order_key
from pipeline.dedup.components import ConnectedComponents
from pipeline.dedup.keys import MinHasher, pairwise_jaccard
from schemas.document import Document

STAGE = "dedup_near"
REASON = "near_duplicate"


@dataclass(frozen=True)
class NearDedupSettings(Section):
    """`dedup.near`: the MinHash LSH family, the optional pair verification and the clustering rounds."""

    enabled: bool
    ngram: Annotated[int, Field(ge=1, le=64)]
    bands: PositiveInt
    rows: PositiveInt
    seed: NonNegativeInt
    verify_threshold: Share | None
    max_bucket_pairwise: Annotated[int, Field(ge=2)]
    max_rounds: PositiveInt


def make_hasher(near: NearDedupSettings) -> MinHasher:
    return MinHasher(ngram=near.ngram, bands=near.bands, rows=near.rows, seed=near.seed)


class _BandKeys(beam.DoFn):
    """Document → (band key, node) per band, or (band key, (node, signature)) when pairs are verified.

    The node is the document's `crawl_order_key`, so the smallest node of a cluster is its first crawl.
    """

    def __init__(self, near: NearDedupSettings, verify: bool):
        self.near = near
        self.verify = verify
        self.counts = StageCounters(STAGE)

    def setup(self) -> None:
        self.hasher = make_hasher(self.near)

    def process(self, doc: Document) -> Iterator[tuple[bytes, Any]]:
        signature = self.hasher.signature(doc.text)
        if signature is None:
            self.counts.note("documents", "no_shingles")
            return
        node = crawl_order_key(doc)
        payload = (node, signature.tobytes()) if self.verify else node
        for key in self.hasher.band_keys(signature):
            yield key, payload


class _BucketEdges(beam.DoFn):
    """A band bucket → edges that connect exactly its (verified) candidates."""

    def __init__(self, verify_threshold: float | None, max_pairwise: int):
        self.verify_threshold = verify_threshold
        self.max_pairwise = max_pairwise
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[bytes, Iterable[Any]]) -> Iterator[tuple[str, str]]:
        _, members = item
        if self.verify_threshold is None:
            root = min(members)  # two passes over the iterable: nothing but the root is held
            for member in members:
                if member != root:
                    yield member, root
            return
        yield from self._verified(dict(members))

    def _verified(self, signatures: dict[str, bytes]) -> Iterator[tuple[str, str]]:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components

        ids = sorted(signatures)  # nodes in crawl order
        if len(ids) < 2:
            return
        if len(ids) > self.max_pairwise:
            # Only pairs inside blocks of `max_pairwise` ids are compared: a cluster may be split, never joined.
            self.counts.note("components", "oversized_buckets")
        for start in range(0, len(ids), self.max_pairwise):
            block = ids[start:start + self.max_pairwise]
            if len(block) < 2:
                continue
            matrix = np.stack([np.frombuffer(signatures[node], dtype=np.uint32) for node in block])
            similar = pairwise_jaccard(matrix) >= self.verify_threshold
            pairs = (len(block) * (len(block) - 1)) // 2
            accepted = (int(similar.sum()) - len(block)) // 2
            self.counts.note("components", "rejected_pairs", pairs - accepted)
            _, labels = connected_components(csr_matrix(similar), directed=False)
            roots: dict[int, str] = {}
            for node, label in zip(block, labels):  # block is sorted: the first of a label is its root
                root = roots.setdefault(int(label), node)
                if root != node:
                    yield node, root


class _KeepClusterRoot(beam.DoFn):
    def __init__(self):
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[str, dict[str, list[Any]]]) -> Iterator[Document]:
        node, joined = item
        labels = joined["label"]
        duplicate = bool(labels) and labels[0] != node
        for doc in joined["doc"]:
            self.counts.seen("documents")
            if duplicate:
                self.counts.dropped("documents", REASON)
            else:
                self.counts.kept("documents")
                yield doc


class DedupNear(beam.PTransform):
    """Documents → one per near-duplicate cluster (the first crawled); the rest dropped as `near_duplicate`.

    Cluster sizes go to `dedup_near|clusters|info|size_<2|3-5|6-10|11-100|>100>`; candidate edges,
    unconverged nodes and (with verification) rejected pairs to `dedup_near|components|info|...`.
    """

    def __init__(self, settings: NearDedupSettings):
        """`settings`: the `dedup.near` section."""
        super().__init__()
        self.near = settings
        make_hasher(self.near)  # fail at graph construction on a bad config, not on a worker
        self.verify_threshold = settings.verify_threshold

    def expand(self, docs):
        if not self.near.enabled:
            return docs
        verify = self.verify_threshold is not None
        edges = (
            docs
            | "Band keys" >> beam.ParDo(_BandKeys(self.near, verify))
            | "Group bands" >> beam.GroupByKey()
            | "Bucket edges" >> beam.ParDo(_BucketEdges(self.verify_threshold, self.near.max_bucket_pairwise))
        )
        labels = edges | "Clusters" >> ConnectedComponents(self.near.max_rounds, STAGE)
        labels | "Cluster sizes" >> NoteClusterSizes(STAGE)
        keyed = docs | "Key by node" >> beam.Map(lambda doc: (crawl_order_key(doc), doc))
        return (
            {"doc": keyed, "label": labels}
            | "Join labels" >> beam.CoGroupByKey()
            | "Keep cluster roots" >> beam.ParDo(_KeepClusterRoot())
        )
