"""Progress of a long local run on the console: the stage running, items done, items/s, drops so far.

Beam's local runner reports metrics only when a pipeline ends, so a 100,000-page build would otherwise
be silent for an hour. Every `StageCounters` increment also lands in a per-process tally, which a
daemon thread in each worker process writes to `<progress dir>/<pid>.json` every second; the driver
sums those files and prints one line per interval: plain log lines when stderr is not a terminal (a
CI log gets one line every `interval_s`), one line rewritten in place when it is. The progress dir
reaches the worker processes (multi-process mode starts them from the driver) through the
`M3W_PROGRESS_DIR` environment variable. Remote runners (Dataflow) show their counters in their own UI.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection
from typing import Any, TextIO

import apache_beam as beam

from pipeline.core.counts import stage_table
from pipeline.core.files import write_atomically
from pipeline.core.stages import names

ENV = "M3W_PROGRESS_DIR"

# -- worker side -----------------------------------------------------------------------------------------

_lock = threading.Lock()
_tally: Counter[str] = Counter()
_tally_dir: str | None = None
_writer: threading.Thread | None = None


def count(name: str, n: int) -> None:
    """Add `n` to counter `name` of this process's tally (a no-op unless a progress dir is set)."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    global _tally_dir, _writer
    with _lock:
        if directory != _tally_dir:  # a new run in this process (in-memory mode runs every stage here)
            _tally.clear()
            _tally_dir = directory
        _tally[name] += n
        if _writer is None or not _writer.is_alive():
            _writer = threading.Thread(target=_write_tally_forever, name="m3w-progress-tally", daemon=True)
            _writer.start()


def _write_tally_forever(period_s: float = 1.0) -> None:
    while True:
        time.sleep(period_s)
        write_tally()


def write_tally() -> None:
    """Write this process's tally to the run's progress dir now."""
    with _lock:
        directory, snapshot = _tally_dir, dict(_tally)
    if directory and os.path.isdir(directory):
        try:
            write_atomically(os.path.join(directory, f"{os.getpid()}.json"), json.dumps(snapshot).encode())
        except OSError:  # the run ended and its progress dir is gone: nothing left to report
            pass


# -- driver side -----------------------------------------------------------------------------------------


def read_tallies(directory: str) -> Counter[str]:
    """The sum of every worker's last written tally."""
    total: Counter[str] = Counter()
    for name in os.listdir(directory):
        if name.endswith(".json"):
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as handle:
                    total.update(json.load(handle))
            except (OSError, ValueError):  # replaced while read: the next interval reads it
                continue
    return total


def describe(now: Counter[str], before: Counter[str], seconds: float, elapsed_s: float,
             keep: Collection[str] = ()) -> str | None:
    """One progress line for the stages whose counters moved since `before`, or None when nothing moved.

    `keep`: stages shown even when they did not move (the reporter passes the last ones that did, so a long
    step that counts nothing until it ends, like fetching an image shard, still prints a line every interval).
    """
    table, previous = stage_table(now, names()), stage_table(before)
    pieces = []
    for stage, units in table.items():
        unit = _main_unit(units)
        if unit is None or (units == previous.get(stage) and stage not in keep):
            continue
        counted = units[unit]
        rate = (counted["in"] - previous.get(stage, {}).get(unit, {}).get("in", 0)) / seconds if seconds > 0 else 0.0
        piece = f"{stage}: {counted['in']:,} {unit} ({rate:,.1f}/s)"
        drops = Counter(counted["dropped"])
        if drops:
            top = ", ".join(f"{reason} {n:,}" for reason, n in drops.most_common(3))
            more = len(drops) - 3
            piece += f", dropped {sum(drops.values()):,} ({top}{f', +{more} more' if more > 0 else ''})"
        pieces.append(piece)
    return f"m3w progress {_clock(elapsed_s)} | " + " | ".join(pieces) if pieces else None


def moved_stages(now: Counter[str], before: Counter[str]) -> list[str]:
    """The stages whose counters changed between two tallies."""
    previous = stage_table(before)
    return [stage for stage, units in stage_table(now, names()).items() if units != previous.get(stage)]


_UNIT_ORDER = ("pages", "documents", "records", "images", "files", "paragraphs")


def _main_unit(units: dict[str, Any]) -> str | None:
    """The unit a stage is about: the first of `_UNIT_ORDER` it counts inputs of."""
    counted = [unit for unit, entry in units.items() if entry["in"]]
    for unit in _UNIT_ORDER:
        if unit in counted:
            return unit
    return min(counted) if counted else None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class ProgressReporter:
    """While a pipeline runs: prints a progress line every `interval_s` (0 turns it off)."""

    def __init__(self, interval_s: float, stream: TextIO | None = None):
        self.interval_s = interval_s
        self.stream = stream
        self.directory: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_env: str | None = None

    def __enter__(self) -> ProgressReporter:
        if self.interval_s <= 0:
            return self
        self.directory = tempfile.mkdtemp(prefix="m3w-progress-")
        self._previous_env = os.environ.get(ENV)
        os.environ[ENV] = self.directory
        self._thread = threading.Thread(target=self._report_forever, name="m3w-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self._previous_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous_env
        shutil.rmtree(self.directory, ignore_errors=True)

    def _report_forever(self) -> None:
        started = last_time = time.monotonic()
        before: Counter[str] = Counter()
        shown: list[str] = []  # the stages that moved last: shown at 0/s while nothing moves
        stream = self.stream or sys.stderr
        in_place = stream.isatty()
        finished = False
        while not finished:
            # One last pass after the run ends, so a stage that finished within the last interval still shows.
            finished = self._stop.wait(self.interval_s)
            if finished:
                write_tally()  # the in-memory runner counts in this process: its tally may be up to 1 s old
            now_time = time.monotonic()
            now = read_tallies(self.directory)
            moved = moved_stages(now, before) or shown
            line = describe(now, before, now_time - last_time, now_time - started, keep=moved)
            before, last_time, shown = now, now_time, moved
            if line is None:
                continue
            stream.write(("\r\033[K" + line) if in_place else (line + "\n"))
            stream.flush()
        if in_place:
            stream.write("\n")


def run_pipeline(pipeline: beam.Pipeline, progress_interval_s: float) -> Any:
    """Run a pipeline to the end, printing progress meanwhile; returns the finished result."""
    with ProgressReporter(progress_interval_s):
        result = pipeline.run()
        result.wait_until_finish()
    return result
