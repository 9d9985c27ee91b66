"""Exact document dedup, and `DedupDocuments`: URL → exact → near-duplicate → paragraph dedup in one transform."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from pipeline.dedup.common import KeepOnePerKey, doc_order
from pipeline.dedup.keys import exact_document_key
from pipeline.dedup.minhash import DedupNear
from pipeline.dedup.paragraphs import DedupParagraphs
from pipeline.dedup.urls import DedupUrls, url_normalizer
from schemas.document import Document

STAGE = "dedup_exact"
REASON = "exact_duplicate"


class DedupExact(beam.PTransform):
    """Documents with the same normalised text and the same image URLs in order → the first crawled kept.

    "First" is `doc_order`: the earliest WARC date (a mirror is a later copy), then the lowest doc_id.

    Text is compared after Unicode NFKC, case folding and whitespace collapsing; image URLs after
    the URL normalisation of `dedup.url` (so tracking parameters do not hide a copy).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.enabled = bool(config["dedup"]["exact"]["enabled"])
        self.normalize = url_normalizer(config)

    def expand(self, docs):
        if not self.enabled:
            return docs
        normalize = self.normalize

        def key(doc: Document) -> str:
            return exact_document_key(doc.text, [normalize(image.url) for image in doc.images])

        return docs | "Keep first per text" >> KeepOnePerKey(STAGE, REASON, key, doc_order)


class DedupDocuments(beam.PTransform):
    """URL → exact → near-duplicate → paragraph dedup; each step passes documents through when disabled."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config

    def expand(self, docs):
        return (
            docs
            | "Dedup URLs" >> DedupUrls(self.config)
            | "Dedup exact" >> DedupExact(self.config)
            | "Dedup near" >> DedupNear(self.config)
            | "Dedup paragraphs" >> DedupParagraphs(self.config)
        )
