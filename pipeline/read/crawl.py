"""Reading crawled HTML: WARC/ARC files (gzip or not) and plain `.html(.gz)` files, from any Beam filesystem.

Each input file is sniffed (not trusted by its name), read record by record (WARC with FastWARC, ARC with
warcio), and every record is counted once: an image record under the unit `images` (kept into the crawl's
image archive, `pipeline/read/images.py`), every other record under `records`, kept as a `Page` (an HTML
response with status 200) or dropped with a reason. A damaged .warc.gz loses only its damaged gzip
members: reading resumes at the next intact member, and the file is counted `damaged` with the members and
bytes skipped (docs/read.md). A file with no readable record is dropped as `unreadable`. Errors that are not
about one record or file stop the run (`FailureBreaker`).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import brotli
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from fastwarc.warc import ArchiveIterator as FastArchiveIterator
from fastwarc.warc import WarcRecordType
from pydantic import NonNegativeInt, PositiveInt
from warcio.archiveiterator import ArchiveIterator as WarcioArchiveIterator

from pipeline.config import Section, Share
from pipeline.core.accounting import StageCounters
from pipeline.core.failures import NOT_ABOUT_THE_ITEM, BreakerSettings, FailureBreaker
from pipeline.read.images import (
    ARCHIVED,
    GENERIC_TYPES,
    IMAGES,
    ArchivedImage,
    ArchivedRevisit,
    KeepImages,
    is_image_type,
    payload_digest,
    sniff_image,
)

log = logging.getLogger(__name__)

STAGE = "read"
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


@dataclass(frozen=True)
class ReadSettings(Section):
    """The `read` config section: which crawl records become pages (documented in pipeline/defaults.yaml)."""

    max_html_bytes: PositiveInt
    min_html_bytes: NonNegativeInt
    html_content_types: list[str]
    max_replacement_ratio: Share
    url_map: str | None
    reshuffle: bool


@dataclass
class Page:
    """One HTML page as crawled: raw bytes plus where it came from."""

    url: str
    body: bytes
    charset: str | None  # declared in the HTTP Content-Type header, if any
    source: str  # the WARC (or HTML) file
    offset: int = -1
    length: int = -1
    date: str = ""
    robots_header: str = ""  # X-Robots-Tag of the page response


@dataclass
class PendingImage:
    """An image record read but not yet kept: like a page, it waits for the next record to know whether its
    gzip member was whole; only then are its bytes stored."""

    url: str
    data: bytes
    digest: str
    content_type: str
    robots: str
    date: str
    source: str
    offset: int


Pending = Page | PendingImage | ArchivedRevisit


def _sniff(head: bytes) -> str:
    """'warc', 'arc', 'html' or 'unknown' from the first (decompressed) bytes."""
    stripped = head.lstrip()
    if stripped.startswith(b"WARC/"):
        return "warc"
    if stripped.startswith(b"filedesc://"):
        return "arc"
    lowered = stripped[:2048].lower()
    if lowered.startswith(b"\xef\xbb\xbf"):
        lowered = lowered[3:]
    if lowered.startswith(b"<") or b"<html" in lowered or b"<!doctype" in lowered:
        return "html"
    return "unknown"


def _kind_of(path: str) -> str:
    """What the file holds, from its content: `_sniff`'s kinds, 'empty' (zero bytes), or 'damaged' (gzip data
    with no intact WARC member). A .warc.gz whose first member is damaged is still a WARC."""
    with _open(path) as handle:
        head = handle.read(4096)
        if not head:
            return "empty"
        if head[:2] != GZIP_MAGIC[:2]:
            kind = _sniff(head)
            if kind == "unknown" and _next_member(handle, 0, _SCAN_CHUNK)[0] is not None:
                return "warc"  # a .warc.gz whose first member's header is damaged
            return kind
        try:
            return _sniff(zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head))
        except zlib.error:
            intact, _ = _next_member(handle, 1, sys.maxsize)
            return "damaged" if intact is None else "warc"


_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)


def charset_of(content_type: str | None) -> str | None:
    match = _CHARSET.search(content_type or "")
    return match.group(1).lower() if match else None


class ReadCrawlFiles(beam.DoFn):
    """Path of a WARC/ARC/HTML file → `Page`s, each record counted."""

    def __init__(self, settings: ReadSettings, circuit_breaker: BreakerSettings, images: KeepImages | None = None):
        """`settings`: the `read` section; `circuit_breaker`: `runner.circuit_breaker` (files and records);
        `images`: where image records are kept (None: counted and dropped as `no_archive`)."""
        self.images = images
        self.max_bytes = settings.max_html_bytes
        self.min_bytes = settings.min_html_bytes
        self.content_types = tuple(t.lower() for t in settings.html_content_types)
        self.url_map_path = settings.url_map
        self.counts = StageCounters(STAGE)
        self.file_breaker = FailureBreaker.from_config(f"{STAGE} files", circuit_breaker)
        self.record_breaker = FailureBreaker.from_config(f"{STAGE} records", circuit_breaker)
        self.url_map: dict[str, str] = {}

    def setup(self) -> None:
        if self.url_map_path:
            self.url_map = load_url_map(self.url_map_path)

    def process(self, path: str) -> Iterator[Page]:
        self.counts.seen("files")
        try:
            kind = _kind_of(path)
        except OSError as err:
            log.error("m3w read: cannot open %s: %s", path, err)
            self.counts.dropped("files", "unreadable")
            self.file_breaker.failed(err)
            return
        if kind == "html":
            self.counts.kept("files")
            self.file_breaker.succeeded()
            yield from self._read_html(path)
        elif kind in ("warc", "arc"):
            yield from self._read_archive(path, kind)
        elif kind == "empty":
            log.warning("m3w read: %s is empty; skipped", path)
            self.counts.dropped("files", "empty_file")
            self.file_breaker.succeeded()
        elif kind == "damaged":
            log.error("m3w read: %s is gzip data with no readable WARC member; skipped", path)
            self.counts.dropped("files", "unreadable")
            self.file_breaker.failed(zlib.error(f"no intact gzip member in {path}"))
        else:
            log.warning("m3w read: %s is neither WARC/ARC nor HTML; skipped", path)
            self.counts.dropped("files", "unsupported_type")
            self.file_breaker.succeeded()

    # -- plain HTML files -------------------------------------------------------------------
    def _read_html(self, path: str) -> Iterator[Page]:
        self.counts.seen("records")
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                raw = handle.read(self.max_bytes * 4 + 1)
            if raw[:2] == b"\x1f\x8b":
                raw = _gunzip_capped(raw, self.max_bytes + 1)
        except (OSError, EOFError, zlib.error) as err:
            log.error("m3w read: %s is damaged: %s", path, err)
            self.counts.dropped("records", "record_error")
            return
        page = Page(url=self._url_for_html(path, raw), body=raw, charset=None, source=path, offset=0,
                    length=len(raw), date=_mtime(path))
        verdict = self._check_size(page.body)
        if verdict:
            self.counts.dropped("records", verdict)
            return
        self.counts.kept("records")
        yield page

    def _url_for_html(self, path: str, raw: bytes) -> str:
        name = os.path.basename(path)
        for suffix in (".gz",) + HTML_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if name in self.url_map:
            return self.url_map[name]
        found = declared_url(raw[:65536])
        if found:
            return found
        return path if "://" in path else "file://" + os.path.abspath(path)

    # -- WARC / ARC ---------------------------------------------------------------------------
    def _read_archive(self, path: str, kind: str) -> Iterator[Any]:
        """Records → pages (and image records, tagged `ARCHIVED`); `files` is kept when any record was read,
        else dropped as `unreadable`."""
        source = os.path.basename(path)
        reader = ArchiveReader(path, kind)
        records = 0
        pending: Pending | None = None  # waits for the next record: its length, and whether its member was whole
        for record in reader.records():
            records += 1
            if pending is not None:
                yield from self._release(pending, record.offset, reader)
                pending = None
            try:
                unit, item, reason = self._judge_record(record, source)
            except Exception as err:  # one bad record is a counted drop; the breaker stops a systematic cause
                log.warning("m3w read: broken record at offset %d of %s: %s: %s", record.offset, path,
                            type(err).__name__, err)
                self.counts.seen("records")
                self.counts.dropped("records", "record_error")
                self.record_breaker.failed(err)
                continue
            self.record_breaker.succeeded()
            self.counts.seen(unit)
            if item is None:
                self.counts.dropped(unit, reason)
                continue
            pending = item
        if pending is not None:
            yield from self._release(pending, reader.size, reader)
        self._count_file(path, reader, records)

    def _release(self, item: Pending, end: int, reader: ArchiveReader) -> Iterator[Any]:
        """Keep `item` unless its gzip member turned out damaged (its bytes inflated, the CRC did not match): a
        page with its record's length, an image record with its bytes put into the image store."""
        unit = "records" if isinstance(item, Page) else IMAGES
        if item.offset in reader.broken_records:
            self.counts.dropped(unit, "damaged")
            return
        self.counts.kept(unit)
        if isinstance(item, Page):
            item.length = end - item.offset
            yield item
        elif isinstance(item, PendingImage):
            sha256 = self.images.store.put(item.data)
            yield beam.pvalue.TaggedOutput(ARCHIVED, ArchivedImage(
                url=item.url, sha256=sha256, digest=item.digest, content_type=item.content_type, robots=item.robots,
                date=item.date, source=item.source, offset=item.offset))
        else:
            yield beam.pvalue.TaggedOutput(ARCHIVED, item)

    def _count_file(self, path: str, reader: ArchiveReader, records: int) -> None:
        """A file with any record read is kept (and noted `damaged` when it was); one with none is a drop and,
        for the breaker, a failure: every file of a run unreadable for one reason is not bad data."""
        damage = reader.damage
        self.counts.note("files", "skipped_members", reader.skipped_members)
        self.counts.note("files", "skipped_bytes", reader.skipped_bytes)
        summary = f"{type(damage).__name__}: {_first_line(damage)}" if damage is not None else ""
        if records:
            if damage is not None:
                log.error("m3w read: %s is damaged (%s); kept its %d readable records, skipped %d gzip members "
                          "(%d bytes)", path, summary, records, reader.skipped_members, reader.skipped_bytes)
                self.counts.note("files", "damaged")
            self.counts.kept("files")
            self.file_breaker.succeeded()
            return
        error = damage or EOFError("the file holds no record")
        log.error("m3w read: no record of %s is readable (%s)", path, summary or _first_line(error))
        self.counts.dropped("files", "unreadable")
        self.file_breaker.failed(error)

    def _judge_record(self, record: ArchiveRecord, source: str) -> tuple[str, Pending | None, str]:
        """(unit, the page or image record to keep or None, drop reason): image records are the unit `images`
        (docs/read.md), every other record `records`."""
        if record.rec_type == "revisit":
            return self._judge_revisit(record, source)
        if record.rec_type == "resource":  # no HTTP message: the WARC header's type names the payload
            mime = _mime(record.warc_header("Content-Type"))
            if is_image_type(mime) or mime in GENERIC_TYPES:
                return self._judge_image(record, source, mime, b"")
            return "records", None, "not_response"
        if record.rec_type != "response":
            return "records", None, "not_response"
        if record.status is None:
            return "records", None, "not_http"
        if record.status != "200":
            return "records", None, "http_status"
        content_type = record.content_type.lower()
        mime = _mime(content_type)
        if is_image_type(mime) or (mime and mime in GENERIC_TYPES):
            return self._judge_image(record, source, mime, b"")
        if mime and not mime.startswith(self.content_types):
            return "records", None, "not_html"
        cap = self.max_bytes if mime or self.images is None else max(self.max_bytes, self.images.max_bytes)
        body = record.body(cap + 1)
        if not mime and _sniff(body[:2048]) != "html":
            if sniff_image(body[:64]):  # no type, a picture's bytes
                return self._judge_image(record, source, mime, body)
            return "records", None, "not_html"
        verdict = self._check_size(body)
        if verdict:
            return "records", None, verdict
        page = Page(url=record.url, body=body, charset=charset_of(content_type), source=source, offset=record.offset,
                    date=record.date, robots_header=record.robots)
        return "records", page, ""

    def _judge_image(self, record: ArchiveRecord, source: str, mime: str, body: bytes
                     ) -> tuple[str, Pending | None, str]:
        """An image response or resource (or a generic one, judged by its bytes; else a `not_html` record)."""
        if self.images is None and is_image_type(mime):
            return IMAGES, None, "no_archive"
        cap = self.images.max_bytes if self.images is not None else self.max_bytes
        data = body or record.body(cap + 1)
        if not is_image_type(mime) and sniff_image(data[:64]) is None:
            return "records", None, "not_response" if record.rec_type == "resource" else "not_html"
        if self.images is None:
            return IMAGES, None, "no_archive"
        if len(data) > cap:
            return IMAGES, None, "too_large"
        if not data:
            return IMAGES, None, "empty"
        image = PendingImage(url=record.url, data=data, digest=payload_digest(record.warc_header("WARC-Payload-Digest"),
                                                                              data),
                             content_type=mime, robots=record.robots, date=record.date, source=source,
                             offset=record.offset)
        return IMAGES, image, ""

    def _judge_revisit(self, record: ArchiveRecord, source: str) -> tuple[str, Pending | None, str]:
        """A revisit of an image response names its original by payload digest or URL; one of anything else (a
        page's, or one without the response's headers) is `not_response` as before."""
        if not is_image_type(_mime(record.content_type.lower())):
            return "records", None, "not_response"
        if self.images is None:
            return IMAGES, None, "no_archive"
        declared = record.warc_header("WARC-Payload-Digest")
        refers_to = _clean_url(record.warc_header("WARC-Refers-To-Target-URI"))
        if not declared and not refers_to:
            return IMAGES, None, "revisit_without_reference"
        revisit = ArchivedRevisit(url=record.url, digest=payload_digest(declared, b"") if declared else "",
                                  refers_to=refers_to, robots=record.robots, date=record.date, source=source,
                                  offset=record.offset)
        return IMAGES, revisit, ""

    def _check_size(self, body: bytes) -> str:
        if len(body) > self.max_bytes:
            return "too_large"
        if len(body.strip()) < self.min_bytes:
            return "empty"
        return ""


