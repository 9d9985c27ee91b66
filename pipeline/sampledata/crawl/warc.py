"""Generated crawls written as a crawler writes them: a warcinfo record, then a request and a response record
per URL (gzip per record), with fixed record ids and dates so the same input gives byte-identical files.

Shared by the sample crawl (`generate.py`) and the alignment canaries a build carries (`pipeline.canaries`).
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

USER_AGENT = "m3w-sample-crawler/1.0 (+https://sample-web.test/bot)"


class Response(Protocol):
    """What one response record needs: a page (`PageRecord`) or a picture (`Capture`)."""

    url: str
    body: bytes
    content_type: str
    warc_date: str
    status: str
    extra_headers: list[tuple[str, str]]


@dataclass
class Capture:
    """One fetched URL of a generated crawl."""

    url: str
    body: bytes
    content_type: str
    warc_date: str
    status: str = "200 OK"
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


def write_crawl_warc(handle: BinaryIO, responses: Iterable[Response], *, filename: str, is_part_of: str,
                     software: str, date: str, ids: random.Random) -> None:
    """`responses` as request + response records after a warcinfo record; `ids` draws the record ids."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    def record_id() -> str:
        return f"<urn:uuid:{uuid.UUID(int=ids.getrandbits(128), version=4)}>"

    writer = WARCWriter(handle, gzip=True, warc_version="1.0")
    info = (f"software: {software}\r\nformat: WARC File Format 1.0\r\n".encode()
            + f"isPartOf: {is_part_of}\r\n".encode())
    writer.write_record(writer.create_warc_record(
        "", "warcinfo", payload=io.BytesIO(info), length=len(info), warc_content_type="application/warc-fields",
        warc_headers_dict={"WARC-Record-ID": record_id(), "WARC-Date": date, "WARC-Filename": filename}))
    for record in responses:
        parts = urlsplit(record.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request_headers = StatusAndHeaders(f"GET {target or '/'} HTTP/1.1", [
            ("Host", parts.netloc), ("User-Agent", USER_AGENT),
            ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"), ("Accept-Encoding", "identity")],
            is_http_request=True)
        response_id, request_id = record_id(), record_id()
        request = writer.create_warc_record(record.url, "request", http_headers=request_headers,
                                            warc_headers_dict={"WARC-Record-ID": request_id,
                                                               "WARC-Date": record.warc_date,
                                                               "WARC-Concurrent-To": response_id})
        headers = [("Content-Type", record.content_type), ("Content-Length", str(len(record.body))),
                   ("Server", "sample-web/1.0")] + list(record.extra_headers)
        response = writer.create_warc_record(
            record.url, "response", payload=io.BytesIO(record.body), length=len(record.body),
            http_headers=StatusAndHeaders(record.status, headers, protocol="HTTP/1.1"),
            warc_headers_dict={"WARC-Record-ID": response_id, "WARC-Date": record.warc_date,
                               "WARC-IP-Address": "192.0.2.10"})
        writer.write_record(request)
        writer.write_record(response)
