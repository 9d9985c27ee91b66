"""Progress lines of a long run, and which metric values the balance check uses (issue 14, parts 4 and 5)."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

from pipeline.core import progress
from pipeline.core.accounting import metric_kind, query_counts


def test_describe_names_the_moving_stage_its_rate_and_drops():
    before = Counter({"extract|pages|in": 100, "read|records|in": 500, "read|records|out": 500})
    now = Counter({
        "read|records|in": 500, "read|records|out": 500,  # finished: not moving, not shown
        "extract|pages|in": 400, "extract|pages|out": 300, "extract|images|in": 2000,
        "extract|pages|drop|no_text": 60, "extract|pages|drop|timeout": 2, "extract|pages|drop|no_images": 30,
        "extract|pages|drop|undecodable": 8, "extract|images|drop|logo": 500,
    })
    line = progress.describe(now, before, seconds=30.0, elapsed_s=125.0)
    assert line == ("m3w progress 2m05s | extract: 400 pages (10.0/s), dropped 100 "
                    "(no_text 60, no_images 30, undecodable 8, +1 more)")
    assert progress.describe(now, now, 30.0, 155.0) is None  # nothing moved: no line
    assert progress.moved_stages(now, before) == ["extract"]
    # ...unless the reporter keeps the stages that moved last: a long step that counts nothing still shows.
    assert progress.describe(now, now, 30.0, 155.0, keep=["extract"]) == (
        "m3w progress 2m35s | extract: 400 pages (0.0/s), dropped 100 (no_text 60, no_images 30, undecodable 8, "
        "+1 more)")


def test_reporter_prints_plain_lines_when_not_a_terminal(tmp_path, monkeypatch):
    stream = io.StringIO()
    reporter = progress.ProgressReporter(0.2, stream=stream)
    with reporter:
        for _ in range(3):
            progress.count("filter|documents|in", 7)
            progress.count("filter|documents|drop|language", 2)
            import time

            time.sleep(1.3)  # the worker-side tally is written every second
    lines = stream.getvalue().splitlines()
    assert lines, "no progress line was printed"
    assert all(line.startswith("m3w progress ") and "\r" not in line for line in lines)
    assert "filter: 21 documents" in lines[-1] and "dropped 6 (language 6)" in lines[-1]
    # A step that counts nothing for a while (an image shard being fetched) still prints a line every interval.
    quiet = io.StringIO()
    with progress.ProgressReporter(0.2, stream=quiet):
        progress.count("download|urls|in", 5)
        time.sleep(2.5)  # counted once, then about ten intervals without a change
    lines = quiet.getvalue().splitlines()
    assert len(lines) >= 5 and all("download: 5 urls" in line for line in lines), lines
    assert "(0.0/s)" in lines[-1]
    assert progress.ENV not in __import__("os").environ  # the run's progress dir does not leak into the next


def test_a_real_extract_run_shows_progress_from_its_worker_processes(tmp_path, fixtures_dir):
    """A real run prints progress lines; the last pass after the run shows a stage that ended within an interval."""
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "extract", "--input", str(fixtures_dir / "warc" / "warcfile.warc.gz"),
         "--output", str(tmp_path / "out"), "--set", "output.progress_interval_s=0.5"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.startswith("m3w progress ")]
    assert lines, run.stderr[-3000:]
    assert any(" pages (" in line and "/s)" in line for line in lines)


def _counter(name, attempted, committed=None, committed_error=False):
    class Result:
        key = SimpleNamespace(metric=SimpleNamespace(name=name))

        @property
        def committed(self):
            if committed_error:
                raise NotImplementedError("this runner reports attempted values only")
            return committed

    result = Result()
    result.attempted = attempted
    return result


def _result(counters):
    return SimpleNamespace(metrics=lambda: SimpleNamespace(query=lambda _filter: {"counters": counters}))


def test_committed_values_are_used_where_the_runner_reports_them():
    retried = _result([_counter("extract|pages|in", attempted=130, committed=100),
                       _counter("extract|pages|out", attempted=117, committed=90)])
    assert query_counts(retried) == {"extract|pages|in": 100, "extract|pages|out": 90}
    assert metric_kind(retried) == "committed"

    attempted_only = _result([_counter("extract|pages|in", attempted=130, committed_error=True)])
    assert query_counts(attempted_only) == {"extract|pages|in": 130}
    assert metric_kind(attempted_only) == "attempted"
    assert metric_kind(_result([_counter("a|b|in", 1, 1), _counter("a|b|out", 1, committed_error=True)])) == "mixed"
