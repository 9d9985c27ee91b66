"""Damaged crawl files: every readable record is kept, the damage is counted, and a broken parser stops the run.

The cases work on copies of the real Common Crawl WARC (each record its own gzip member) made in tmp_path.
Member boundaries and the clean file's pages are computed here independently of the reader under test.
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest

from pipeline.core.accounting import StageCounters, stage_table, unbalanced
from pipeline.core.failures import BreakerSettings, SystematicFailure
from pipeline.read.crawl import STAGE, Page, ReadCrawlFiles, ReadSettings
from pipeline.settings import load_config

REPO = Path(__file__).resolve().parents[1]
RECORDS = 50  # records in warcfile.warc.gz, each its own gzip member


class RecordedCounters(StageCounters):
    """The read stage's counters kept in a dict, so one DoFn call can be checked without a pipeline."""

    def __init__(self):
        super().__init__(STAGE)
        self.values: Counter[str] = Counter()

    def _inc(self, name: str, n: int) -> None:
        self.values[name] += n


def read(path: Path, *overrides: str) -> tuple[list[Page], dict]:
    """Pages of one file and the read stage's table, which must balance."""
    config = load_config(overrides=list(overrides))
    reader = ReadCrawlFiles(ReadSettings.from_config(config["read"], "read"),
                            BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker"))
    reader.counts = RecordedCounters()
    pages = list(reader.process(str(path)))
    table = stage_table(dict(reader.counts.values))
    assert unbalanced(table) == []
    return pages, table[STAGE]


def member_offsets(data: bytes) -> list[int]:
    offsets, position = [], 0
    while position < len(data):
        offsets.append(position)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        inflater.decompress(data[position:])
        position = len(data) - len(inflater.unused_data)
    return offsets


def xor_flip(data: bytes, at: int, n: int = 64) -> bytes:
    flipped = bytearray(data)
    for i in range(at, at + n):
        flipped[i] ^= 0xFF
    return bytes(flipped)


@pytest.fixture(scope="module")
def warc(fixtures_dir) -> bytes:
    return (fixtures_dir / "warc" / "warcfile.warc.gz").read_bytes()


@pytest.fixture(scope="module")
def clean(warc, tmp_path_factory) -> dict[str, tuple[int, bytes]]:
    """url → (offset, body) of the clean file's pages."""
    path = tmp_path_factory.mktemp("clean") / "warcfile.warc.gz"
    path.write_bytes(warc)
    pages, table = read(path)
    assert table["records"]["in"] == RECORDS and len(pages) == 16
    assert table["files"] == {"in": 1, "out": 1, "dropped": {}, "info": {}, "balanced": True}
    return {page.url: (page.offset, page.body) for page in pages}


def members_hit(offsets: list[int], size: int, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of the members that overlap the byte range [start, end)."""
    bounds = list(zip(offsets, offsets[1:] + [size]))
    return [(a, b) for a, b in bounds if a < end and b > start]


def assert_intact_pages_kept(pages: list[Page], clean: dict, lost: list[tuple[int, int]]) -> None:
    """Every page outside the damaged members is kept byte for byte; nothing from a damaged member is."""
    got = {page.url: (page.offset, page.body) for page in pages}
    for url, (offset, body) in clean.items():
        if any(a <= offset < b for a, b in lost):
            assert url not in got, url
        else:
            assert got.get(url) == (offset, body), url


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
def test_byte_flips_lose_only_the_damaged_members(warc, clean, tmp_path, fraction):
    at = min(int(len(warc) * fraction), len(warc) - 64)
    path = tmp_path / "flipped.warc.gz"
    path.write_bytes(xor_flip(warc, at))
    pages, table = read(path)
    lost = members_hit(member_offsets(warc), len(warc), at, at + 64)
    records = table["records"]
    assert records["in"] >= RECORDS - 2 and records["in"] >= RECORDS - len(lost)
    assert_intact_pages_kept(pages, clean, lost)
    files = table["files"]
    assert (files["in"], files["out"], files["info"]["damaged"]) == (1, 1, 1)
    assert files["info"]["skipped_bytes"] == sum(b - a for a, b in lost)
    skipped_members = files["info"].get("skipped_members", 0)
    assert skipped_members <= len(lost) and (skipped_members >= 1 or at == 0)  # at 0 the flip erases the magic


def splice_member(warc: bytes, index: int, member: bytes) -> tuple[bytes, int, int]:
    """`warc` with its member `index` replaced; returns the file and the new member's (start, end)."""
    offsets = member_offsets(warc) + [len(warc)]
    start, end = offsets[index], offsets[index + 1]
    return warc[:start] + member + warc[end:], start, start + len(member)


def response_member(warc: bytes) -> int:
    """Index of a member in the middle of the file that holds an HTML response."""
    offsets = member_offsets(warc) + [len(warc)]
    for index in range(len(offsets) // 2, len(offsets) - 1):
        record = gzip.decompress(warc[offsets[index]:offsets[index + 1]])
        if b"WARC-Type: response" in record[:200] and b"text/html" in record[:3000]:
            return index
    raise AssertionError("no HTML response in the second half of the file")


@pytest.mark.parametrize("where", ["warc_header", "gzip_header"])
def test_a_damaged_header_inside_one_record_loses_that_record_only(warc, clean, tmp_path, where):
    index = response_member(warc)
    offsets = member_offsets(warc) + [len(warc)]
    original = warc[offsets[index]:offsets[index + 1]]
    if where == "warc_header":  # the gzip member is whole, the WARC record in it is not
        member = gzip.compress(gzip.decompress(original).replace(b"WARC/1.0", b"WARX/1.0", 1), mtime=0)
    else:  # the member's gzip header (magic, method, flags) XOR-flipped
        member = xor_flip(original, 0, 10)
    data, start, end = splice_member(warc, index, member)
    path = tmp_path / "header.warc.gz"
    path.write_bytes(data)
    pages, table = read(path)
    shift = len(member) - len(original)
    moved = {url: (offset + shift if offset > start else offset, body) for url, (offset, body) in clean.items()}
    assert_intact_pages_kept(pages, moved, [(start, end)])
    assert len(pages) == len(clean) - 1
    assert table["records"]["in"] == RECORDS - 1
    info = table["files"]["info"]
    assert (info["damaged"], info["skipped_bytes"]) == (1, end - start)
    assert info.get("skipped_members", 0) == (1 if where == "warc_header" else 0)  # a flipped magic is no member


def test_garbage_between_members_is_skipped(warc, clean, tmp_path):
    offsets = member_offsets(warc)
    cut = offsets[20]
    garbage = random.Random(7).randbytes(3000)
    assert b"\x1f\x8b" not in garbage
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(warc[:cut] + garbage + warc[cut:])
    pages, table = read(path)
    moved = {url: (offset + 3000 if offset >= cut else offset, body) for url, (offset, body) in clean.items()}
    assert_intact_pages_kept(pages, moved, [])
    assert table["records"]["in"] == RECORDS
    assert table["files"]["info"] == {"damaged": 1, "skipped_bytes": 3000}  # no member in it, none counted
    assert table["files"]["out"] == 1


def test_a_file_cut_at_its_end_keeps_what_was_read(warc, clean, tmp_path):
    offsets = member_offsets(warc)
    cut = int(len(warc) * 0.7)
    cut_member = max(o for o in offsets if o < cut)
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(warc[:cut])
    pages, table = read(path)
    assert table["records"]["in"] == sum(o < cut for o in offsets)  # the cut record's headers are still read
    complete = {url: page for url, page in clean.items() if page[0] < cut_member}
    assert_intact_pages_kept([p for p in pages if p.offset < cut_member], complete, [])
    info = table["files"]["info"]
    assert info == {"damaged": 1, "skipped_members": 1, "skipped_bytes": cut - cut_member}


def test_a_cut_single_member_file_is_damaged(warc, tmp_path):
    whole = gzip.compress(gzip.decompress(warc), mtime=0)  # all records in one gzip member
    path = tmp_path / "one-member.warc.gz"
    path.write_bytes(whole)
    _, table = read(path)
    assert table["records"]["in"] == RECORDS and table["files"]["info"] == {}
    path.write_bytes(whole[: len(whole) // 2])
    _, table = read(path)
    assert 0 < table["records"]["in"] < RECORDS
    assert table["files"]["info"] == {"damaged": 1, "skipped_members": 1, "skipped_bytes": len(whole) // 2}


def test_zero_length_file_is_a_counted_drop(tmp_path):
    path = tmp_path / "empty.warc.gz"
    path.write_bytes(b"")
    pages, table = read(path)
    assert pages == [] and "records" not in table
    assert table["files"]["dropped"] == {"empty_file": 1} and table["files"]["out"] == 0


@pytest.mark.parametrize("name", ["example.arc", "example.arc.gz"])
def test_arc_files_are_read(fixtures_dir, tmp_path, name):
    path = tmp_path / name
    shutil.copyfile(fixtures_dir / "warc" / "warcio-edge-cases" / name, path)
    pages, table = read(path)
    assert [(p.url, len(p.body), p.date) for p in pages] == [("http://example.com/", 1270, "2014-02-16T05:02:21Z")]
    assert pages[0].body.startswith(b"<!doctype html>")
    assert table["records"] == {"in": 2, "out": 1, "dropped": {"not_response": 1}, "info": {}, "balanced": True}
    assert table["files"]["out"] == 1 and table["files"]["info"] == {}


def large_member(warc: bytes) -> bytes:
    offsets = member_offsets(warc) + [len(warc)]
    return max((warc[a:b] for a, b in zip(offsets, offsets[1:])), key=len)


@pytest.mark.parametrize("case, error", [
    ("arc_header", "ArchiveLoadFailed"),  # warcio fails at its first record
    ("only_member_damaged", "Gzip decompression error"),  # FastWARC fails inside the file's only member
    ("no_member", "gzip data with no readable WARC member"),  # gzip magic, but nothing inflates
])
def test_a_file_with_no_readable_record_is_dropped_as_unreadable(warc, tmp_path, caplog, case, error):
    content = {
        "arc_header": lambda: b"filedesc://broken.arc\nthis is no ARC header line\n",
        "only_member_damaged": lambda: xor_flip(large_member(warc), 6000),
        "no_member": lambda: b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4,
    }[case]()
    path = tmp_path / "broken.warc"
    path.write_bytes(content)
    pages, table = read(path)
    assert pages == [] and table.get("records", {}).get("in", 0) == 0
    assert table["files"]["dropped"] == {"unreadable": 1} and table["files"]["out"] == 0
    assert error in caplog.text


def fail_after(monkeypatch, good: int) -> None:
    """The record parser raises ValueError on every record after the first `good` ones."""
    original = ReadCrawlFiles._judge_record
    seen = Counter()

    def parser(self, record, source):
        seen["records"] += 1
        if seen["records"] > good:
            raise ValueError("forced parser failure")
        return original(self, record, source)

    monkeypatch.setattr(ReadCrawlFiles, "_judge_record", parser)


def test_failures_below_the_breaker_share_are_counted_drops(warc, tmp_path, monkeypatch):
    path = tmp_path / "warcfile.warc.gz"
    path.write_bytes(warc)
    fail_after(monkeypatch, 16)  # 34 of 50 fail: under the default 70%
    _, table = read(path)
    assert table["records"]["dropped"]["record_error"] == 34
    assert table["files"]["out"] == 1


def test_failures_at_the_breaker_share_stop_the_stage(warc, tmp_path, monkeypatch):
    path = tmp_path / "warcfile.warc.gz"
    path.write_bytes(warc)
    fail_after(monkeypatch, 15)  # 35 of 50 fail: exactly 70% once the 50th record is seen
    with pytest.raises(SystematicFailure, match="35 of 50 items failed with ValueError: forced parser failure"):
        read(path)


CLI_WITH_BROKEN_PARSER = """
import sys
from pipeline.cli import main
from pipeline.read.crawl import ReadCrawlFiles

def parser(self, record, source):
    raise ValueError("forced parser failure")

ReadCrawlFiles._judge_record = parser
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_always_failing_parser_stops_m3w_extract(warc, tmp_path):
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "warcfile.warc.gz").write_bytes(warc)
    result = subprocess.run(
        [sys.executable, "-c", CLI_WITH_BROKEN_PARSER, "extract", "--input", str(tmp_path / "crawl"),
         "--output", str(tmp_path / "out"), "--set", "runner.direct_running_mode=in_memory"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "m3w: stopped, read records: 50 of 50 items failed with ValueError: forced parser failure" in result.stderr


@pytest.mark.slow
def test_damaged_files_are_counted_through_m3w_extract(warc, tmp_path, monkeypatch):
    from pipeline.jobs.stages import run_extract

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "flipped.warc.gz").write_bytes(xor_flip(warc, len(warc) // 2))
    (crawl / "broken.arc").write_bytes(b"filedesc://broken.arc\nthis is no ARC header line\n")
    (crawl / "empty.warc.gz").write_bytes(b"")
    fail_after(monkeypatch, RECORDS - 4)  # 49 records are read: 3 bad ones stay drops, the run goes on
    config = load_config(overrides=["runner.direct_running_mode=in_memory"])
    report = run_extract([str(crawl)], str(tmp_path / "out"), config)
    assert report["unbalanced"] == [] and report["broken_links"] == []
    files, records = report["stages"]["read"]["files"], report["stages"]["read"]["records"]
    assert (files["in"], files["out"]) == (3, 1)
    assert files["dropped"] == {"empty_file": 1, "unreadable": 1}
    assert files["info"]["damaged"] == 1 and files["info"]["skipped_members"] >= 1
    assert records["in"] == RECORDS - 1 and records["dropped"]["record_error"] == 3
    assert report["stages"]["gate"]["pages"]["in"] == records["out"] >= 10
