"""The `decontaminate` stage on Beam: documents in, documents without the user's benchmark pictures and passages out.

The benchmarks are read and hashed once per run, in parallel (a Parquet row group, a tar or a picture file per
work item), gathered into one index per kind and handed to every worker as a Beam side input; the training
documents are never shuffled. Per document, in order:

1. text: paragraphs that share an n-gram with a benchmark passage are removed (paragraphs `contaminated`);
   when those held more than `max_contaminated_share` of the document's words, the document is mostly a
   benchmark's text and is dropped whole (documents `contaminated`; its other paragraphs and pictures
   `in_contaminated_document`). Only the paragraph goes otherwise: the n-gram pins the quotation down, and a
   page that quotes one question keeps its own text and pictures;
2. pictures with bytes: one matching a benchmark picture is removed (images `contaminated`); bytes that do
   not decode are removed (`undecodable`, through the failure breaker); a picture that was not downloaded is
   kept (`images|info|no_data`); a document left without pictures is dropped (documents `no_images`).

Every match goes to the audit trail (`pipeline/decontaminate/audit.py`). Canary documents (`metadata.canary`)
are passed on untouched (`documents|info|canary_exempt`): they are the build's own probes. With no benchmark
configured the stage only counts its documents through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Annotated, Any

import apache_beam as beam
import numpy as np
from pydantic import Field

from pipeline.canaries.shapes import is_canary
from pipeline.config import Section, Share
from pipeline.core.accounting import StageCounters
from pipeline.core.failures import BreakerSettings, FailureBreaker, SystematicFailure
from pipeline.decontaminate.audit import write_audit
from pipeline.decontaminate.embedding import EmbeddingIndex, EmbeddingSettings, PictureEmbedder, check_embedding
from pipeline.decontaminate.pictures import PictureIndex, benchmark_entries, grey_grid
from pipeline.decontaminate.sources import (
    BenchmarkItem,
    Part,
    picture_parts,
    read_passages,
    read_pictures,
    text_parts,
)
from pipeline.decontaminate.texts import PassageIndex, contaminated_paragraphs, ngram_hashes
from pipeline.dedup.keys import shingle_words, split_paragraphs
from pipeline.images.store import ImageStore
from schemas.document import Document, Node

STAGE = "decontaminate"
REASON = "contaminated"
WITH_DOCUMENT = "in_contaminated_document"
MATCHES = "matches"


@dataclasses.dataclass(frozen=True)
class PictureSettings(Section):
    """`decontaminate.pictures`: how far a copy may be cropped, and the Hamming thresholds of a match."""

    max_crop: Annotated[float, Field(ge=0.0, le=0.2)]
    phash_distance: Annotated[int, Field(ge=0, le=11)]  # the multi-index's probes grow as C(21, d // 3)
    dhash_distance: Annotated[int, Field(ge=0, le=64)]
    image_columns: list[str]


@dataclasses.dataclass(frozen=True)
class TextSettings(Section):
    """`decontaminate.text`: the shared n-gram, where passages are in the files, when a document goes whole."""

    ngram: Annotated[int, Field(ge=3, le=64)]
    fields: list[str]
    max_contaminated_share: Share


@dataclasses.dataclass(frozen=True)
class DecontaminateSettings(Section):
    """`decontaminate`: the user's benchmark files and how their pictures and passages are matched."""

    images: list[str]
    texts: list[str]
    pictures: PictureSettings
    text: TextSettings
    embedding: EmbeddingSettings

    @property
    def configured(self) -> bool:
        return bool(self.images or self.texts)


def check_benchmarks(settings: DecontaminateSettings) -> tuple[list[Part], list[Part]]:
    """(picture parts, text parts) the settings name, listed before anything runs: a pattern that matches no
    file (FileNotFoundError) or an embedding the workers could not load (`check_embedding`: no open_clip, no
    checkpoint, weights that do not fit their architecture) is refused in one line."""
    parts = picture_parts(settings.images), text_parts(settings.texts)
    if settings.embedding.enabled and settings.images:
        check_embedding(settings.embedding)
    return parts


# ------------------------------------------------------------------------------------------------ benchmarks


@dataclasses.dataclass
class PictureBenchmark:
    """The side input of pictures: the hash index, the optional embedding index and every picture's name."""

    index: PictureIndex
    embeddings: EmbeddingIndex | None
    names: list[BenchmarkItem]


