"""Image dedup: over-used image URLs before download; exact and perceptual duplicates after it.

`DropFrequentImageUrls` (before download, saving the bandwidth): an image URL (normalised as page
URLs are) used by more than `max_docs_per_image_url` documents is a logo, an ad or a tracker; it is
removed from every document (`frequent_url`).

`DedupImages` (after download; images carry their bytes in `Image.data`, or a reference to them in the
run's image store, `Image.stored`, read here only to compute the pHash: no bytes travel on):
1. per document, in reading order: sha256 and pHash of every image; an image whose bytes equal, or
   whose pHash is within `hamming_threshold` of, an earlier image of the same document is removed
   (`duplicate_in_document`); bytes that do not decode are removed (`undecodable`);
2. across the dataset, pHashes are clustered: band keys by the pigeonhole principle (64 bits in
   `hamming_threshold + 1` bands: any two hashes within the threshold share a band), pairs verified
   by Hamming distance, then `ConnectedComponents`. Identical bytes have identical pHashes, so a
   cluster holds the exact and the perceptual copies of one picture;
3. of documents whose sets of image clusters are identical, the first is kept (`identical_image_set`);
4. every cluster keeps its images in the `max_copies` first documents and is removed from the others:
   `exact_duplicate` when a kept copy has the same bytes, else `perceptual_duplicate`;
5. documents left without images are dropped (`no_images`).
"First" is the earliest crawl, then the lowest doc_id (`crawl_order_key`), as in document dedup.
Everything is keyed (by pHash, band, cluster, image set or document); only the final join moves documents.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any

import apache_beam as beam
from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline.config import Section
from pipeline.core.accounting import StageCounters
from pipeline.core.failures import BreakerSettings, FailureBreaker, preload
from pipeline.core.preflight import IMAGE_HASHING
from pipeline.dedup.common import NoteClusterSizes, crawl_order_key
from pipeline.dedup.components import ConnectedComponents
from pipeline.dedup.keys import digest, hamming, image_phash, pairwise_hamming, phash_band_keys, sha256_hex
from pipeline.dedup.urls import UrlDedupSettings, url_normalizer
from pipeline.images.store import ImageStore
from schemas.document import Document, Node

URL_STAGE = "dedup_image_urls"
STAGE = "dedup_images"
OCCURRENCES = "occurrences"
DOC_DROPS = "doc_drops"


@dataclasses.dataclass(frozen=True)
class ImageUrlDedupSettings(Section):
    """`dedup.image_urls`: how many documents make an image URL over-used, before download."""

    enabled: bool
    max_docs_per_image_url: PositiveInt
    drop_docs_without_images: bool


@dataclasses.dataclass(frozen=True)
class ImageDedupSettings(Section):
    """`dedup.images`: exact and perceptual image dedup after download."""

    enabled: bool
    hash_size: Annotated[int, Field(ge=2, le=8)]  # pHash side: at most 64 bits
    hamming_threshold: NonNegativeInt  # below hash_size²
    max_copies: PositiveInt
    identical_image_sets: bool
    max_bucket_pairwise: Annotated[int, Field(ge=2)]
    max_rounds: PositiveInt
    drop_docs_without_images: bool


# ------------------------------------------------------------------------------------ frequent image URLs


class _FlagFrequentUrls(beam.DoFn):
    """(image URL, doc ids) → (doc_id, URL) for every document of a URL used by too many documents."""

    def __init__(self, max_docs: int):
        self.max_docs = max_docs
        self.counts = StageCounters(URL_STAGE)

    def process(self, item: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
        url, doc_ids = item
        if sum(1 for _ in doc_ids) <= self.max_docs:  # first pass counts, the second names
            return
        self.counts.note("images", "frequent_urls_distinct")
        for doc_id in doc_ids:
            yield doc_id, url


class _RemoveFrequentUrls(beam.DoFn):
    def __init__(self, normalize: Callable[[str], str], drop_empty: bool):
        self.normalize = normalize
        self.drop_empty = drop_empty
        self.counts = StageCounters(URL_STAGE)

    def process(self, item: tuple[str, dict[str, list[Any]]]) -> Iterator[Document]:
        _, joined = item
        frequent = set(joined["frequent"])
        for doc in joined["doc"]:
            self.counts.seen("documents")
            images = len(doc.images)
            self.counts.seen("images", images)
            if frequent:
                nodes = [n for n in doc.nodes if n.image is None or self.normalize(n.image.url) not in frequent]
                doc = dataclasses.replace(doc, nodes=nodes)
                doc.normalize_nodes()
            left = len(doc.images)
            self.counts.kept("images", left)
            self.counts.dropped("images", "frequent_url", images - left)
            if self.drop_empty and images and not left:
                self.counts.dropped("documents", "no_images")
                continue
            self.counts.kept("documents")
            yield doc


class DropFrequentImageUrls(beam.PTransform):
    """Documents → the same documents without image URLs used by more than `max_docs_per_image_url` documents.

    Counts images (`frequent_url`) and documents left without images (`no_images`) under `dedup_image_urls`.
    """

    def __init__(self, settings: ImageUrlDedupSettings, url: UrlDedupSettings):
        """`settings`: the `dedup.image_urls` section; `url`: `dedup.url`, whose normalisation image URLs get."""
        super().__init__()
        self.enabled = settings.enabled
        self.max_docs = settings.max_docs_per_image_url
        self.drop_empty = settings.drop_docs_without_images
        self.normalize = url_normalizer(url)

    def expand(self, docs):
        if not self.enabled:
            return docs
        normalize = self.normalize

        def occurrences(doc: Document) -> Iterator[tuple[str, str]]:
            for url in sorted({normalize(image.url) for image in doc.images}):
                yield url, doc.doc_id

        frequent = (
            docs
            | "Image URLs" >> beam.FlatMap(occurrences)
            | "Group URLs" >> beam.GroupByKey()
            | "Flag frequent" >> beam.ParDo(_FlagFrequentUrls(self.max_docs))
        )
        keyed = docs | "Key by id" >> beam.Map(lambda doc: (doc.doc_id, doc))
        return (
            {"doc": keyed, "frequent": frequent}
            | "Join frequent" >> beam.CoGroupByKey()
            | "Remove frequent" >> beam.ParDo(_RemoveFrequentUrls(normalize, self.drop_empty))
        )


# ------------------------------------------------------------------------------------ image content dedup


@dataclasses.dataclass(frozen=True)
class _Occurrence:
    """One image of one document, after in-document dedup: where it stands and what its bytes are."""

    doc: str  # the document's crawl_order_key: sorts first crawl first
    node_index: int
    sha256: str


class _HashImages(beam.DoFn):
    """Document → (its key, (document, had_images)) with in-document duplicates removed; occurrences tagged."""

    def __init__(self, hash_size: int, threshold: int, store: ImageStore | None, circuit_breaker: BreakerSettings):
        self.hash_size = hash_size
        self.threshold = threshold
        self.store = store
        self.circuit_breaker = circuit_breaker
        self.counts = StageCounters(STAGE)
        self.breaker: FailureBreaker | None = None

    def setup(self) -> None:
        preload([IMAGE_HASHING])  # imagehash and its lazy scipy import, on every worker
        self.breaker = FailureBreaker.from_config(STAGE, self.circuit_breaker)

    def process(self, doc: Document) -> Iterator[Any]:
        key = crawl_order_key(doc)
        nodes: list[Node] = []
        seen: list[tuple[str, int]] = []
        occurrences: list[tuple[str, _Occurrence]] = []
        for node in doc.nodes:
            image = node.image
            if image is None:
                nodes.append(node)
                continue
            self.counts.seen("images")
            data = self.store.bytes_of(image) if self.store is not None else image.data
            if data is None:  # not downloaded: nothing to compare, kept as it is
                self.counts.note("images", "no_data")
                nodes.append(node)
                continue
            sha = image.stored or sha256_hex(data)
            try:
                phash = image_phash(data, self.hash_size)
            except ValueError as error:  # the decoder refused these bytes; a broken pHash itself propagates
                self.breaker.failed(error)
                self.counts.dropped("images", "undecodable")
                continue
            self.breaker.succeeded()
            if any(sha == other_sha or hamming(phash, other) <= self.threshold for other_sha, other in seen):
                self.counts.dropped("images", "duplicate_in_document")
                continue
            seen.append((sha, phash))
            phash_hex = f"{phash:016x}"
            meta = {**image.meta, "phash": phash_hex}
            meta.setdefault("sha256", sha)
            occurrences.append((phash_hex, _Occurrence(key, len(nodes), sha)))
            nodes.append(Node(image=dataclasses.replace(image, meta=meta)))
        yield key, (dataclasses.replace(doc, nodes=nodes), bool(doc.images))
        for occurrence in occurrences:
            yield beam.pvalue.TaggedOutput(OCCURRENCES, occurrence)


class _PhashBucketEdges(beam.DoFn):
    """A band bucket of distinct pHashes → star edges joining those within the Hamming threshold."""

    def __init__(self, threshold: int, max_pairwise: int):
        self.threshold = threshold
        self.max_pairwise = max_pairwise
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[Any, Iterable[str]]) -> Iterator[tuple[str, str]]:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components

        _, members = item
        hashes = sorted(set(members))
        if len(hashes) > self.max_pairwise:
            self.counts.note("components", "oversized_buckets")  # blocks compared alone: may split, never join
        for start in range(0, len(hashes), self.max_pairwise):
            block = hashes[start:start + self.max_pairwise]
            if len(block) < 2:
                continue
            close = pairwise_hamming([int(h, 16) for h in block]) <= self.threshold
            _, labels = connected_components(csr_matrix(close), directed=False)
            roots: dict[int, str] = {}
            for phash, label in zip(block, labels):
                root = roots.setdefault(int(label), phash)
                if root != phash:
                    yield phash, root


def _label_occurrences(item: tuple[str, dict[str, list[Any]]]) -> Iterator[tuple[str, tuple[str, _Occurrence]]]:
    """pHash joined with its cluster label (a pHash outside every edge is its own cluster)."""
    phash, joined = item
    label = joined["label"][0] if joined["label"] else phash
    for occurrence in joined["occurrence"]:
        yield occurrence.doc, (label, occurrence)


class _ImageSets(beam.DoFn):
    """Documents with the same set of image clusters: the first keeps its images, the others go."""

    def process(self, item: tuple[str, Iterable[tuple[str, list[tuple[str, _Occurrence]]]]]) -> Iterator[Any]:
        _, members = item
        first = min(doc for doc, _ in members)  # members were grouped by document: each is here once
        for doc, labelled in members:
            if doc == first:
                yield from labelled
            else:
                yield beam.pvalue.TaggedOutput(DOC_DROPS, (doc, "identical_image_set"))


class _CapCopies(beam.DoFn):
    """A cluster's occurrences → (document, (node index, reason)) for those outside its first documents."""

    def __init__(self, max_copies: int):
        self.max_copies = max_copies
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[str, Iterable[_Occurrence]]) -> Iterator[tuple[str, tuple[int, str]]]:
        _, occurrences = item
        first_docs: list[str] = []  # the max_copies first distinct documents, sorted
        for occurrence in occurrences:
            doc = occurrence.doc
            position = bisect.bisect_left(first_docs, doc)
            if position < self.max_copies and (position == len(first_docs) or first_docs[position] != doc):
                first_docs.insert(position, doc)
                del first_docs[self.max_copies:]
        kept_docs = set(first_docs)
        kept_bytes = {o.sha256 for o in occurrences if o.doc in kept_docs}
        for occurrence in occurrences:
            if occurrence.doc not in kept_docs:
                reason = "exact_duplicate" if occurrence.sha256 in kept_bytes else "perceptual_duplicate"
                yield occurrence.doc, (occurrence.node_index, reason)


