"""WARC reading speed and recovery: warcio vs FastWARC, bare, and m3w's reader, in one run.

    python -m benchmarks.warc [--repeat 4] [--flips 10] [--min-seconds 1.0] [--tiny]

Files: the real fixture WARCs in ../shared/fixtures/warc (read in place), a larger WARC of the real fixture
pages written with warcio (`--repeat` copies, in a temp dir), and damaged copies of both, also in the temp
dir: `--flips` places of 64 XOR-flipped bytes spread over the file (the issue's damage: a few bad gzip
members in a file whose every record is its own member).

Readers, each reading every record's payload (a response's HTTP body, transfer-decoded):
  - warcio: `ArchiveIterator` + `content_stream().read()` (the bare baseline; what m3w used before);
  - fastwarc: `ArchiveIterator` + `reader.read()`;
  - m3w: `pipeline.read.crawl.ArchiveReader` (FastWARC, resuming at the next intact gzip member after damage);
  - m3w read stage: `ReadCrawlFiles.process` (sniffing, HTTP checks, pages), for the stage's own cost.
Printed per file and reader: records read (of the clean file's count), records/s and compressed MB/s,
best of several rounds of at least `--min-seconds` each. A bare reader stops at the first damaged member,
so on damaged files its records/s counts only what it read. `--tiny`: the large WARC holds 8 fixture pages,
2 damaged places per copy, one timing pass per reader (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/warc.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import contextlib
import io
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._fixture_warc import FIXTURES, write_fixture_warc
from pipeline.settings import load_config

REAL = ["warcfile.warc.gz", "clueweb-quirk.warc.gz"]  # the real crawl extracts (Common Crawl, ClueWeb09)
CONFIG = load_config()


def warcio_records(path: Path) -> int:
    from warcio.archiveiterator import ArchiveIterator

    count = 0
    try:
        with open(path, "rb") as handle, contextlib.redirect_stderr(io.StringIO()):  # its per-record warnings
            for record in ArchiveIterator(handle, arc2warc=True):
                record.content_stream().read()
                count += 1
    except Exception:  # damaged input: warcio stops (or raises) at the first bad member
        pass
    return count


def fastwarc_records(path: Path) -> int:
    from fastwarc.warc import ArchiveIterator

    count = 0
    try:
        with open(path, "rb") as handle:
            for record in ArchiveIterator(handle, parse_http=True, auto_decode="transfer"):
                record.reader.read()
                count += 1
    except Exception:  # FastWARC raises at the first bad member
        pass
    return count


def m3w_records(path: Path) -> int:
    from pipeline.read.crawl import ArchiveReader

    count = 0
    for record in ArchiveReader(str(path), "warc").records():
        try:
            record.body(1 << 30)
        except OSError:  # the payload's gzip member is damaged: the read stage drops the record and goes on
            continue
        count += 1
    return count


def m3w_stage_records(path: Path) -> int:
    from pipeline.core.failures import BreakerSettings
    from pipeline.read.crawl import ReadCrawlFiles, ReadSettings

    reader = ReadCrawlFiles(ReadSettings.from_config(CONFIG["read"], "read"),
                            BreakerSettings.from_config(CONFIG["runner"]["circuit_breaker"], "runner.circuit_breaker"))
    seen = []
    original = reader._judge_record

    def counted(record, source):
        seen.append(record.offset)
        return original(record, source)

    reader._judge_record = counted
    for _ in reader.process(str(path)):
        pass
    return len(seen)


RESUMING = {"m3w reader", "m3w read stage"}  # go on after a damaged member
READERS: dict[str, Callable[[Path], int]] = {
    "warcio": warcio_records, "fastwarc": fastwarc_records, "m3w reader": m3w_records,
    "m3w read stage": m3w_stage_records,
}


def timed(read: Callable[[Path], int], path: Path, min_seconds: float, rounds: int = 3) -> tuple[int, float]:
    """(records, best seconds per pass): each round repeats the pass until `min_seconds` have gone by."""
    records, best = read(path), float("inf")  # first pass warms caches and imports
    for _ in range(rounds):
        passes, started = 0, time.perf_counter()
        while True:
            read(path)
            passes += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / passes)
    return records, best


def damaged_copy(source: Path, target: Path, flips: int) -> None:
    data = bytearray(source.read_bytes())
    for k in range(flips):
        at = min(len(data) * (2 * k + 1) // (2 * flips), len(data) - 64)
        for i in range(at, at + 64):
            data[i] ^= 0xFF
    target.write_bytes(bytes(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the fixture pages in the large WARC")
    parser.add_argument("--flips", type=int, default=10, help="damaged places per damaged copy")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="length of one timing round")
    parser.add_argument("--tiny", action="store_true", help="8 fixture pages, 2 flips, one pass: seconds")
    args = parser.parse_args()
    limit, rounds = None, 3
    if args.tiny:
        args.repeat, args.flips, args.min_seconds, limit, rounds = 1, 2, 0.0, 8, 1
    logging.disable(logging.CRITICAL)  # the damaged copies log one error per file and pass

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = [FIXTURES / "warc" / name for name in REAL]
        large = work / f"fixture-pages-x{args.repeat}.warc.gz"
        write_fixture_warc(large, repeat=args.repeat, limit=limit)
        files.append(large)
        clean_of: dict[Path, Path] = {}
        for path in list(files):
            if path.name != "clueweb-quirk.warc.gz":  # its records share gzip members: no member to resume at
                damaged = work / f"damaged-{args.flips}x64B-{path.name}"
                damaged_copy(path, damaged, args.flips)
                files.append(damaged)
                clean_of[damaged] = path

        print(f"{'file':46} {'MB':>6} {'reader':15} {'records':>12} {'records/s':>10} {'MB/s':>7} {'vs warcio':>9}")
        for path in files:
            size_mb = path.stat().st_size / 1e6
            clean_count = warcio_records(clean_of[path]) if path in clean_of else None
            base = None
            for name, read in READERS.items():
                records, seconds = timed(read, path, args.min_seconds, rounds)
                rate = records / seconds
                base = rate if base is None else base
                of = f"{records}/{clean_count}" if clean_count is not None else str(records)
                whole = clean_count in (None, records) or name in RESUMING  # read to the end of the file
                mb_rate = f"{size_mb / seconds:7.1f}" if whole else f"{'-':>7}"
                versus = f"{rate / base:8.2f}x" if base else f"{'-':>9}"  # warcio read nothing of a damaged copy
                print(f"{path.name:46} {size_mb:6.2f} {name:15} {of:>12} {rate:10,.0f} {mb_rate} {versus}")
        print("records a/b: records read from a damaged copy / records in the clean file (warcio's count); "
              "MB/s only for readers that got to the end of the file")


if __name__ == "__main__":
    main()