@dataclasses.dataclass
class PassageBenchmark:
    index: PassageIndex
    names: list[BenchmarkItem]


def _unreadable(part: Part, error: Exception) -> SystematicFailure:
    """A benchmark file that cannot be read stops the run: decontaminating against part of it would pass."""
    return SystematicFailure(f"{STAGE}: cannot read the benchmark file {part.path}: {type(error).__name__}: {error}")


class _HashPictures(beam.DoFn):
    """(number, part) → (number, picture, name, hashed views, embedding) for every picture that decodes."""

    def __init__(self, settings: DecontaminateSettings):
        self.settings = settings
        self.counts = StageCounters(STAGE)
        self.embedder: PictureEmbedder | None = None

    def setup(self) -> None:
        if self.settings.embedding.enabled:
            self.embedder = PictureEmbedder(self.settings.embedding)

    def process(self, numbered: tuple[int, Part]) -> Iterator[tuple]:
        number, part = numbered
        pictures = self.settings.pictures
        pending: list[tuple] = []  # hashed, waiting for a full batch of embeddings
        try:
            for position, (name, data) in enumerate(read_pictures(part, pictures.image_columns)):
                try:
                    entries = benchmark_entries(data, 0, pictures.max_crop)
                except ValueError:
                    self.counts.note("benchmark_pictures", "undecodable")
                    continue
                pending.append(((number, position), name, entries, data))
                if self.embedder is None or len(pending) == self.embedder.batch_size:
                    yield from self._indexed(pending)
                    pending = []
        except (OSError, ValueError) as error:
            raise _unreadable(part, error) from error
        yield from self._indexed(pending)

    def _indexed(self, pending: list[tuple]) -> Iterator[tuple]:
        vectors = self.embedder.embed([data for *_, data in pending]) if self.embedder and pending else None
        for row, (key, name, entries, _) in enumerate(pending):
            self.counts.note("benchmark_pictures", "indexed")
            yield key, name, entries, None if vectors is None else vectors[row]


def _picture_benchmark(hashed: list[tuple], settings: PictureSettings, embedding: EmbeddingSettings
                       ) -> PictureBenchmark:
    hashed = sorted(hashed, key=lambda item: item[0])
    entries = [dataclasses.replace(entry, item=item) for item, (_, _, views, _) in enumerate(hashed)
               for entry in views]
    index = PictureIndex(entries, settings.phash_distance, settings.dhash_distance, settings.max_crop)
    embeddings = None
    if embedding.enabled and hashed:
        embeddings = EmbeddingIndex(np.stack([vector for *_, vector in hashed]), np.arange(len(hashed)),
                                    embedding.min_similarity)
    return PictureBenchmark(index, embeddings, [name for _, name, _, _ in hashed])


class _HashPassages(beam.DoFn):
    """(number, part) → (number, passage, name, n-gram hashes) for every passage long enough to match."""

    def __init__(self, settings: TextSettings):
        self.settings = settings
        self.counts = StageCounters(STAGE)

    def process(self, numbered: tuple[int, Part]) -> Iterator[tuple]:
        number, part = numbered
        try:
            passages = list(read_passages(part, self.settings.fields))
        except (OSError, ValueError) as error:
            raise _unreadable(part, error) from error
        for position, (name, text) in enumerate(passages):
            hashes = ngram_hashes(shingle_words(text), self.settings.ngram)
            if not len(hashes):
                self.counts.note("benchmark_passages", "shorter_than_ngram")
                continue
            self.counts.note("benchmark_passages", "indexed")
            yield (number, position), name, hashes


def _passage_benchmark(hashed: list[tuple]) -> PassageBenchmark:
    hashed = sorted(hashed, key=lambda item: item[0])
    index = PassageIndex([hashes for *_, hashes in hashed], range(len(hashed)))
    return PassageBenchmark(index, [name for _, name, _ in hashed])


# ------------------------------------------------------------------------------------------------ documents


def _where(name: BenchmarkItem) -> dict[str, str]:
    return {"benchmark": name.benchmark, "file": name.file, "item": name.item}


