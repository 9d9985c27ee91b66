"""Failed downloads are no answer: retried by the next run; an outage of every URL stops the run by name;
the results fingerprint covers what changes a fetch (issue 14, part 4)."""

from __future__ import annotations

import glob
import json
import socket

import pytest

from pipeline.cli import main as m3w
from pipeline.io.documents import parquet_bytes, read_documents
from pipeline.sampledata.imagehost import ImageHost
from schemas.document import Document, Image, Node, make_doc_id
from tests.test_download_safety import fingerprint_of


def _docs(n: int) -> list[Document]:
    docs = []
    for i in range(n):
        page = f"https://site.example/p{i}"
        nodes = [Node(text=f"Before picture {i}."), Node(image=Image(url=f"https://img.example.com/o/{i}.jpg")),
                 Node(text=f"After picture {i}.")]
        docs.append(Document(doc_id=make_doc_id(page, "t.warc.gz", i), url=page, nodes=nodes))
    return docs


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def test_download_retry_after_an_outage_fetches_and_keeps_the_images(four_documents):
    tmp_path = four_documents
    port = _closed_port()
    assert _download(tmp_path, port) == 0  # 4 connection errors are 4 counted drops: no systematic failure
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
    assert "download: 50 of 50 items failed with download:connection_error" in err
    assert "Connection refused" in err
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
