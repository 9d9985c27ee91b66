"""Exact document dedup, and `DedupDocuments`: URL → exact → near-duplicate → paragraph dedup in one transform."""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from pipeline.config import Section
from pipeline.dedup.common import KeepOnePerKey, doc_order
from pipeline.dedup.images import ImageDedupSettings, ImageUrlDedupSettings
from pipeline.dedup.keys import exact_document_key
from pipeline.dedup.minhash import DedupNear, NearDedupSettings
from pipeline.dedup.paragraphs import DedupParagraphs, ParagraphDedupSettings
from pipeline.dedup.urls import DedupUrls, UrlDedupSettings, url_normalizer
from schemas.document import Document

STAGE = "dedup_exact"
REASON = "exact_duplicate"


@dataclass(frozen=True)
class ExactDedupSettings(Section):
    """`dedup.exact`: whether exact document dedup runs."""

    enabled: bool


@dataclass(frozen=True)
class DedupSettings(Section):
    """The whole `dedup` section, one typed subsection per step (documented in pipeline/defaults.yaml)."""

    url: UrlDedupSettings
    exact: ExactDedupSettings
    near: NearDedupSettings
    paragraphs: ParagraphDedupSettings
    image_urls: ImageUrlDedupSettings
    images: ImageDedupSettings


class DedupExact(beam.PTransform):
    """Documents with the same normalised text and the same image URLs in order → the first crawled kept.

    "First" is `doc_order`: the earliest WARC date (a mirror is a later copy), then the lowest doc_id.

    Text is compared after Unicode NFKC, case folding and whitespace collapsing; image URLs after
    the URL normalisation of `dedup.url` (so tracking parameters do not hide a copy).
    """

    def __init__(self, settings: ExactDedupSettings, url: UrlDedupSettings):
        """`settings`: the `dedup.exact` section; `url`: `dedup.url`, whose normalisation image URLs get."""
        super().__init__()
        self.enabled = settings.enabled
        self.normalize = url_normalizer(url)

    def expand(self, docs):
        if not self.enabled:
            return docs
        normalize = self.normalize

        def key(doc: Document) -> str:
            return exact_document_key(doc.text, [normalize(image.url) for image in doc.images])

        return docs | "Keep first per text" >> KeepOnePerKey(STAGE, REASON, key, doc_order)


class DedupDocuments(beam.PTransform):
    """URL → exact → near-duplicate → paragraph dedup; each step passes documents through when disabled."""

    def __init__(self, settings: DedupSettings):
        """`settings`: the `dedup` section (its url, exact, near and paragraphs subsections are used)."""
        super().__init__()
        self.settings = settings

    def expand(self, docs):
        settings = self.settings
        return (
            docs
            | "Dedup URLs" >> DedupUrls(settings.url)
            | "Dedup exact" >> DedupExact(settings.exact, settings.url)
            | "Dedup near" >> DedupNear(settings.near)
            | "Dedup paragraphs" >> DedupParagraphs(settings.paragraphs)
        )