class _Decontaminate(beam.DoFn):
    """Document → the document without contaminated paragraphs and pictures (or nothing); matches tagged."""

    def __init__(self, settings: DecontaminateSettings, circuit_breaker: BreakerSettings,
                 store: ImageStore | None):
        self.settings = settings
        self.circuit_breaker = circuit_breaker
        self.store = store
        self.counts = StageCounters(STAGE)
        self.breaker: FailureBreaker | None = None
        self.embedder: PictureEmbedder | None = None

    def setup(self) -> None:
        self.breaker = FailureBreaker.from_config(STAGE, self.circuit_breaker)
        if self.settings.embedding.enabled and self.settings.images:
            self.embedder = PictureEmbedder(self.settings.embedding)

    def process(self, doc: Document, pictures: PictureBenchmark | None = None,
                passages: PassageBenchmark | None = None) -> Iterator[Any]:
        self.counts.seen("documents")
        if is_canary(doc):
            self.counts.note("documents", "canary_exempt")
            self.counts.kept("documents")
            yield doc
            return
        matches: list[dict[str, Any]] = []
        doc, dropped = self._text(doc, passages, matches)
        if not dropped:
            doc, dropped = self._pictures(doc, pictures, matches)
        for match in matches:
            yield beam.pvalue.TaggedOutput(MATCHES, match)
        if dropped:
            self.counts.dropped("documents", dropped)
            return
        self.counts.kept("documents")
        yield doc

    def _record(self, doc: Document, match: str, name: BenchmarkItem, action: str, **evidence: Any) -> dict:
        return {"match": match, "doc_id": doc.doc_id, "url": doc.url, **_where(name), "action": action, **evidence}

    def _text(self, doc: Document, passages: PassageBenchmark | None, matches: list[dict]) -> tuple[Document, str]:
        """The document without its contaminated paragraphs, and the reason it is dropped whole ("" if not)."""
        if passages is None or not len(passages.index):
            return doc, ""
        ngram = self.settings.text.ngram
        blocks = [(node_index, paragraph) for node_index, node in enumerate(doc.nodes) if node.image is None
                  for paragraph in split_paragraphs(node.text or "")]
        self.counts.seen("paragraphs", len(blocks))
        found = contaminated_paragraphs([paragraph for _, paragraph in blocks], passages.index, ngram)
        if not found:
            self.counts.kept("paragraphs", len(blocks))
            return doc, ""
        words = [len(shingle_words(paragraph)) for _, paragraph in blocks]
        share = sum(words[m.paragraph] for m in found) / max(1, sum(words))
        whole = share > self.settings.text.max_contaminated_share
        action = "document dropped" if whole else "paragraph removed"
        for match in found:
            matches.append(self._record(doc, "paragraph", passages.names[match.item], action,
                                        paragraph=match.paragraph, text=blocks[match.paragraph][1][:200],
                                        ngram=match.ngram))
        self.counts.dropped("paragraphs", REASON, len(found))
        if whole:
            self.counts.dropped("paragraphs", WITH_DOCUMENT, len(blocks) - len(found))
            self.counts.seen("images", len(doc.images))
            self.counts.dropped("images", WITH_DOCUMENT, len(doc.images))
            return doc, REASON
        self.counts.kept("paragraphs", len(blocks) - len(found))
        removed = {m.paragraph for m in found}
        kept_blocks: dict[int, list[str]] = {}
        for number, (node_index, paragraph) in enumerate(blocks):
            if number not in removed:
                kept_blocks.setdefault(node_index, []).append(paragraph)
        nodes = [node if node.image is not None else Node(text="\n\n".join(kept_blocks.get(index, [])))
                 for index, node in enumerate(doc.nodes)]
        cleaned = dataclasses.replace(doc, nodes=nodes)  # Beam inputs are never mutated
        cleaned.normalize_nodes()
        return cleaned, ""

    def _pictures(self, doc: Document, pictures: PictureBenchmark | None, matches: list[dict]
                  ) -> tuple[Document, str]:
        """The document without its contaminated pictures, and "no_images" when that leaves it without any."""
        images = doc.images
        self.counts.seen("images", len(images))
        if pictures is None or not images:
            self.counts.kept("images", len(images))
            return doc, ""
        nodes: list[Node] = []
        for node in doc.nodes:
            image = node.image
            if image is None:
                nodes.append(node)
                continue
            data = self.store.bytes_of(image) if self.store is not None else image.data
            if data is None:  # not downloaded: nothing to compare
                self.counts.note("images", "no_data")
                self.counts.kept("images")
                nodes.append(node)
                continue
            try:
                grid, _ = grey_grid(data, trim_border=image.meta.get("resize_mode") == "border")
                found = self._match(data, grid, pictures)
            except ValueError as error:  # the decoder refused these bytes
                self.breaker.failed(error, item=image.url)
                self.counts.dropped("images", "undecodable")
                continue
            self.breaker.succeeded()
            if found is None:
                self.counts.kept("images")
                nodes.append(node)
                continue
            name, evidence = found
            matches.append(self._record(doc, "picture", name, "picture removed", picture=image.url, **evidence))
            self.counts.dropped("images", REASON)
        cleaned = dataclasses.replace(doc, nodes=nodes)
        cleaned.normalize_nodes()
        return cleaned, "no_images" if not cleaned.images else ""

    def _match(self, data: bytes, grid: np.ndarray, pictures: PictureBenchmark
               ) -> tuple[BenchmarkItem, dict[str, Any]] | None:
        hashed = pictures.index.match(grid)
        if hashed is not None:
            return pictures.names[hashed.item], {
                "view": hashed.view, "window": hashed.hypothesis,
                "phash_distance": hashed.phash_distance, "dhash_distance": hashed.dhash_distance}
        if self.embedder is not None and pictures.embeddings is not None:
            embedded = pictures.embeddings.match(self.embedder.embed([data])[0])
            if embedded is not None:
                return pictures.names[embedded[0]], {"view": "embedding", "similarity": embedded[1]}
        return None


