"""Paragraph dedup (OBELICS): paragraphs repeated across many documents of one domain are boilerplate.

A paragraph is a blank-line separated block of a text node. Within a domain (host without `www.`),
a paragraph found (after text normalisation) in more than `max_docs_per_paragraph` documents —
cookie notices, bylines, newsletter calls — is removed from all of them. One GroupByKey per
(domain, paragraph) key counts its documents in one pass over the grouped doc ids and, for a
frequent one, names them in a second; a CoGroupByKey by doc_id takes the verdicts to the documents.
No step holds more than the current key's values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from pydantic import PositiveInt

from pipeline.config import Section
from pipeline.core.accounting import StageCounters
from pipeline.dedup.keys import paragraph_key, split_paragraphs, url_domain
from schemas.document import Document, Node

STAGE = "dedup_paragraphs"
REASON = "boilerplate"


@dataclasses.dataclass(frozen=True)
class ParagraphDedupSettings(Section):
    """`dedup.paragraphs`: how many documents of one domain make a paragraph boilerplate."""

    enabled: bool
    max_docs_per_paragraph: PositiveInt
    drop_empty_documents: bool


def _occurrences(doc: Document) -> Iterator[tuple[tuple[str, str], str]]:
    """((domain, paragraph key), doc_id) once per distinct paragraph of the document."""
    domain = url_domain(doc.url)
    keys = {paragraph_key(p) for text in doc.texts for p in split_paragraphs(text)}
    for key in sorted(keys):
        yield (domain, key), doc.doc_id


class _FlagFrequent(beam.DoFn):
    """(domain, paragraph) → its doc ids; when too many, (doc_id, paragraph key) for each of them."""

    def __init__(self, max_docs: int):
        self.max_docs = max_docs
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[tuple[str, str], Iterable[str]]) -> Iterator[tuple[str, str]]:
        (_, key), doc_ids = item
        documents = sum(1 for _ in doc_ids)
        if documents <= self.max_docs:
            return
        self.counts.note("paragraphs", "boilerplate_distinct")
        for doc_id in doc_ids:
            yield doc_id, key


class _RemoveBoilerplate(beam.DoFn):
    def __init__(self, drop_empty: bool):
        self.drop_empty = drop_empty
        self.counts = StageCounters(STAGE)

    def process(self, item: tuple[str, dict[str, list[Any]]]) -> Iterator[Document]:
        _, joined = item
        boilerplate = set(joined["boilerplate"])
        for doc in joined["doc"]:
            yield from self._clean(doc, boilerplate)

    def _clean(self, doc: Document, boilerplate: set[str]) -> Iterator[Document]:
        self.counts.seen("documents")
        nodes: list[Node] = []
        for node in doc.nodes:
            if node.image is not None:
                nodes.append(node)
                continue
            paragraphs = split_paragraphs(node.text or "")
            kept = [p for p in paragraphs if paragraph_key(p) not in boilerplate]
            self.counts.seen("paragraphs", len(paragraphs))
            self.counts.kept("paragraphs", len(kept))
            self.counts.dropped("paragraphs", REASON, len(paragraphs) - len(kept))
            if len(kept) == len(paragraphs):
                nodes.append(node)
            elif kept:
                nodes.append(Node(text="\n\n".join(kept)))
        cleaned = dataclasses.replace(doc, nodes=nodes)  # Beam inputs are never mutated
        cleaned.normalize_nodes()
        if self.drop_empty and not cleaned.texts:
            self.counts.dropped("documents", "no_text")
            return
        self.counts.kept("documents")
        yield cleaned


class DedupParagraphs(beam.PTransform):
    """Documents → the same documents without their domain's boilerplate paragraphs (`boilerplate`).

    Documents left without any text are dropped as `no_text` when `drop_empty_documents` is set.
    """

    def __init__(self, settings: ParagraphDedupSettings):
        """`settings`: the `dedup.paragraphs` section."""
        super().__init__()
        self.enabled = settings.enabled
        self.max_docs = settings.max_docs_per_paragraph
        self.drop_empty = settings.drop_empty_documents

    def expand(self, docs):
        if not self.enabled:
            return docs
        boilerplate = (
            docs
            | "Paragraph keys" >> beam.FlatMap(_occurrences)
            | "Group paragraphs" >> beam.GroupByKey()
            | "Flag frequent" >> beam.ParDo(_FlagFrequent(self.max_docs))
        )
        keyed = docs | "Key by id" >> beam.Map(lambda doc: (doc.doc_id, doc))
        return (
            {"doc": keyed, "boilerplate": boilerplate}
            | "Join boilerplate" >> beam.CoGroupByKey()
            | "Remove boilerplate" >> beam.ParDo(_RemoveBoilerplate(self.drop_empty))
        )
