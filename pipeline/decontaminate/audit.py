"""The audit trail: `contamination.jsonl`, one line per match, and its summary per benchmark for the reports.

A line names the training side (document id and URL; the picture's URL, or the paragraph's number and its
first words), the benchmark side (benchmark, file, item) and the evidence: for a picture the view of the
benchmark picture, the crop hypothesis of the window that matched and both Hamming distances (or the cosine
similarity of an embedding match); for a paragraph the shared n-gram. `action` says what happened to it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.core.files import write_atomically

AUDIT_NAME = "contamination.jsonl"


def audit_lines(records: Iterable[dict[str, Any]]) -> bytes:
    """Records as sorted JSON lines (the same matches give the same bytes, whatever order workers found them)."""
    lines = sorted(json.dumps(record, ensure_ascii=False, sort_keys=True) for record in records)
    return "".join(line + "\n" for line in lines).encode("utf-8")


def write_audit(path: str, records: Iterable[dict[str, Any]]) -> None:
    write_atomically(path, audit_lines(records))


def read_audit(path: str) -> list[dict[str, Any]]:
    with FileSystems.open(path) as handle:
        return [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line.strip()]


def contamination_summary(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per benchmark: pictures and paragraphs removed, documents dropped whole, distinct benchmark items found."""
    counts: dict[str, Counter] = {}
    dropped: dict[str, set[str]] = {}
    items: dict[str, set[tuple[str, str]]] = {}
    for record in records:
        benchmark = record["benchmark"]
        counts.setdefault(benchmark, Counter())["pictures" if record["match"].startswith("picture") else
                                                "paragraphs"] += 1
        dropped.setdefault(benchmark, set()).update([record["doc_id"]] if record["action"] == "document dropped"
                                                    else [])
        items.setdefault(benchmark, set()).add((record["file"], record["item"]))
    return {benchmark: {"pictures": counts[benchmark]["pictures"], "paragraphs": counts[benchmark]["paragraphs"],
                        "documents_dropped": len(dropped[benchmark]), "items": len(items[benchmark])}
            for benchmark in sorted(counts)}