class _CountThrough(beam.DoFn):
    """No benchmark configured: every document passes, counted."""

    def __init__(self):
        self.counts = StageCounters(STAGE)

    def process(self, doc: Document) -> Iterator[Document]:
        self.counts.seen("documents")
        self.counts.kept("documents")
        yield doc


class DecontaminateDocuments(beam.PTransform):
    """Documents → documents without the benchmark pictures and passages of `settings` (stage `decontaminate`).

    Images: `contaminated`, `undecodable`, `in_contaminated_document`; paragraphs: `contaminated`,
    `in_contaminated_document`; documents: `contaminated`, `no_images`. Benchmark sizes go to
    `benchmark_pictures|info|indexed, undecodable` and `benchmark_passages|info|indexed, shorter_than_ngram`.
    """

    def __init__(self, settings: DecontaminateSettings, circuit_breaker: BreakerSettings,
                 image_store: ImageStore | None = None, audit_path: str | None = None):
        """`settings`: the `decontaminate` section; `circuit_breaker`: `runner.circuit_breaker` (undecodable
        pictures); `image_store`: where pictures that travel by reference are read; `audit_path`: where the
        matches are written (`contamination.jsonl`), none when None."""
        super().__init__()
        self.settings = settings
        self.circuit_breaker = circuit_breaker
        self.image_store = image_store
        self.audit_path = audit_path

    def expand(self, docs):
        if not self.settings.configured:
            return docs | "Count through" >> beam.ParDo(_CountThrough())
        picture_parts_, text_parts_ = check_benchmarks(self.settings)
        side: dict[str, Any] = {}
        if picture_parts_:
            hashed = (docs.pipeline
                      | "Benchmark picture files" >> beam.Create(list(enumerate(picture_parts_)))
                      | "Spread picture files" >> beam.Reshuffle()
                      | "Hash benchmark pictures" >> beam.ParDo(_HashPictures(self.settings)))
            settings, embedding = self.settings.pictures, self.settings.embedding
            side["pictures"] = beam.pvalue.AsSingleton(
                hashed
                | "Gather pictures" >> beam.combiners.ToList()
                | "Picture index" >> beam.Map(_picture_benchmark, settings, embedding))
        if text_parts_:
            hashed = (docs.pipeline
                      | "Benchmark text files" >> beam.Create(list(enumerate(text_parts_)))
                      | "Spread text files" >> beam.Reshuffle()
                      | "Hash benchmark passages" >> beam.ParDo(_HashPassages(self.settings.text)))
            side["passages"] = beam.pvalue.AsSingleton(
                hashed | "Gather passages" >> beam.combiners.ToList() | "Passage index" >> beam.Map(_passage_benchmark))
        result = docs | "Decontaminate" >> beam.ParDo(
            _Decontaminate(self.settings, self.circuit_breaker, self.image_store), **side).with_outputs(
            MATCHES, main="docs")
        if self.audit_path:
            path = self.audit_path
            (result[MATCHES]
             | "Gather matches" >> beam.combiners.ToList()
             | "Write contamination.jsonl" >> beam.Map(lambda records: write_audit(path, records)))
        return result.docs
