"""Failed downloads are no answer: retried by the next run; an outage of every URL stops the run by name;
the results fingerprint covers what changes a fetch (issue 14, part 4). The download's breaker judges each
URL as it arrives, with network errors as one family; a stopped shard keeps what it fetched; `m3w build`
leaves its images stage unfinished while retries are pending (issue 23, parts 1 and 2)."""

from __future__ import annotations

import glob
import json
import socket
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from pipeline.cli import main as m3w
from pipeline.core.failures import FailureBreaker
from pipeline.images.download import (
    DOWNLOAD,
    NOT_REQUESTED,
    STOPPED_ADVICE,
    DownloadWatch,
    OutboundPolicy,
    download_reason,
    guarded_opener,
    requests_held_back_on_trip,
    results_from_parquet,
    urlopen_through,
)
from pipeline.io.documents import parquet_bytes, read_documents
from pipeline.sampledata.imagehost import ImageHost
from pipeline.settings import load_config
from schemas.document import Document, Image, Node, make_doc_id
from tests.test_download_safety import fingerprint_of


def _docs(n: int, folder: str = "o") -> list[Document]:
    docs = []
    for i in range(n):
        page = f"https://site.example/p{i}"
        nodes = [Node(text=f"Before picture {i}."), Node(image=Image(url=f"https://img.example.com/{folder}/{i}.jpg")),
                 Node(text=f"After picture {i}.")]
        docs.append(Document(doc_id=make_doc_id(page, "t.warc.gz", i), url=page, nodes=nodes))
    return docs


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HostThatGoesDown(ImageHost):
    """The local image host, answering `answers` requests and then no more: later requests get their
    connection closed without a response, and the host stops listening (connections are refused)."""

    def __init__(self, *args: Any, answers: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.answers = answers
        self.answered = 0
        self.went_down = threading.Event()
        self._stopping_thread: threading.Thread | None = None

    def _serve(self, handler: Any, head: bool) -> None:
        with self._lock:
            self.answered += 1
            up = self.answered <= self.answers
        if up:
            super()._serve(handler, head)
            return
        handler.close_connection = True
        if not self.went_down.is_set():
            self.went_down.set()
            self._stopping_thread = threading.Thread(target=self.stop, daemon=True)
            self._stopping_thread.start()

    def __exit__(self, *exc: Any) -> None:
        if self._stopping_thread is not None:
            self._stopping_thread.join(timeout=10)
        super().__exit__(*exc)


def _download(tmp_path, port: int, *extra: str) -> int:
    args = ["download", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
            "--set", f"download.rewrite_to=http://127.0.0.1:{port}", "--set", "download.allow_loopback=true",
            "--set", "download.retries=0", "--set", "download.timeout_s=2", "--set", "image_filters.nsfw.enabled=false",
            "--set", "output.doc_shards=1"]
    for item in extra:
        args += ["--set", item]
    return m3w(args)


@pytest.fixture
def four_documents(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.parquet").write_bytes(parquet_bytes(_docs(4), False, "zstd"))
    return tmp_path


def test_download_retry_after_an_outage_fetches_and_keeps_the_images(four_documents, capsys):
    tmp_path = four_documents
    port = _closed_port()
    _download(tmp_path, port)  # writes nothing: an empty result, whose exit status tests/test_cli_errors.py checks
    assert "m3w: stopped" not in capsys.readouterr().err  # 4 connection errors are too few for the breaker to judge
    first = json.loads((tmp_path / "out" / "report.json").read_text())["stages"]["download"]
    assert first["urls"]["dropped"] == {"connection_error": 4}
    assert first["documents"]["dropped"] == {"no_images": 4}
    markers = glob.glob(str(tmp_path / "out" / "work" / "download" / "shards" / "*.done.json"))
    assert [json.loads(open(m).read())["retry_next_run"] for m in markers] == [4]

    with ImageHost(port=port) as host:  # the image host is back, at the same address
        assert _download(tmp_path, port) == 0
        requested = host.requested_targets()
    assert sorted(requested) == sorted(f"/img.example.com/o/{i}.jpg" for i in range(4))
    second = json.loads((tmp_path / "out" / "report.json").read_text())["stages"]["download"]
    assert second["urls"]["info"]["shards_reused"] == 1
    assert second["urls"]["info"]["retried_from_earlier_run"] == 4
    assert second["urls"]["dropped"] == {} and second["documents"]["out"] == 4
    written = read_documents(glob.glob(str(tmp_path / "out" / "documents" / "*.parquet")))
    assert len(written) == 4 and all(image.data for doc in written for image in doc.images)

    with ImageHost(port=port) as host:  # a third run: every URL has its final answer, nothing is asked again
        assert _download(tmp_path, port) == 0
        assert host.requested_targets() == []


def test_a_download_failing_everywhere_with_one_error_stops_the_run_by_name(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.parquet").write_bytes(parquet_bytes(_docs(60), False, "zstd"))
    code = _download(tmp_path, _closed_port())
    assert code == 1
    err = capsys.readouterr().err
    assert "download: 50 of 50 items failed with network (connection_error 50): " in err
    assert "Connection refused" in err and "https://img.example.com/o/" in err
    assert "fix the cause and re-run the same command: fetched images are kept" in err
    assert not (tmp_path / "out" / "documents").exists()


def test_results_fingerprint_covers_every_setting_that_changes_a_fetch():
    fingerprint = fingerprint_of()
    for setting in ("download.user_agent=other", "download.timeout_s=3",
                    "download.retries=4", "download.allow_loopback=true", "download.max_bytes=100",
                    "image_filters.min_side=10"):
        assert fingerprint_of(setting) != fingerprint, setting
    # rewrite_to names a mirror of the original URLs (the local image host, on a new port each run)
    for setting in ("download.thread_count=3", "download.urls_per_shard=7", "download.shard_retries=5",
                    "download.retry_next_run=[]", "image_filters.nsfw.threads=4",
                    "download.rewrite_to=http://127.0.0.1:9"):
        assert fingerprint_of(setting) == fingerprint, setting


# ------------------------------------------------------------------------------------------------
# The download's breaker: each URL judged as it arrives, network errors one family
# ------------------------------------------------------------------------------------------------
NETWORK_MESSAGES = (  # what img2dataset reports for each network-level failure, as the guarded opener raises it
    "<urlopen error [Errno 111] Connection refused>",
    "timed out",
    "<urlopen error [Errno -2] Name or service not known>",
    "<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)>",
    "[Errno 104] Connection reset by peer",
)
ANSWERS = (  # answers and verdicts about the image: never a failure, however many
    "HTTP Error 404: Not Found",
    "HTTP Error 410: Gone",
    "Use of image disallowed by X-Robots-Tag directive",
    "<urlopen error unsafe_address: 10.0.0.7>",
    "<urlopen error wrong_content_type: text/html>",
)


def default_watch() -> DownloadWatch:
    settings = load_config()["runner"]["circuit_breaker"]
    return DownloadWatch(FailureBreaker.from_config(DOWNLOAD, settings, STOPPED_ADVICE))


def test_an_outage_after_10000_good_downloads_stops_within_the_window_naming_the_family():
    watch = default_watch()
    held_back = []
    watch.hold_back = lambda: held_back.append("the rest of the shard")
    for i in range(10_000):
        watch.observe(f"https://img.example/ok/{i}.jpg", "success", None)
    failures = 0
    while watch.tripped is None:
        watch.observe(f"https://img.example/down/{failures}.jpg", "failed_to_download",
                      NETWORK_MESSAGES[failures % len(NETWORK_MESSAGES)])
        failures += 1
    assert failures == 210  # 70% of the window of 300: no single reason reaches it (connection_error is 40%)
    message = str(watch.tripped)
    assert message.startswith("download: 210 of 300 items failed with network (connection_error 84, dns_error 42, "
                              "timeout 42, tls_error 42): ")
    assert "https://img.example/down/209.jpg: [Errno 104] Connection reset by peer | " \
           "https://img.example/down/208.jpg: <urlopen error [SSL: CERTIFICATE_VERIFY_FAILED]" in message
    assert message.endswith("fix the cause and re-run the same command: fetched images are kept")
    assert held_back == ["the rest of the shard"]
    watch.observe("https://img.example/down/late.jpg", "failed_to_download", NETWORK_MESSAGES[0])
    assert watch.breaker.items == 10_210  # nothing is judged once tripped


def test_answers_and_verdicts_never_trip_the_download_breaker():
    watch = default_watch()
    for i in range(5_000):
        watch.observe(f"https://img.example/{i}.jpg", "failed_to_download", ANSWERS[i % len(ANSWERS)])
    assert watch.tripped is None and watch.breaker.items == 5_000
    for i in range(5_000):  # URLs a tripped breaker held back were never asked: no outcome at all
        watch.observe(f"https://img.example/held/{i}.jpg", "failed_to_download",
                      f"<urlopen error {NOT_REQUESTED}: the stage stopped before this request was sent>")
    assert watch.tripped is None and watch.breaker.items == 5_000


def test_an_error_we_cannot_name_is_a_family_of_its_own():
    watch = default_watch()
    for i in range(50):
        watch.observe(f"https://img.example/{i}.jpg", "failed_to_download", "'NoneType' object is not subscriptable")
    assert "50 of 50 items failed with download_error: https://img.example/49.jpg: 'NoneType'" in str(watch.tripped)


def test_a_tripped_shard_refuses_its_remaining_urls_before_any_connection():
    opener = guarded_opener(OutboundPolicy(allow_loopback=True), "m3w-test", 1000)
    url = f"http://127.0.0.1:{_closed_port()}/img.example/1.jpg"

    def reason() -> str:
        try:
            with urlopen_through(opener):
                urllib.request.urlopen(url, timeout=2)
        except urllib.error.URLError as err:
            return download_reason(str(err))
        return "answered"

    with requests_held_back_on_trip([url]) as hold_back:
        assert reason() == "connection_error"  # asked: nothing listens there
        hold_back()
        assert reason() == NOT_REQUESTED
    assert reason() == "connection_error"  # only for the shard that tripped, only while it runs


def test_an_outage_mid_shard_keeps_what_was_fetched_and_the_rerun_asks_only_the_rest(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.parquet").write_bytes(parquet_bytes(_docs(150), False, "zstd"))
    port = _closed_port()
    breaker = ("runner.circuit_breaker.min_items=20", "runner.circuit_breaker.window=40", "download.thread_count=4")
    with HostThatGoesDown(port=port, answers=60) as host:
        assert _download(tmp_path, port, *breaker) == 1
        assert host.went_down.is_set()
    err = capsys.readouterr().err
    assert "m3w: stopped, download: 28 of 40 items failed with network (connection_error 28): https://img" in err
    [marker] = glob.glob(str(tmp_path / "out" / "work" / "download" / "shards" / "*.done.json"))
    with open(marker.replace(".done.json", ".parquet"), "rb") as handle:
        results = {r.url: r for r in results_from_parquet(handle.read())}
    kept = {url for url, r in results.items() if r.kept}
    failed = sum(r.reason == "connection_error" for r in results.values())
    assert len(kept) == 60 and 28 <= failed <= 28 + 2 * 4  # the requests in flight when it tripped
    assert sum(r.reason == NOT_REQUESTED for r in results.values()) == 150 - 60 - failed
    assert json.loads(open(marker).read())["stopped"] is True

    with ImageHost(port=port) as host:  # back: only what had no answer is asked, every image is there
        assert _download(tmp_path, port, *breaker) == 0
        asked = host.requested_targets()
    assert sorted(asked) == sorted(f"/img.example.com/o/{url.rsplit('/', 1)[1]}" for url in set(results) - kept)
    report = json.loads((tmp_path / "out" / "report.json").read_text())["stages"]["download"]
    assert report["urls"]["info"]["retried_from_earlier_run"] == 150 - 60
    assert report["urls"]["dropped"] == {} and report["documents"]["out"] == 150


def test_a_decoder_failing_on_most_images_stops_the_stage_and_keeps_no_verdict_of_it(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.parquet").write_bytes(parquet_bytes(_docs(60, "fail/garbage"), False, "zstd"))
    port = _closed_port()
    with ImageHost(port=port):
        assert _download(tmp_path, port) == 1
    assert "m3w: stopped, image_filter: 50 of 50 items failed with decode_error: https://img" in capsys.readouterr().err
    # No shard is stored: once the decoder is fixed, the next run fetches every URL again.
    assert glob.glob(str(tmp_path / "out" / "work" / "download" / "shards" / "*.done.json")) == []

