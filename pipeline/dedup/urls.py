"""URL dedup: one document per normalised URL, the most recent crawl kept."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from pipeline.dedup.common import KeepOnePerKey, newest_first_order
from pipeline.dedup.keys import normalize_url
from schemas.document import Document

STAGE = "dedup_url"
REASON = "duplicate_url"


def url_normalizer(config: dict[str, Any]):
    """The configured `normalize_url` as a one-argument function (shared by URL and image-URL dedup)."""
    section = config["dedup"]["url"]
    tracking = tuple(section["tracking_params"])
    ignore_scheme, strip_www = bool(section["ignore_scheme"]), bool(section["strip_www"])

    def normalize(url: str) -> str:
        return normalize_url(url, tracking, ignore_scheme=ignore_scheme, strip_www=strip_www)

    return normalize


class DedupUrls(beam.PTransform):
    """Documents → one per normalised URL: the newest WARC date, ties by lowest doc_id (`duplicate_url`)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.enabled = bool(config["dedup"]["url"]["enabled"])
        self.normalize = url_normalizer(config)

    def expand(self, docs):
        if not self.enabled:
            return docs
        normalize = self.normalize

        def key(doc: Document) -> str:
            return normalize(doc.url)

        return docs | "Keep newest per URL" >> KeepOnePerKey(STAGE, REASON, key, newest_first_order)