def _mime(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


@dataclass
class ArchiveRecord:
    """One WARC/ARC record as m3w needs it, whichever library parsed it."""

    rec_type: str  # "response", "request", "warcinfo", "resource", "revisit", ...
    url: str
    date: str
    status: str | None  # HTTP status code; None when the record holds no HTTP message
    content_type: str  # of the HTTP message
    robots: str  # X-Robots-Tag values, one per line
    offset: int  # where the record starts in the file (its gzip member, for a .warc.gz)
    body: Callable[[int], bytes]  # at most n bytes of the payload, transfer- and content-decoded
    warc_header: Callable[[str], str] = lambda name: ""  # a WARC header's value ("" when absent)


GZIP_MAGIC = b"\x1f\x8b\x08"
_SCAN_CHUNK = 1 << 20
_INFLATE_CHUNK = 1 << 16


class ArchiveReader:
    """Records of one WARC/ARC file; after a damaged gzip member, reading resumes at the next intact one.

    WARC files are read with FastWARC (3x warcio's speed on real Common Crawl files; benchmarks/warc.py), ARC
    files with warcio (FastWARC reads WARC only). Neither goes on after damage: FastWARC raises, warcio stops
    quietly. Each record of a Common Crawl WARC is its own gzip member, so the records after a damaged member
    are intact: the reader is restarted at the next offset that holds a gzip member which inflates whole (CRC
    included) to a WARC record. A reader that ends before the last member (a cut or garbage tail) is checked
    the same way. `damage` is the first error met, `skipped_members`/`skipped_bytes` what was passed over.
    """

    def __init__(self, path: str, kind: str):
        self.path = path
        self.kind = kind
        self.size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        self.damage: Exception | None = None
        self.broken_records: set[int] = set()  # offsets of records already read whose member proved damaged
        self.skipped_members = 0
        self.skipped_bytes = 0

    def records(self) -> Iterator[ArchiveRecord]:
        with _open(self.path) as handle, _open(self.path) as probe:
            if self.kind == "arc":
                yield from self._warcio_records(handle)
                return
            gzipped = not handle.read(64).lstrip().startswith(b"WARC/")  # else plain WARC: no members to resume at
            start: int | None = 0
            while start is not None:
                handle.seek(start)
                last, error = None, None
                try:
                    for record in FastArchiveIterator(handle, parse_http=False):
                        last = record.stream_pos
                        yield _from_fastwarc(record)
                except NOT_ABOUT_THE_ITEM:
                    raise
                except Exception as err:  # FastWARC raises OSError on damaged gzip and malformed headers
                    error = err
                if not gzipped:  # no member boundaries to resume at
                    self._note(error)
                    return
                start = self._resume_after(probe, start, last, error)

    def _resume_after(self, probe: Any, start: int, last: int | None, error: Exception | None) -> int | None:
        """Where to restart after the reader, started at member `start`, stopped (with `error`, or quietly).

        `last` is the offset of the last record it read: a member start when each record is its own member.
        """
        if last is None:  # nothing read since `start`: its member is the damaged one
            return self._skip(probe, start, error, past_member=True)
        if not _at_member(probe, last):  # records share members: their offsets are not member starts
            if error is not None:
                self.broken_records.add(last)  # read from a member that then failed: not to be trusted
                return self._skip(probe, last, error, past_member=True)
            broken = _first_broken_member(probe, start, self.size)  # FastWARC ends quietly on a cut member
            if broken is not None:
                self._note(EOFError(f"gzip member at offset {broken} is cut or damaged"))
                self.skipped_members += 1
                self.skipped_bytes += self.size - broken
            return None  # records were read past `broken`: resuming there could read them twice
        broken = _first_broken_member(probe, last, self.size)  # the last record's members, and any after them
        if broken is not None:
            if broken == last and error is not None:  # inflated up to a failed check; a cut at the end is kept
                self.broken_records.add(last)
            return self._skip(probe, broken, error, past_member=True)
        if error is None:
            return None  # every member to the end of the file is whole and was read
        # the gzip data is whole but a record in it is not: resume at the member after the last record's
        return self._skip(probe, _member_end(probe, last) or self.size, error, past_member=False)

    def _skip(self, probe: Any, damaged_from: int, error: Exception | None, past_member: bool) -> int | None:
        """Resume at the first intact WARC member from `damaged_from` (after its own member when `past_member`)."""
        resume, broken = _next_member(probe, damaged_from + int(past_member), self.size)
        skipped = (self.size if resume is None else resume) - damaged_from
        if skipped:
            self._note(error or EOFError(f"gzip data from offset {damaged_from} is cut or damaged"))
            self.skipped_members += broken + int(past_member and _at_member(probe, damaged_from))
            self.skipped_bytes += skipped
        return resume

    def _note(self, error: Exception | None) -> None:
        if error is not None and self.damage is None:
            self.damage = error

    def _warcio_records(self, handle: Any) -> Iterator[ArchiveRecord]:
        checked = GzipTruncationCheck(handle)
        iterator = WarcioArchiveIterator(checked, arc2warc=True)
        try:
            for record in iterator:
                yield _from_warcio(record, iterator.offset)  # get_record_offset() would read past the body
        except NOT_ABOUT_THE_ITEM:
            raise
        except Exception as err:  # warcio raises many types on damaged input
            self._note(err)
        if checked.damaged:
            self._note(EOFError("gzip stream damaged or cut in the middle of a member"))


def _open(path: str) -> Any:
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _at_member(handle: Any, offset: int) -> bool:
    handle.seek(offset)
    return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _member_end(handle: Any, offset: int, record_start: bool = True) -> int | None:
    """End offset of the gzip member at `offset` if it inflates whole (CRC checked), else None. With
    `record_start`, the member must also begin a WARC record (a place where a reader can start)."""
    handle.seek(offset)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    head, fed = b"", 0
    while not inflater.eof:
        data = handle.read(_INFLATE_CHUNK)
        if not data:
            return None  # cut short
        fed += len(data)
        try:
            while data and not inflater.eof:  # bounded output: a gzip bomb is walked through, not held
                out = inflater.decompress(data, _INFLATE_CHUNK)
                if len(head) < 16:
                    head += out[:16]
                data = inflater.unconsumed_tail
        except zlib.error:
            return None
    if record_start and not head.lstrip().startswith(b"WARC/"):
        return None
    return offset + fed - len(inflater.unused_data)


def _next_member(handle: Any, start: int, size: int) -> tuple[int | None, int]:
    """(offset of the first intact WARC gzip member at or after `start`, or None; broken members passed)."""
    broken = 0
    position = start
    while position < size:
        handle.seek(position)
        chunk = handle.read(_SCAN_CHUNK)
        if not chunk:
            break
        found = chunk.find(GZIP_MAGIC)
        while found != -1:
            if _member_end(handle, position + found) is not None:
                return position + found, broken
            broken += 1
            found = chunk.find(GZIP_MAGIC, found + 1)
        position += max(1, len(chunk) - len(GZIP_MAGIC) + 1)
    return None, broken


def _first_broken_member(handle: Any, start: int, size: int) -> int | None:
    """Walk the members from `start` to the end of the file: the offset of the first that is not whole, or None."""
    position = start
    while position < size:
        end = _member_end(handle, position, record_start=False)
        if end is None:
            return position
        position = end
    return None


def _from_fastwarc(record: Any) -> ArchiveRecord:
    http = None
    # responses can be pages or pictures, revisits name a picture's original
    if record.record_type in (WarcRecordType.response, WarcRecordType.revisit) and record.is_http:
        # quirks mode takes HTTP headers ended by bare newlines (ClueWeb); the strict parser runs them into the body
        record.parse_http(auto_decode="transfer", quirks_mode=True)
        http = record.http_headers
    header = (lambda name: http.get(name, "") or "") if http is not None else (lambda name: "")
    warc_headers = record.headers
    status = None if http is None else str(http.status_code or "")
    encoding = header("Content-Encoding").strip().lower()
    reader = record.reader
    return ArchiveRecord(
        rec_type=str(record.record_type),
        url=_clean_url(record.headers.get("WARC-Target-URI", "") or ""),
        date=record.headers.get("WARC-Date", "") or "",
        status=status,
        content_type=header("Content-Type"),
        robots="\n".join(http.get_multiple("X-Robots-Tag")) if http is not None else "",
        offset=record.stream_pos,
        # bounded by the record's length: FastWARC allocates the whole `n` up front
        body=lambda n: _decode_content(reader.read(min(n, record.content_length + 1)), encoding, n),
        warc_header=lambda name: warc_headers.get(name, "") or "",
    )


def _from_warcio(record: Any, offset: int) -> ArchiveRecord:
    http = record.http_headers
    header = (lambda name: http.get_header(name) or "") if http is not None else (lambda name: "")
    return ArchiveRecord(
        rec_type=record.rec_type,
        url=_clean_url(record.rec_headers.get_header("WARC-Target-URI") or ""),
        date=record.rec_headers.get_header("WARC-Date") or "",
        status=None if http is None else http.get_statuscode(),
        content_type=header("Content-Type"),
        robots="\n".join(value for name, value in http.headers if name.lower() == "x-robots-tag")
        if http is not None else "",
        offset=offset,
        body=lambda n: record.content_stream().read(n),  # warcio decodes transfer and content encodings itself
        warc_header=lambda name: record.rec_headers.get_header(name) or "",
    )


def _clean_url(url: str) -> str:
    """As warcio gives it: no angle brackets (WARC 1.0 writers such as wget add them), spaces escaped."""
    return url.strip().strip("<>").replace(" ", "%20")


def _decode_content(raw: bytes, encoding: str, cap: int) -> bytes:
    """The payload without its Content-Encoding, at most `cap` bytes; the bytes as stored when they do not decode
    (ClueWeb and others store decoded bodies but keep the header)."""
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, cap)
        if encoding == "deflate":
            try:
                return zlib.decompressobj().decompress(raw, cap)
            except zlib.error:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, cap)  # raw deflate, as some servers send
        if encoding == "br":
            return brotli.Decompressor().process(raw, output_buffer_limit=cap)[:cap]
    except (zlib.error, brotli.error):
        return raw
    return raw


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


