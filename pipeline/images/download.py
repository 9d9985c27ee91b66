"""Fetching image bytes with img2dataset inside Beam workers: resumable URL shards, opt-outs, outbound safety.

One element of `FetchShardsDoFn` is one URL shard (unique image URLs grouped by a hash, so shards spread
over the Beam workers). Each shard is one in-process img2dataset call: its `Downloader` (thread pool,
retries, timeout, `disallowed_header_directives` X-Robots-Tag opt-out, per-URL status and error message)
writing through its Parquet sample writer into a local temp folder. We use img2dataset's components
rather than `img2dataset.download()`, which starts a logger process and a spawn pool of its own and
installs a SIGINT handler (only possible in a main thread): inside a Beam worker the DoFn already is
the unit of parallelism. Then every fetched image is checked (`filters.images`, NSFW), resized with
img2dataset's `Resizer` per the contract (default 320 px, mode recorded) and the shard's results are
written under the work folder with a completion marker, atomically: a re-run skips finished shards.

Outbound safety: a crawl is hostile input. Every connection img2dataset opens goes through a guarded
urllib opener that resolves the host itself and refuses loopback, private, link-local, reserved,
multicast and cloud-metadata addresses at connect time (so redirects and DNS tricks are covered too),
uses no proxy, speaks only http/https, caps the response size and announces a clear user agent.
`download.allow_loopback` admits 127.0.0.1, and nothing else, for tests and the demo.
"""

from __future__ import annotations

import os

# img2dataset imports albumentations, which phones PyPI for updates at import time, and wandb: keep both offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import functools  # noqa: E402
import hashlib  # noqa: E402
import http.client  # noqa: E402
import io  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Annotated, Any, Literal  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import apache_beam as beam  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt  # noqa: E402

from filters.base import ImageItem  # noqa: E402
from filters.images import ImageFilterSettings, ImageRules  # noqa: E402
from filters.nsfw import NsfwRule, NsfwScorer  # noqa: E402
from pipeline.config import Section, Share  # noqa: E402
from pipeline.core.accounting import StageCounters  # noqa: E402
from pipeline.core.failures import BreakerSettings, FailureBreaker, SystematicFailure, preload  # noqa: E402
from pipeline.core.files import write_atomically  # noqa: E402
from pipeline.core.fingerprint import output_relevant, section_values, settings_digest  # noqa: E402
from pipeline.core.preflight import download_loaders  # noqa: E402
from pipeline.images.archive import ArchiveEntry  # noqa: E402
from pipeline.images.store import ImageStore  # noqa: E402

log = logging.getLogger(__name__)

DOWNLOAD = "download"
IMAGE_FILTER = "image_filter"


@dataclass(frozen=True)
class DownloadSettings(Section):
    """The `download` section: how image bytes are fetched, from where, with what identity, and stored."""

    urls_per_shard: PositiveInt
    thread_count: PositiveInt
    timeout_s: PositiveFloat
    retries: NonNegativeInt
    shard_retries: NonNegativeInt
    user_agent: str
    user_agent_token: str
    disallowed_header_directives: list[str]
    page_opt_out: list[str]
    max_bytes: PositiveInt
    image_size: PositiveInt
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"]  # img2dataset's
    resize_only_if_bigger: bool
    encode_format: Literal["jpg", "png", "webp"]
    encode_quality: Annotated[int, Field(ge=0, le=100)]  # png: compression level 0-9
    allow_loopback: bool
    retry_next_run: list[str]
    max_retry_pending_share: Share
    rewrite_to: str | None
    from_archive: bool
    network: bool


# ------------------------------------------------------------------------------------------------
# Where an image is fetched from, and whether it may be
# ------------------------------------------------------------------------------------------------
def fetch_url(url: str, rewrite_to: str | None) -> str:
    """The URL actually requested: the original, or `{rewrite_to}/{host[:port]}{path}?{query}` (tests, demo)."""
    if not rewrite_to:
        return url
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{rewrite_to.rstrip('/')}/{netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")


_METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "localhost"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Ranges some Python versions count as global although nothing public lives there: IETF protocol
# assignments (Oracle Cloud's metadata service is 192.0.0.192), shared CGNAT space (Alibaba: 100.100.100.200).
_NEVER_PUBLIC = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("100.64.0.0/10"))


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address tunnels to (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Globally routable unicast only: no loopback, private, link-local (169.254.169.254), CGNAT, reserved,
    multicast or unspecified address, also when tunnelled inside an IPv6 one (fd00:ec2::254 is private)."""
    inner = embedded_ipv4(ip)
    if inner is not None and not is_public_address(inner):
        return False
    if ip.version == 4 and any(ip in network for network in _NEVER_PUBLIC):
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                 or ip.is_unspecified or ip.is_private)


LOOPBACK_ALLOWED = ipaddress.ip_address("127.0.0.1")


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses image requests may reach."""

    allow_loopback: bool = False  # admits 127.0.0.1 only (the local image host), never other private ranges

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.allow_loopback and ip == LOOPBACK_ALLOWED:
            return True
        return is_public_address(ip)

    def check_url(self, url: str) -> str:
        """A drop reason for a URL that must not be requested ("" if it may), without any DNS lookup.

        Raw IP hosts and well-known internal names are judged here; names are judged again at
        connect time on the addresses they resolve to (see `guarded_create_connection`).
        """
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 (raises ValueError on a malformed port)
        except ValueError:
            return "invalid_url"
        if parts.scheme not in ("http", "https"):
            return "unsupported_scheme"
        if not host:
            return "invalid_url"
        if host in _METADATA_HOSTS or host.endswith(".localhost") or host.endswith(".internal"):
            return "unsafe_address"
        ip = literal_address(host)
        if ip is None:
            return ""
        return "" if self.allows(ip) else "unsafe_address"


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names without DNS: IP literals, and the legacy IPv4 spellings resolvers accept
    (`2130706433`, `0x7f.1`, `127.1`). None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-Fx.]+", host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


