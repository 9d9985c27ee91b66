"""Builds a WARC from the real fixture pages (in a temp dir; third-party pages never enter the repo)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def fixture_pages(limit: int | None = None) -> list[tuple[str, bytes]]:
    """(url, html bytes) of the article-benchmark and trafilatura-cache pages; the first `limit` (`--tiny` runs)."""
    pages = []
    truth = json.loads((FIXTURES / "article-benchmark" / "ground-truth.json").read_text())
    for path in sorted((FIXTURES / "article-benchmark" / "html").glob("*.html.gz")):
        pages.append((truth[path.name[: -len(".html.gz")]]["url"], gzip.decompress(path.read_bytes())))
    for path in sorted((FIXTURES / "trafilatura-cache").glob("*.html")):
        pages.append((f"https://{path.stem}/", path.read_bytes()))
    return pages[:limit]


def write_fixture_warc(path: Path, repeat: int = 1, limit: int | None = None) -> int:
    """Write the fixture pages (the first `limit`) `repeat` times (distinct URLs) as WARC responses; returns the
    page count."""
    count = 0
    pages = fixture_pages(limit)
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for round_ in range(repeat):
            for url, body in pages:
                headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
                record = writer.create_warc_record(f"{url}#r{round_}" if round_ else url, "response",
                                                   payload=io.BytesIO(body), http_headers=headers)
                writer.write_record(record)
                count += 1
    return count
