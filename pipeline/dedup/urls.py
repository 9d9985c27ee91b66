"""URL dedup: one document per normalised URL, the most recent crawl kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam

from pipeline.config import Section
from pipeline.dedup.common import KeepOnePerKey, newest_first_order
from pipeline.dedup.keys import normalize_url
from schemas.document import Document

STAGE = "dedup_url"
REASON = "duplicate_url"


@dataclass(frozen=True)
class UrlDedupSettings(Section):
    """`dedup.url`: whether URL dedup runs, and how URLs are normalised (for image URLs too)."""

    enabled: bool
    ignore_scheme: bool
    strip_www: bool
    tracking_params: list[str]


def url_normalizer(settings: UrlDedupSettings) -> Callable[[str], str]:
    """The configured `normalize_url` as a one-argument function (shared by URL and image-URL dedup)."""
    tracking = tuple(settings.tracking_params)
    ignore_scheme, strip_www = settings.ignore_scheme, settings.strip_www

    def normalize(url: str) -> str:
        return normalize_url(url, tracking, ignore_scheme=ignore_scheme, strip_www=strip_www)

    return normalize


class DedupUrls(beam.PTransform):
    """Documents → one per normalised URL: the newest WARC date, ties by lowest doc_id (`duplicate_url`)."""

    def __init__(self, settings: UrlDedupSettings):
        """`settings`: the `dedup.url` section."""
        super().__init__()
        self.enabled = settings.enabled
        self.normalize = url_normalizer(settings)

    def expand(self, docs):
        if not self.enabled:
            return docs
        normalize = self.normalize

        def key(doc: Document) -> str:
            return normalize(doc.url)

        return docs | "Keep newest per URL" >> KeepOnePerKey(STAGE, REASON, key, newest_first_order)