class GzipTruncationCheck:
    """Pass-through reader that also inflates gzip input, to notice what warcio passes over quietly.

    warcio ends without an error when a gzip member is cut short or fails to inflate mid-file; this costs one
    extra inflate of the archive and turns either into counted damage. Used for ARC files only (warcio reads them).
    """

    def __init__(self, handle: Any):
        self.handle = handle
        self._inflater: Any = None
        self._member_bytes = 0  # bytes fed to the current member's inflater
        self._gzip: bool | None = None
        self._broken = False

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        if self._gzip is None and data:
            self._gzip = data[:2] == GZIP_MAGIC[:2]
            self._new_member()
        if self._gzip and not self._broken and data:
            self._feed(data)
        return data

    def _new_member(self) -> None:
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._member_bytes = 0

    def _feed(self, data: bytes) -> None:
        while data:
            self._member_bytes += len(data)
            try:
                self._inflater.decompress(data)
            except zlib.error:
                self._broken = True
                return
            if not self._inflater.eof:
                return
            data = self._inflater.unused_data
            self._new_member()

    def tell(self) -> int:
        return self.handle.tell()

    @property
    def damaged(self) -> bool:
        """True when a member failed to inflate, or the data read so far ends inside a member."""
        truncated = bool(self._gzip) and self._member_bytes > 0 and not self._inflater.eof
        return self._broken or truncated