class UnsafeAddressError(OSError):
    """A connection to an address the outbound policy refuses; nothing was sent."""


def guarded_create_connection(policy: OutboundPolicy, address: tuple[str, int],
                              timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # noqa: SLF001 (stdlib's own default)
                              source_address: Any = None, *args: Any) -> socket.socket:
    """`socket.create_connection` that resolves the host itself and refuses it if any address is unsafe.

    Judging the very addresses we connect to (not an earlier lookup) closes DNS-rebinding and redirect
    tricks: whatever a name resolves to at this moment is what is checked.
    """
    host, port = address
    literal = literal_address(host)
    if literal is not None and not policy.allows(literal):  # refused before even a local lookup
        raise UnsafeAddressError(f"unsafe_address: {host}")
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not policy.allows(ip):
            raise UnsafeAddressError(f"unsafe_address: {host} resolves to {ip}")
    error: OSError | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # noqa: SLF001
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            error = err
            sock.close()
    raise error or OSError(f"getaddrinfo returned nothing for {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, policy: OutboundPolicy, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(guarded_create_connection, policy)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, policy: OutboundPolicy, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(guarded_create_connection, policy)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: OutboundPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request):
        return self.do_open(functools.partial(_GuardedHTTPConnection, policy=self.policy), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: OutboundPolicy):
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request):
        return self.do_open(functools.partial(_GuardedHTTPSConnection, policy=self.policy), req,
                            context=self._context)


NOT_REQUESTED = "not_requested"  # a URL of a shard whose breaker tripped: never asked, always fetched by the next run
NOT_IN_ARCHIVE = "not_in_archive"  # `download.network` is off and the crawl does not hold the picture
_NOT_TO_REQUEST: set[str] = set()
_NOT_TO_REQUEST_LOCK = threading.Lock()


def not_to_request(url: str) -> bool:
    with _NOT_TO_REQUEST_LOCK:
        return url in _NOT_TO_REQUEST


@contextmanager
def requests_held_back_on_trip(urls: list[str]) -> Iterator[Callable[[], None]]:
    """While the block runs, calling the yielded function makes the guarded opener refuse `urls` before any
    connection (`not_requested`): img2dataset's thread pool cannot be stopped, but its remaining requests can
    be answered at once. Keyed by URL, as a URL belongs to one shard of a run."""
    def hold_back() -> None:
        with _NOT_TO_REQUEST_LOCK:
            _NOT_TO_REQUEST.update(urls)

    try:
        yield hold_back
    finally:
        with _NOT_TO_REQUEST_LOCK:
            _NOT_TO_REQUEST.difference_update(urls)


_REFUSED_TYPES = re.compile(r"^(text/|application/(\S*\+)?(xhtml|html|json|javascript|xml)\b)", re.I)


