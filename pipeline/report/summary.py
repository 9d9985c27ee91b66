"""Distributions for the run report (languages, domains, images per document), computed with Beam combiners.

A combiner merges small counters on every worker before anything is gathered, so this scales with
the number of distinct values, not the number of documents.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import apache_beam as beam

from pipeline.core.files import write_atomically
from schemas.document import Document

TOP_DOMAINS = 25


def domain_of(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
    return host[4:] if host.startswith("www.") else host


def _doc_counts(doc: Document) -> dict[str, Counter]:
    images = doc.images
    return {
        "languages": Counter([str(doc.metadata.get("language", "unknown"))]),
        "domains": Counter([domain_of(doc.url)]),
        "images_per_document": Counter([str(min(len(images), 30))]),
        "image_formats": Counter(str(i.meta.get("format", "n/a")) for i in images),
        "totals": Counter(documents=1, images=len(images), text_chars=sum(len(t) for t in doc.texts)),
    }


class _MergeCounters(beam.CombineFn):
    def create_accumulator(self) -> dict[str, Counter]:
        return {}

    def add_input(self, acc: dict[str, Counter], doc: Document) -> dict[str, Counter]:
        for key, counter in _doc_counts(doc).items():
            acc.setdefault(key, Counter()).update(counter)
        return acc

    def merge_accumulators(self, accs) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for acc in accs:
            for key, counter in acc.items():
                out.setdefault(key, Counter()).update(counter)
        return out

    def extract_output(self, acc: dict[str, Counter]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, counter in sorted(acc.items()):
            items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
            if key == "domains":
                items = items[:TOP_DOMAINS]
            out[key] = dict(items)
        return out


class WriteSummary(beam.PTransform):
    """Documents → `{path}` JSON with language, domain and image distributions."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def expand(self, docs):
        path = self.path

        def write(summary: dict[str, Any]) -> None:
            write_atomically(path, json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))

        return docs | "Summarise" >> beam.CombineGlobally(_MergeCounters()) | "Write summary" >> beam.Map(write)