def _gunzip_capped(raw: bytes, cap: int) -> bytes:
    """Decompress at most `cap` bytes: a gzip bomb is cut, not expanded in memory."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
            return handle.read(cap)
    except EOFError:  # truncated: keep what decompressed
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, cap)


def _mtime(path: str) -> str:
    try:
        stamp = FileSystems.last_updated(path)
    except Exception:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CANONICAL = re.compile(rb"<link[^>]+rel=[\"']?canonical[\"']?[^>]*>", re.I)
_OG_URL = re.compile(rb"<meta[^>]+property=[\"']?og:url[\"']?[^>]*>", re.I)
_HREF = re.compile(rb"(?:href|content)\s*=\s*[\"']([^\"']+)[\"']", re.I)


def declared_url(head: bytes) -> str | None:
    """The page's own URL from <link rel=canonical> or og:url, when absolute."""
    for pattern in (_CANONICAL, _OG_URL):
        for tag in pattern.findall(head):
            href = _HREF.search(tag)
            if href:
                url = href.group(1).decode("utf-8", "replace").strip()
                if url.startswith(("http://", "https://")):
                    return url
    return None


def load_url_map(path: str) -> dict[str, str]:
    """JSON {name: url} or {name: {"url": url}} (the article-benchmark ground-truth layout)."""
    with FileSystems.open(path) as handle:
        data = json.load(io.TextIOWrapper(handle, encoding="utf-8"))
    return {name: (value["url"] if isinstance(value, dict) else value) for name, value in data.items()}


