"""Reading crawled HTML: WARC/ARC files (gzip or not) and plain `.html(.gz)` files, from any Beam filesystem.

Each input file is sniffed (not trusted by its name), read record by record with warcio, and every
record is counted: kept as a `Page` (an HTML response with status 200) or dropped with a reason.
A damaged file keeps the records read before the damage; the damage is logged with the file name
and counted, and the run goes on.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.accounting import StageCounters

log = logging.getLogger(__name__)

STAGE = "read"
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


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


def _peek(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        head = handle.read(4096)
    if head[:2] == b"\x1f\x8b":
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head)
        except zlib.error:
            return b""
    return head


_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)


def charset_of(content_type: str | None) -> str | None:
    match = _CHARSET.search(content_type or "")
    return match.group(1).lower() if match else None


class ReadCrawlFiles(beam.DoFn):
    """Path of a WARC/ARC/HTML file → `Page`s, each record counted."""

    def __init__(self, config: dict[str, Any]):
        cfg = config["read"]
        self.max_bytes = int(cfg["max_html_bytes"])
        self.min_bytes = int(cfg["min_html_bytes"])
        self.content_types = tuple(t.lower() for t in cfg["html_content_types"])
        self.url_map_path = cfg.get("url_map")
        self.counts = StageCounters(STAGE)
        self.url_map: dict[str, str] = {}

    def setup(self) -> None:
        if self.url_map_path:
            self.url_map = load_url_map(self.url_map_path)

    def process(self, path: str) -> Iterator[Page]:
        self.counts.seen("files")
        try:
            kind = _sniff(_peek(path))
        except OSError as err:
            log.error("m3w read: cannot open %s: %s", path, err)
            self.counts.dropped("files", "unreadable")
            return
        if kind == "html":
            self.counts.kept("files")
            yield from self._read_html(path)
        elif kind in ("warc", "arc"):
            self.counts.kept("files")
            yield from self._read_archive(path)
        else:
            log.warning("m3w read: %s is neither WARC/ARC nor HTML; skipped", path)
            self.counts.dropped("files", "unsupported_type")

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
    def _read_archive(self, path: str) -> Iterator[Page]:
        from warcio.archiveiterator import ArchiveIterator

        source = os.path.basename(path)
        records = 0
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw_handle:
                handle = GzipTruncationCheck(raw_handle)
                iterator = ArchiveIterator(handle, arc2warc=True)
                for record in iterator:
                    records += 1
                    self.counts.seen("records")
                    page, reason = self._page_from_record(record, source)
                    if page is not None:
                        page.offset = iterator.get_record_offset()
                        page.length = iterator.get_record_length()
                        self.counts.kept("records")
                        yield page
                    else:
                        self.counts.dropped("records", reason)
                if handle.truncated:  # warcio ends quietly on a cut gzip member; that is still damage
                    raise EOFError("gzip stream ends in the middle of a member (truncated file)")
        except Exception as err:  # warcio raises many types on damaged input; the run must go on
            log.error("m3w read: %s is damaged after %d records (%s: %s); kept the records before it",
                      path, records, type(err).__name__, str(err).strip().splitlines()[0] if str(err).strip() else "")
            self.counts.note("files", "damaged")

    def _page_from_record(self, record: Any, source: str) -> tuple[Page | None, str]:
        if record.rec_type != "response":
            return None, "not_response"
        headers = record.http_headers
        if headers is None:
            return None, "not_http"
        if headers.get_statuscode() != "200":
            return None, "http_status"
        content_type = (headers.get_header("Content-Type") or "").lower()
        mime = content_type.split(";")[0].strip()
        if mime and not mime.startswith(self.content_types):
            return None, "not_html"
        try:
            body = record.content_stream().read(self.max_bytes + 1)
        except Exception as err:
            log.warning("m3w read: broken record in %s: %s", source, err)
            return None, "record_error"
        if not mime and _sniff(body[:2048]) != "html":
            return None, "not_html"
        verdict = self._check_size(body)
        if verdict:
            return None, verdict
        url = (record.rec_headers.get_header("WARC-Target-URI") or "").strip().strip("<>")
        return (
            Page(
                url=url,
                body=body,
                charset=charset_of(content_type),
                source=source,
                date=record.rec_headers.get_header("WARC-Date") or "",
                robots_header=headers.get_header("X-Robots-Tag") or "",
            ),
            "",
        )

    def _check_size(self, body: bytes) -> str:
        if len(body) > self.max_bytes:
            return "too_large"
        if len(body.strip()) < self.min_bytes:
            return "empty"
        return ""


class GzipTruncationCheck:
    """Pass-through reader that also inflates gzip input to notice a file cut mid-member.

    warcio ends quietly when a gzip member is cut short; this costs one extra inflate of the
    archive (a fraction of a percent of extraction time) and turns that into counted damage.
    """

    def __init__(self, handle: Any):
        self.handle = handle
        self._inflater: Any = None
        self._member_bytes = 0  # bytes fed to the current member's inflater
        self._gzip: bool | None = None

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        if self._gzip is None and data:
            self._gzip = data[:2] == b"\x1f\x8b"
            self._new_member()
        if self._gzip and data:
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
                self._gzip = False  # not clean gzip: warcio reports that itself
                return
            if not self._inflater.eof:
                return
            data = self._inflater.unused_data
            self._new_member()

    def tell(self) -> int:
        return self.handle.tell()

    @property
    def truncated(self) -> bool:
        """True when the data read so far ends inside a gzip member."""
        return bool(self._gzip) and self._member_bytes > 0 and not self._inflater.eof


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
            raise FileNotFoundError(f"m3w: input '{item}' matches no file")
        patterns.append(pattern)
    return patterns


class ReadCrawl(beam.PTransform):
    """File patterns → `Page`s, spread over all workers (one big WARC must not pin one core)."""

    def __init__(self, patterns: list[str], config: dict[str, Any]):
        super().__init__()
        self.patterns = patterns
        self.config = config

    def expand(self, pbegin):
        paths = (
            pbegin
            | "Patterns" >> beam.Create(self.patterns)
            | "Match" >> fileio.MatchAll()
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Dedup paths" >> beam.Distinct()
            | "Spread files" >> beam.Reshuffle()
        )
        pages = paths | "Read files" >> beam.ParDo(ReadCrawlFiles(self.config))
        if self.config["read"]["reshuffle"]:
            pages = pages | "Spread pages" >> beam.Reshuffle()
        return pages