class _ResponseGuard(urllib.request.BaseHandler):
    """Our user agent on every request (redirects included); refuses non-image types and oversized bodies."""

    handler_order = 1001  # after HTTPErrorProcessor: HTTP errors keep their own status

    def __init__(self, user_agent: str, max_bytes: int):
        self.user_agent = user_agent
        self.max_bytes = max_bytes

    def http_request(self, req: urllib.request.Request) -> urllib.request.Request:
        if not_to_request(req.full_url):
            raise urllib.error.URLError(f"{NOT_REQUESTED}: the stage stopped before this request was sent")
        req.add_unredirected_header("User-agent", self.user_agent)  # wins over img2dataset's browser string
        return req

    https_request = http_request

    def http_response(self, req: urllib.request.Request, response: Any) -> Any:
        if getattr(response, "_m3w_guarded", False):
            return response
        content_type = (response.headers.get("Content-Type") or "").strip()
        length = response.headers.get("Content-Length")
        if _REFUSED_TYPES.match(content_type):
            response.close()
            raise urllib.error.URLError(f"wrong_content_type: {content_type[:60]}")
        if length and length.strip().isdigit() and int(length) > self.max_bytes:
            response.close()
            raise urllib.error.URLError(f"too_large: {length} bytes")
        original_read, cap = response.read, self.max_bytes

        def bounded_read(amt: int | None = None) -> bytes:
            if amt is not None and amt >= 0:
                return original_read(amt)
            chunks, total = [], 0
            while chunk := original_read(min(1 << 20, cap + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > cap:
                    raise ValueError(f"too_large: more than {cap} bytes")
            return b"".join(chunks)

        response.read = bounded_read
        response._m3w_guarded = True
        return response

    https_response = http_response


@functools.lru_cache(maxsize=16)
def guarded_opener(policy: OutboundPolicy, user_agent: str, max_bytes: int) -> urllib.request.OpenerDirector:
    """An opener with only what image fetching needs: no proxies, no file:/ftp:/data: schemes."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.UnknownHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPErrorProcessor(),
                    _GuardedHTTPHandler(policy), _GuardedHTTPSHandler(policy), _ResponseGuard(user_agent, max_bytes)):
        opener.add_handler(handler)
    opener.addheaders = [("User-agent", user_agent)]
    return opener


_OPENER_SWAP = threading.Condition()
_OPENER_STATE: dict[str, Any] = {"opener": None, "users": 0, "previous": None}


@contextmanager
def urlopen_through(opener: urllib.request.OpenerDirector) -> Iterator[None]:
    """Route `urllib.request.urlopen` (what img2dataset calls) through `opener` while the block runs.

    urlopen's opener is process-wide; concurrent users of the same opener share it, a different one
    waits until the current users are done, and the previous opener comes back afterwards.
    """
    with _OPENER_SWAP:
        while _OPENER_STATE["users"] and _OPENER_STATE["opener"] is not opener:
            _OPENER_SWAP.wait()
        if not _OPENER_STATE["users"]:
            _OPENER_STATE["previous"] = getattr(urllib.request, "_opener", None)
            urllib.request.install_opener(opener)
            _OPENER_STATE["opener"] = opener
        _OPENER_STATE["users"] += 1
    try:
        yield
    finally:
        with _OPENER_SWAP:
            _OPENER_STATE["users"] -= 1
            if not _OPENER_STATE["users"]:
                urllib.request.install_opener(_OPENER_STATE["previous"])
                _OPENER_STATE["opener"] = _OPENER_STATE["previous"] = None
                _OPENER_SWAP.notify_all()


# ------------------------------------------------------------------------------------------------
# What happened to each URL
# ------------------------------------------------------------------------------------------------
_HTTP_STATUS = re.compile(r"http error (\d{3})")
_REASON_MARKERS = (
    (NOT_REQUESTED, NOT_REQUESTED),
    ("unsafe_address", "unsafe_address"),
    ("wrong_content_type", "wrong_content_type"),
    ("too_large", "too_large"),
    ("x-robots-tag", "opted_out_header"),
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("unknown url type", "unsupported_scheme"),
    ("name or service not known", "dns_error"),
    ("nodename nor servname", "dns_error"),
    ("temporary failure in name resolution", "dns_error"),
    ("no address associated", "dns_error"),
    ("certificate", "tls_error"),
    ("ssl", "tls_error"),
    ("redirect", "redirect_error"),
    ("connection refused", "connection_error"),
    ("connection reset", "connection_error"),
    ("remote end closed", "connection_error"),
    ("broken pipe", "connection_error"),
    ("incompleteread", "connection_error"),
    ("network is unreachable", "connection_error"),
)


# Failures of the network, not an answer about the image: one failure family for the download's breaker (an
# outage mixes refused, reset, timed-out and unresolved requests), retried by the next run (`retry_next_run`).
NETWORK_ERRORS = frozenset({"connection_error", "timeout", "dns_error", "tls_error"})
NETWORK = "network"
# An error img2dataset reported that we cannot name: a family of its own (our opener raising on every URL).
UNNAMED_ERROR = "download_error"
TRANSPORT_ERRORS = NETWORK_ERRORS | {UNNAMED_ERROR}
# Failures of our processing of fetched bytes: one is the image's, most of them a broken environment.
PROCESSING_ERRORS = frozenset({"decode_error", "resize_error"})
# Every other download reason (http_404, opted_out_header, unsafe_address, wrong_content_type, too_large, ...)
# is an answer or a verdict about the image: a success for the breaker.
STOPPED_ADVICE = "fix the cause and re-run the same command: fetched images are kept"


class ItemFailure(Exception):
    """One URL's failure, typed by its drop reason so the breaker tells "all the same error" apart."""


@functools.cache
def failure_type(reason: str) -> type[ItemFailure]:
    return type(reason, (ItemFailure,), {})


def retry_summary(table: dict[str, Any], retry_next_run: list[str]) -> dict[str, Any]:
    """`report["images"]` of a build, from its stage table, per unique image URL: `from_archive` resolved from
    the crawl's own image records, `requests` handed to the network; `retry_pending` failed with a transient
    reason (`download.retry_next_run`) and is fetched again by the next run; `final_failures` gave no picture
    for good (404/410, `opted_out_header`, `unsafe_address`, `not_in_archive`, `decode_error`...; image rules'
    verdicts such as `min_side` or `nsfw` are not failures). Both with their reasons."""
    retry = set(retry_next_run)
    fetch = table.get(DOWNLOAD, {}).get("urls", {"in": 0, "dropped": {}})
    info = fetch.get("info", {})
    processing = table.get(IMAGE_FILTER, {}).get("urls", {}).get("dropped", {})
    pending = {reason: n for reason, n in fetch["dropped"].items() if reason in retry}
    final = {reason: n for reason, n in fetch["dropped"].items() if reason not in retry}
    final.update((reason, n) for reason, n in processing.items() if reason in PROCESSING_ERRORS)
    return {"urls": fetch["in"], "from_archive": info.get("from_archive", 0), "requests": info.get("requests", 0),
            "retry_pending": sum(pending.values()), "retry_pending_by_reason": pending,
            "final_failures": sum(final.values()), "final_failures_by_reason": dict(sorted(final.items()))}


def download_family(reason: str) -> str | None:
    """The breaker's failure family of a download reason; None for a success, an answer or a verdict."""
    if reason in NETWORK_ERRORS:
        return NETWORK
    return UNNAMED_ERROR if reason == UNNAMED_ERROR else None


def download_reason(error_message: str | None) -> str:
    """img2dataset's per-sample error message → a short, stable drop reason."""
    message = (error_message or "").lower()
    status = _HTTP_STATUS.search(message)
    if status:
        return f"http_{status.group(1)}"
    for marker, reason in _REASON_MARKERS:
        if marker in message:
            return reason
    return "download_error"


@dataclass
class ImageResult:
    """The outcome for one unique image URL: kept (reason "") with stored bytes and meta, or dropped.

    `data` holds the bytes only between the fetch and the image store; after that `meta["sha256"]` is the
    reference (`pipeline.images.store`)."""

    url: str
    reason: str = ""
    stage: str = ""  # the stage that dropped it: "download" or "image_filter" ("" when kept)
    data: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def kept(self) -> bool:
        return not self.reason


RESULT_SCHEMA = pa.schema([
    pa.field("url", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("meta", pa.string()),
    pa.field("data", pa.binary()),
])


def results_to_parquet(results: list[ImageResult]) -> bytes:
    rows = [{"url": r.url, "reason": r.reason, "stage": r.stage, "detail": r.detail,
             "meta": json.dumps(r.meta, sort_keys=True), "data": r.data} for r in sorted(results, key=lambda r: r.url)]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def results_from_parquet(data: bytes) -> list[ImageResult]:
    table = pq.read_table(pa.BufferReader(data))
    return [ImageResult(url=row["url"], reason=row["reason"], stage=row["stage"], detail=row["detail"],
                        meta=json.loads(row["meta"]), data=row["data"]) for row in table.to_pylist()]


# ------------------------------------------------------------------------------------------------
# One shard: img2dataset fetch → checks → NSFW → resize
# ------------------------------------------------------------------------------------------------
_BATCH = 64  # images checked, scored and resized together (bounds the bytes held at once)


class _ArchivedHeaders:
    """An archived response's X-Robots-Tag values as img2dataset's `is_disallowed` reads a live response's."""

    def __init__(self, robots: str):
        self.values = [line for line in robots.splitlines() if line.strip()]

    def get_all(self, name: str, default: Any = None) -> list[str]:
        return self.values if name.lower() == "x-robots-tag" and self.values else (default or [])


# img2dataset's Resizer silences libjpeg/libpng by pointing the process's stdout/stderr file descriptors
# at /dev/null while it decodes; two threads doing that at once can leave them pointing there for good.
_RESIZE_LOCK = threading.Lock()


class DownloadWatch:
    """Feeds each URL's download outcome to the download stage's breaker as img2dataset reports it, so an
    outage stops the stage within the breaker's window, not at the end of a shard of a thousand URLs.

    Network errors are one family (`network`), an error we cannot name another (`download_error`); any
    answer (an image, a 404, an X-Robots-Tag opt-out) or verdict (`unsafe_address`) is a success. Once the
    breaker trips, `tripped` holds its `SystematicFailure` and the shard's remaining URLs are not requested.
    """

    def __init__(self, breaker: FailureBreaker):
        self.breaker = breaker
        self.tripped: SystematicFailure | None = None
        self.hold_back: Callable[[], None] = lambda: None  # set by the fetch: refuses the rest of the shard

    def observe(self, url: str, status: str | None, error_message: str | None) -> None:
        if self.tripped is not None:
            return
        reason = "" if status == "success" else download_reason(error_message)
        if reason == NOT_REQUESTED:
            return
        family = download_family(reason)
        if family is None:
            self.breaker.succeeded()
            return
        try:
            self.breaker.failed(failure_type(reason)(error_message or reason), family, url)
        except SystematicFailure as tripped:
            self.tripped = tripped
            self.hold_back()


class WatchedSampleWriter:
    """img2dataset's sample writer that tells a `DownloadWatch` each URL's outcome as it is written (the
    only per-URL hook img2dataset's `Downloader` offers; it calls `write` and `close`)."""

    def __init__(self, writer: Any, watch: DownloadWatch):
        self.writer = writer
        self.watch = watch

    def write(self, img_str: Any, key: str, caption: Any, meta: dict[str, Any]) -> None:
        self.writer.write(img_str, key, caption, meta)
        self.watch.observe(meta.get("source_url") or "", meta.get("status"), meta.get("error_message"))

    def close(self) -> None:
        self.writer.close()


class ShardDownloader:
    """Downloads and checks one list of URLs in this process; built once per worker (it loads the NSFW model)."""

    def __init__(self, download: DownloadSettings, image_filters: ImageFilterSettings):
        """`download` and `image_filters`: the config sections of those names."""
        from img2dataset.resizer import Resizer

        self.dl = download
        self.filters = image_filters
        self.policy = OutboundPolicy(self.dl.allow_loopback)
        self.opener = guarded_opener(self.policy, self.dl.user_agent, self.dl.max_bytes)
        nsfw = self.filters.nsfw
        self.nsfw = NsfwScorer.from_config(nsfw) if nsfw.enabled else None
        self.nsfw_rule = NsfwRule(nsfw)
        # Without NSFW nothing needs Pillow's pixels: the header checks suffice, and the resizer's
        # decode (which fails on truncated or corrupt data) is the only one.
        self.rules = ImageRules(self.filters, decode=self.nsfw is not None)
        self.resizer = Resizer(
            image_size=self.dl.image_size,
            resize_mode=self.dl.resize_mode,
            resize_only_if_bigger=self.dl.resize_only_if_bigger,
            encode_format=self.dl.encode_format,
            encode_quality=self.dl.encode_quality,
        )
        # img2dataset only fetches: the bytes come back untouched, checked and resized by us afterwards,
        # so format and pixel-count checks see the original before any decoder does.
        self.fetch_only = Resizer(image_size=1, resize_mode="no", resize_only_if_bigger=True,
                                  disable_all_reencoding=True)

    def run(self, urls: list[str], watch: DownloadWatch | None = None) -> list[ImageResult]:
        """Every URL in, exactly one result per URL out (sorted by URL).

        `watch` judges each URL's download outcome as it arrives; once its breaker trips, the URLs not yet
        requested come back as `not_requested` within moments (see `DownloadWatch.tripped`)."""
        with tempfile.TemporaryDirectory(prefix="m3w-download-") as tmp:
            fetched = self._fetch(urls, tmp, watch)
            results = self._process(fetched)
        by_url = {r.url: r for r in results}
        for url in urls:
            if url not in by_url:  # img2dataset lost the sample (an exception inside its loop)
                by_url[url] = ImageResult(url, "download_error", DOWNLOAD, detail="no result from img2dataset")
        return [by_url[url] for url in sorted(by_url)]

    def _fetch(self, urls: list[str], tmp: str, watch: DownloadWatch | None) -> str:
        from img2dataset.downloader import Downloader
        from img2dataset.writer import ParquetSampleWriter

        rewrite_to = self.dl.rewrite_to
        table = pa.table({"source_url": urls, "url": [fetch_url(u, rewrite_to) for u in urls]})
        shard_file = os.path.join(tmp, "urls.feather")
        writer_class: Any = ParquetSampleWriter
        if watch is not None:
            def writer_class(*args: Any) -> WatchedSampleWriter:
                return WatchedSampleWriter(ParquetSampleWriter(*args), watch)
        downloader = Downloader(
            sample_writer_class=writer_class,
            resizer=self.fetch_only,
            thread_count=max(1, min(self.dl.thread_count, len(urls))),
            save_caption=False,
            extract_exif=False,
            output_folder=tmp,
            column_list=["source_url", "url"],
            timeout=self.dl.timeout_s,
            number_sample_per_shard=max(1, len(urls)),
            oom_shard_count=5,
            compute_hash=None,
            verify_hash_type=None,
            encode_format="jpg",
            retries=self.dl.retries,
            user_agent_token=self.dl.user_agent_token,
            disallowed_header_directives=list(self.dl.disallowed_header_directives) or None,
        )
        for attempt in range(self.dl.shard_retries + 1):
            with pa.OSFile(shard_file, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            with urlopen_through(self.opener), requests_held_back_on_trip(table.column("url").to_pylist()) as hold:
                if watch is not None:
                    watch.hold_back = hold
                ok, _ = downloader((0, shard_file))
            if ok:
                return os.path.join(tmp, "00000.parquet")
            log.warning("m3w download: img2dataset failed on a shard of %d URLs (attempt %d)", len(urls), attempt + 1)
        raise RuntimeError(f"img2dataset failed on a shard of {len(urls)} URLs after "
                           f"{self.dl.shard_retries + 1} attempts")

    def run_archived(self, entries: list[tuple[str, ArchiveEntry]], store: ImageStore) -> list[ImageResult]:
        """The crawl's own pictures through the same checks as fetched ones, one result per URL: the archived
        response's X-Robots-Tag as img2dataset judges a live one (`opted_out_header`), then the image rules,
        NSFW and resizing on the bytes read back from `store` (64 at a time)."""
        from img2dataset.downloader import is_disallowed

        results: list[ImageResult] = []
        directives = list(self.dl.disallowed_header_directives)
        for start in range(0, len(entries), _BATCH):
            rows = []
            for url, entry in entries[start:start + _BATCH]:
                if directives and is_disallowed(_ArchivedHeaders(entry.robots), self.dl.user_agent_token, directives):
                    results.append(ImageResult(url, "opted_out_header", DOWNLOAD,
                                               detail=f"archived X-Robots-Tag: {entry.robots}"[:200]))
                    continue
                rows.append({"source_url": url, "status": "success", "error_message": None,
                             "jpg": store.get(entry.sha256)})
            results.extend(self._process_rows(rows))
        for result in results:
            result.meta["from_archive"] = True
        return results

    def _process(self, parquet_path: str) -> list[ImageResult]:
        results: list[ImageResult] = []
        reader = pq.ParquetFile(parquet_path)
        for batch in reader.iter_batches(batch_size=_BATCH, columns=["source_url", "status", "error_message", "jpg"]):
            results.extend(self._process_rows(batch.to_pylist()))
        return results

    def _process_rows(self, rows: list[dict[str, Any]]) -> list[ImageResult]:
        """Rows as img2dataset writes them (source_url, status, error_message, the bytes in `jpg`) → results."""
        results: list[ImageResult] = []
        pending: list[tuple[str, bytes, Any, dict[str, Any]]] = []
        for row in rows:
            url = row["source_url"]
            if row["status"] != "success":
                results.append(ImageResult(url, download_reason(row["error_message"]), DOWNLOAD,
                                           detail=(row["error_message"] or "")[:200]))
                continue
            item = ImageItem(url=url, data=row["jpg"])
            verdict = self.rules(item)
            if not verdict.keep:
                results.append(ImageResult(url, verdict.reason, IMAGE_FILTER, meta=dict(verdict.scores)))
                continue
            pending.append((url, row["jpg"], item.picture, dict(verdict.scores)))
        results.extend(self._finish(pending))
        return results

    def _finish(self, pending: list[tuple[str, bytes, Any, dict[str, Any]]]) -> list[ImageResult]:
        scores = self.nsfw.scores([p for _, _, p, _ in pending]) if self.nsfw and pending else [None] * len(pending)
        out: list[ImageResult] = []
        for (url, original, _, meta), score in zip(pending, scores):
            if self.nsfw is not None:
                if score is None:
                    out.append(ImageResult(url, "decode_error", IMAGE_FILTER, meta=meta,
                                           detail="the NSFW classifier could not read the picture"))
                    continue
                verdict = self.nsfw_rule(ImageItem(url=url, nsfw_score=score))
                meta["nsfw_score"] = score
                if not verdict.keep:
                    out.append(ImageResult(url, verdict.reason, IMAGE_FILTER, meta=meta))
                    continue
            with _RESIZE_LOCK:
                stored, width, height, _, _, error = self.resizer(io.BytesIO(original))
            if error is not None or stored is None:
                reason = "decode_error" if "decod" in str(error).lower() else "resize_error"
                out.append(ImageResult(url, reason, IMAGE_FILTER, meta=meta, detail=str(error)[:200]))
                continue
            meta.update(
                sha256=hashlib.sha256(stored).hexdigest(),
                stored_width=int(width),
                stored_height=int(height),
                stored_format=self.dl.encode_format,
                resize_mode=self.dl.resize_mode,
                image_size=self.dl.image_size,
            )
            out.append(ImageResult(url, meta=meta, data=stored))
        return out


# ------------------------------------------------------------------------------------------------
# Resumable shards in Beam
# ------------------------------------------------------------------------------------------------
def results_fingerprint(download: DownloadSettings, image_filters: ImageFilterSettings) -> str:
    """Hash of every setting that shapes a shard's stored results: all of both sections but the runtime-only
    ones (`RUNTIME_ONLY` in pipeline/core/fingerprint.py, the definition `m3w build`'s resume uses too).
    m3w's version is left out on purpose: an upgrade redoes a build's images stage, which finds its fetched
    shards here instead of asking every host again."""
    sections = {"download": section_values(download), "image_filters": section_values(image_filters)}
    return settings_digest(output_relevant(sections))


def url_shard(url: str, shards: int) -> int:
    return int(hashlib.sha1(url.encode("utf-8", "surrogatepass")).hexdigest()[:12], 16) % max(1, shards)


def shard_count(unique_urls: int, urls_per_shard: int) -> int:
    return max(1, -(-int(unique_urls) // urls_per_shard))


def _with_entry(url: str, entry: ArchiveEntry | None) -> str:
    """What a shard's name covers of one URL: the URL, and the crawl's copy of it when there is one."""
    return url if entry is None else "\t".join((url, entry.sha256, entry.robots))


def shard_basename(index: int, count: int, urls: list[str], fingerprint: str) -> str:
    digest = hashlib.sha256(("\n".join([fingerprint, *urls])).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"shard-{index:05d}-of-{count:05d}-{digest}"


class FetchShardsDoFn(beam.DoFn):
    """((index, count), [(url, uses)]) → results per use; a shard finished by an earlier run is read back.

    Kept images go into the image store (`{workdir}/images/`, by sha256) and travel on by reference.
    Results go to `{workdir}/shards/<name>.parquet`, then `<name>.done.json` (URL count, sha256 of the
    results): both written under a temporary name and renamed, the marker last. A shard without a
    valid marker (a run killed mid-shard), or whose kept images are missing from the store, is fetched
    again from scratch. A finished shard is final only for URLs with a final answer: those that failed
    with a transient reason (`download.retry_next_run`: no connection, timeout, 5xx...) are fetched again
    by the next run, and the shard is rewritten with their new answers.

    Two breakers judge each worker's recent URLs: `download` the fetch outcomes as they arrive (an outage
    stops the stage within its window), `image_filter` the processing of fetched bytes. When the download
    breaker trips, the shard is stored with what it fetched (marker `"stopped": true`: its network
    failures and its `not_requested` URLs are fetched again by the next run, whatever `retry_next_run`
    says) and the stage stops: fixing the cause and re-running loses nothing. A shard whose processing
    trips is not stored: a broken decoder's verdicts are no answers.

    A URL that comes with an archive entry (the crawl holds the picture: pipeline/images/archive.py) is never
    requested: its bytes are read from `archive_store` and checked like fetched ones (`download|urls|info|
    from_archive`); the shard's name covers each such URL's entry, so a changed crawl never reuses another
    answer. Only the other URLs go to the network (`download|urls|info|requests`), and only with
    `download.network`; without it they are `not_in_archive`.
    """

    def __init__(self, workdir: str, download: DownloadSettings, image_filters: ImageFilterSettings,
                 circuit_breaker: BreakerSettings, archive_store: ImageStore | None = None):
        """`download`, `image_filters`: those config sections; `circuit_breaker`: `runner.circuit_breaker`;
        `archive_store`: where the crawl's image records were stored (needed when URLs come with entries)."""
        self.archive_store = archive_store
        self.download = download
        self.image_filters = image_filters
        self.circuit_breaker = circuit_breaker
        self.workdir = workdir.rstrip("/")
        self.store = ImageStore.in_workdir(self.workdir)
        self.fingerprint = results_fingerprint(download, image_filters)
        self.retry_reasons = frozenset(download.retry_next_run)
        self.download_counts = StageCounters(DOWNLOAD)
        self.filter_counts = StageCounters(IMAGE_FILTER)
        self.downloader: ShardDownloader | None = None
        self.download_breaker: FailureBreaker | None = None
        self.filter_breaker: FailureBreaker | None = None

    def setup(self) -> None:
        # img2dataset, the NSFW model: a broken install fails here, named
        preload(download_loaders(self.image_filters.nsfw))
        self.downloader = ShardDownloader(self.download, self.image_filters)
        self.download_breaker = FailureBreaker.from_config(DOWNLOAD, self.circuit_breaker, STOPPED_ADVICE)
        self.filter_breaker = FailureBreaker.from_config(IMAGE_FILTER, self.circuit_breaker, STOPPED_ADVICE)

    def process(self, element: tuple[tuple[int, int], Any]) -> Iterator[tuple[str, tuple[int, ImageResult]]]:
        """Yields (doc key, (node index, result)) for every use of every URL of the shard: only references
        go on to the documents, through a single shuffle."""
        (index, count), url_uses = element
        uses: dict[str, list[tuple[str, int]]] = {}
        archived: dict[str, ArchiveEntry] = {}
        for url, url_use_list, *entry in url_uses:  # (url, uses) or, looked up in the crawl, (url, uses, entry)
            uses.setdefault(url, []).extend(url_use_list)
            if entry and entry[0] is not None:
                archived[url] = entry[0]
        urls = sorted(uses)
        self.download_counts.note("urls", "from_archive", len(archived))
        name = shard_basename(index, count, [_with_entry(url, archived.get(url)) for url in urls], self.fingerprint)
        loaded = self._load(name, len(urls))
        if loaded is None:
            results = self._fetch_and_store(name, urls, [], archived)
            self.download_counts.note("urls", "shards_fetched")
        else:
            results, stopped = loaded
            self.download_counts.note("urls", "shards_reused")
            retry = [r.url for r in results if self._no_answer(r, stopped)]
            self.download_counts.note("urls", "from_finished_shards", len(results) - len(retry))
            if retry:  # transient failures of an earlier run are not answers: ask again
                self.download_counts.note("urls", "retried_from_earlier_run", len(retry))
                results = self._fetch_and_store(name, retry, results, archived)
        self._count(results)
        for result in results:
            for key, node_index in uses.get(result.url, ()):
                yield key, (node_index, result)

    def _no_answer(self, result: ImageResult, stopped: bool) -> bool:
        """Whether an earlier run's result must be fetched again: a transient failure, a URL a tripped breaker
        held back, or, in a shard the download breaker stopped, any transport failure (the outage's)."""
        return (result.reason in self.retry_reasons or result.reason == NOT_REQUESTED
                or (stopped and result.reason in TRANSPORT_ERRORS))

    def _fetch_and_store(self, name: str, urls: list[str], earlier: list[ImageResult],
                         archived: dict[str, ArchiveEntry]) -> list[ImageResult]:
        """Fetch `urls` (from the crawl where `archived` holds them), merge their results over `earlier` ones
        and store the shard; when the download breaker tripped meanwhile, the shard is stored as stopped and
        the stage stops."""
        watch = DownloadWatch(self.download_breaker)
        fresh = self._fetch(urls, watch, archived)
        by_url = {r.url: r for r in earlier} | {r.url: r for r in fresh}
        results = [by_url[url] for url in sorted(by_url)]
        self._store(name, results, stopped=watch.tripped is not None)
        if watch.tripped is not None:
            raise watch.tripped
        return results

    def _fetch(self, urls: list[str], watch: DownloadWatch, archived: dict[str, ArchiveEntry]) -> list[ImageResult]:
        """Read from the crawl the `urls` it holds, fetch (judged by `watch`) the others, check them all; kept
        bytes go into the store; a processing error on most recent images stops the stage."""
        results = self._from_archive([(url, archived[url]) for url in urls if url in archived])
        wanted = [url for url in urls if url not in archived]
        if wanted and self.download.network:
            self.download_counts.note("urls", "requests", len(wanted))
            results += self.downloader.run(wanted, watch)
        elif wanted:
            results += [ImageResult(url, NOT_IN_ARCHIVE, DOWNLOAD, detail="download.network is false")
                        for url in wanted]
        for result in results:
            if result.reason in PROCESSING_ERRORS:
                self.filter_breaker.failed(failure_type(result.reason)(result.detail or result.reason),
                                           item=result.url)
            elif result.stage != DOWNLOAD:  # a download's outcome was judged by the watch as it arrived
                self.filter_breaker.succeeded()
            if result.data is not None:
                result.meta["sha256"] = self.store.put(result.data)
                result.data = None
        return results

    def _from_archive(self, entries: list[tuple[str, ArchiveEntry]]) -> list[ImageResult]:
        if not entries:
            return []
        if self.archive_store is None:
            raise ValueError("image URLs came with crawl archive entries but FetchShardsDoFn has no archive_store")
        return self.downloader.run_archived(entries, self.archive_store)

    def _paths(self, name: str) -> tuple[str, str]:
        folder = FileSystems.join(self.workdir, "shards")
        return FileSystems.join(folder, name + ".parquet"), FileSystems.join(folder, name + ".done.json")

    def _load(self, name: str, expected: int) -> tuple[list[ImageResult], bool] | None:
        """The stored results of a finished shard and whether its download breaker stopped it; None when
        there are none to trust."""
        results_path, marker_path = self._paths(name)
        if not FileSystems.exists(marker_path) or not FileSystems.exists(results_path):
            return None
        try:
            with FileSystems.open(marker_path) as handle:
                marker = json.loads(handle.read())
            with FileSystems.open(results_path) as handle:
                data = handle.read()
        except (OSError, ValueError) as err:
            log.warning("m3w download: unreadable finished shard %s (%s): fetching it again", name, err)
            return None
        if marker.get("sha256") != hashlib.sha256(data).hexdigest() or marker.get("urls") != expected:
            log.warning("m3w download: finished shard %s does not match its marker: fetching it again", name)
            return None
        results = results_from_parquet(data)
        for result in results:
            if result.data is not None:  # a shard written before the image store: its bytes move there
                result.meta["sha256"] = self.store.put(result.data)
                result.data = None
        if any(r.kept and not self.store.verified(r.meta.get("sha256") or "") for r in results):
            log.warning("m3w download: finished shard %s refers to images no longer in %s: fetching it again",
                        name, self.store.root)
            return None
        return results, bool(marker.get("stopped"))

    def _store(self, name: str, results: list[ImageResult], stopped: bool = False) -> None:
        results_path, marker_path = self._paths(name)
        data = results_to_parquet(results)
        write_atomically(results_path, data)
        marker = {"urls": len(results), "kept": sum(r.kept for r in results),
                  "retry_next_run": sum(self._no_answer(r, stopped) for r in results), "stopped": stopped,
                  "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": self.fingerprint}
        write_atomically(marker_path, json.dumps(marker, sort_keys=True).encode())

    def _count(self, results: list[ImageResult]) -> None:
        """Per unique URL: `download|urls` and `image_filter|urls` (per use in documents: images/transforms.py)."""
        self.download_counts.seen("urls", len(results))
        fetched = 0
        for result in results:
            if result.stage == DOWNLOAD:
                self.download_counts.dropped("urls", result.reason)
            else:
                fetched += 1
                if result.stage == IMAGE_FILTER:
                    self.filter_counts.dropped("urls", result.reason)
        self.download_counts.kept("urls", fetched)
        self.download_counts.note("urls", "retry_pending", sum(r.reason in self.retry_reasons for r in results))
        self.filter_counts.seen("urls", fetched)
        self.filter_counts.kept("urls", sum(r.kept for r in results))