def expand_inputs(inputs: list[str]) -> list[str]:
    """Globs and directories → file patterns; fail early and clearly when something matches nothing."""
    patterns: list[str] = []
    for item in inputs:
        pattern = item
        if "://" not in item and os.path.isdir(item):
            pattern = os.path.join(item, "**")
        elif item.endswith("/"):
            pattern = item + "**"
        if not FileSystems.match([pattern], limits=[1])[0].metadata_list:
            raise FileNotFoundError(f"input '{item}' matches no file")
        patterns.append(pattern)
    return patterns


class ReadCrawl(beam.PTransform):
    """File patterns → `Page`s, spread over all workers (one big WARC must not pin one core).

    With `images`, image records are kept: their bytes go into `images.store` and their references
    (`ArchivedImage`, `ArchivedRevisit`) into `archive`, a transform that consumes them (the build's
    `pipeline.images.archive.WriteArchiveIndex`); without, they are counted and dropped as `no_archive`.
    """

    def __init__(self, patterns: list[str], settings: ReadSettings, circuit_breaker: BreakerSettings,
                 images: KeepImages | None = None, archive: beam.PTransform | None = None):
        """`settings`: the `read` section; `circuit_breaker`: `runner.circuit_breaker`."""
        super().__init__()
        if (images is None) != (archive is None):
            raise ValueError("ReadCrawl keeps image records with both `images` and `archive`, or neither")
        self.patterns = patterns
        self.settings = settings
        self.circuit_breaker = circuit_breaker
        self.images = images
        self.archive = archive

    def expand(self, pbegin):
        paths = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Dedup paths" >> beam.Distinct()
            | "Spread files" >> beam.Reshuffle()
        )
        read = paths | "Read files" >> beam.ParDo(
            ReadCrawlFiles(self.settings, self.circuit_breaker, self.images)).with_outputs(ARCHIVED, main="pages")
        if self.archive is not None:
            read[ARCHIVED] | "Index archived images" >> self.archive
        pages = read.pages
        if self.settings.reshuffle:
            pages = pages | "Spread pages" >> beam.Reshuffle()
        return pages