class _ApplyImageDedup(beam.DoFn):
    def __init__(self, drop_empty: bool):
        self.drop_empty = drop_empty
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[str, dict[str, list[Any]]]) -> Iterator[Document]:
        _, joined = item
        doc_drop = joined["doc_drop"][0] if joined["doc_drop"] else None
        image_drops = dict(joined["image_drop"])
        for doc, had_images in joined["doc"]:
            self.counts.seen("documents")
            if doc_drop is not None:
                self.counts.dropped("images", doc_drop, len(doc.images))
                self.counts.dropped("documents", doc_drop)
                continue
            nodes = []
            for index, node in enumerate(doc.nodes):
                if node.image is not None:
                    if index in image_drops:
                        self.counts.dropped("images", image_drops[index])
                        continue
                    self.counts.kept("images")
                nodes.append(node)
            cleaned = dataclasses.replace(doc, nodes=nodes)
            cleaned.normalize_nodes()
            if self.drop_empty and had_images and not cleaned.images:
                self.counts.dropped("documents", "no_images")
                continue
            self.counts.kept("documents")
            yield cleaned


class DedupImages(beam.PTransform):
    """Documents with image bytes → in-document, exact and perceptual image duplicates removed.

    Images: `undecodable`, `duplicate_in_document`, `exact_duplicate`, `perceptual_duplicate`,
    `identical_image_set`; documents: `identical_image_set`, `no_images` (stage `dedup_images`).
    Image cluster sizes (occurrences after in-document dedup, before any cross-document removal) go to
    `dedup_images|clusters|info|image_size_<bucket>`.
    """

    def __init__(self, settings: ImageDedupSettings, circuit_breaker: BreakerSettings,
                 image_store: ImageStore | None = None):
        """`settings`: the `dedup.images` section; `circuit_breaker`: `runner.circuit_breaker` (undecodable
        images); `image_store`: where images that travel by reference (`Image.stored`) are read."""
        super().__init__()
        self.image_store = image_store
        self.circuit_breaker = circuit_breaker
        self.enabled = settings.enabled
        self.hash_size = settings.hash_size
        self.bits = self.hash_size * self.hash_size
        self.threshold = settings.hamming_threshold
        if self.threshold >= self.bits:
            raise ValueError(f"dedup.images.hamming_threshold must be in 0..{self.bits - 1}, got {self.threshold}")
        self.max_copies = settings.max_copies
        self.identical_sets = settings.identical_image_sets
        self.max_pairwise = settings.max_bucket_pairwise
        self.max_rounds = settings.max_rounds
        self.drop_empty = settings.drop_docs_without_images

    def expand(self, docs):
        if not self.enabled:
            return docs
        bits, bands = self.bits, self.threshold + 1
        preload([IMAGE_HASHING])
        hashed = docs | "Hash images" >> beam.ParDo(
            _HashImages(self.hash_size, self.threshold, self.image_store, self.circuit_breaker)).with_outputs(
            OCCURRENCES, main="docs")
        occurrences = hashed[OCCURRENCES]

        def band_keys(phash: str) -> Iterator[tuple[tuple[int, int], str]]:
            for key in phash_band_keys(int(phash, 16), bits, bands):
                yield key, phash

        labels = (
            occurrences
            | "pHashes" >> beam.Map(lambda pair: pair[0])
            | "Distinct pHashes" >> beam.Distinct()
            | "pHash bands" >> beam.FlatMap(band_keys)
            | "Group bands" >> beam.GroupByKey()
            | "Close pairs" >> beam.ParDo(_PhashBucketEdges(self.threshold, self.max_pairwise))
            | "Image clusters" >> ConnectedComponents(self.max_rounds, STAGE)
        )
        labelled_occurrences = (
            {"occurrence": occurrences, "label": labels}
            | "Join clusters" >> beam.CoGroupByKey()
            | "Label occurrences" >> beam.FlatMap(_label_occurrences)
        )
        (labelled_occurrences
         | "Occurrence and label" >> beam.Map(lambda item: (item[1][1], item[1][0]))
         | "Cluster sizes" >> NoteClusterSizes(STAGE, prefix="image_"))
        labelled = labelled_occurrences | "Group by document" >> beam.GroupByKey()
        if self.identical_sets:
            sets = (
                labelled
                | "Image set key" >> beam.Map(
                    lambda item: (digest(*sorted({label for label, _ in item[1]})), (item[0], list(item[1]))))
                | "Group image sets" >> beam.GroupByKey()
                | "First per image set" >> beam.ParDo(_ImageSets()).with_outputs(DOC_DROPS, main="kept")
            )
            kept, doc_drops = sets.kept, sets[DOC_DROPS]
        else:
            kept = labelled | "Occurrences" >> beam.FlatMap(lambda item: item[1])
            doc_drops = docs.pipeline | "No image-set drops" >> beam.Create([])
        image_drops = (
            kept
            | "Group clusters" >> beam.GroupByKey()
            | "Cap copies" >> beam.ParDo(_CapCopies(self.max_copies))
        )
        return (
            {"doc": hashed.docs, "doc_drop": doc_drops, "image_drop": image_drops}
            | "Join verdicts" >> beam.CoGroupByKey()
            | "Apply" >> beam.ParDo(_ApplyImageDedup(self.drop_empty))
        )
