"""A systematic failure stops the run by name; one bad item stays a counted drop (issue 14, part 1)."""

from __future__ import annotations

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main as m3w
from pipeline.cli import systematic_cause
from pipeline.core.failures import FailureBreaker, SystematicFailure, preload
from pipeline.core.files import write_atomically
from pipeline.settings import load_config


def test_breaker_threshold_boundaries():
    under = FailureBreaker("extract", min_items=50, max_failure_share=0.9)
    under.succeeded(6)
    for _ in range(44):  # 44 of 50 = 0.88 < 0.9: data, not a systematic failure
        under.failed(ValueError("bad page"))
    under.failed(ValueError("bad page"))  # 45 of 51 = 0.882: still below
    assert under.items == 51

    at = FailureBreaker("extract", min_items=50, max_failure_share=0.9)
    at.succeeded(5)
    for _ in range(44):
        at.failed(ValueError("bad page"))
    with pytest.raises(SystematicFailure, match=r"extract: 45 of 50 items failed with ValueError: bad page"):
        at.failed(ValueError("bad page"))  # 45 of 50 = 0.9


def test_breaker_waits_for_min_items_and_tells_exception_types_apart():
    early = FailureBreaker("filter", min_items=50, max_failure_share=0.9)
    for _ in range(49):  # every item failed, but 49 items are too few to judge
        early.failed(RuntimeError("boom"))
    with pytest.raises(SystematicFailure, match="50 of 50"):
        early.failed(RuntimeError("boom"))

    mixed = FailureBreaker("filter", min_items=50, max_failure_share=0.9)
    for i in range(100):  # every item fails, but no one exception type reaches 90%
        mixed.failed(KeyError("k") if i % 3 == 0 else ValueError("v"))
    assert mixed.items == 100


def failures_until_trip(breaker: FailureBreaker, error: Exception, limit: int = 100_000, **where) -> int:
    """How many failures in a row `breaker` takes before it stops the stage (the tripping one included)."""
    for n in range(1, limit + 1):
        try:
            breaker.failed(error, **where)
        except SystematicFailure:
            return n
    raise AssertionError(f"no trip after {limit} failures")


def test_the_window_judges_the_last_items_at_its_exact_boundary():
    breaker = FailureBreaker("extract", min_items=10, max_failure_share=0.7, window=10)
    breaker.succeeded(10_000)
    for _ in range(6):  # 6 of the last 10: under 70%
        breaker.failed(ValueError("bad page"))
    with pytest.raises(SystematicFailure, match=r"extract: 7 of 10 items failed with ValueError: bad page"):
        breaker.failed(ValueError("bad page"))  # 7 of the last 10 = 70%


def test_failures_that_left_the_window_no_longer_count():
    breaker = FailureBreaker("extract", min_items=10, max_failure_share=0.7, window=10)
    for _ in range(6):
        breaker.failed(ValueError("bad page"))
    breaker.succeeded(4)
    for _ in range(6):  # the run's totals reached 70% at the 4th (10 of 14); the last 10 hold 6 failures
        breaker.failed(ValueError("bad page"))
    with pytest.raises(SystematicFailure, match="7 of 10 items"):
        breaker.failed(ValueError("bad page"))


def test_the_defaults_stop_an_outage_after_10000_good_items_within_the_window():
    settings = load_config()["runner"]["circuit_breaker"]
    breaker = FailureBreaker.from_config("download", settings)
    for _ in range(10_000):
        breaker.succeeded()
    tripped_after = failures_until_trip(breaker, ConnectionRefusedError("refused"))
    assert tripped_after == 210 == settings["max_failure_share"] * settings["window"]
    assert tripped_after <= settings["window"]


def test_a_bug_on_80_percent_of_items_stops_the_stage_but_60_percent_does_not():
    def run(failing_of_five: int, items: int = 10_000) -> int | None:
        breaker = FailureBreaker.from_config("filter", load_config()["runner"]["circuit_breaker"])
        for i in range(items):  # failures interleaved with successes, the same pattern every 5 items
            if i % 5 < failing_of_five:
                try:
                    breaker.failed(KeyError("language"))
                except SystematicFailure:
                    return i + 1
            else:
                breaker.succeeded()
        return None

    assert run(4) == 51  # judged from min_items (50) on, at the next failure: 41 of 51 >= 70%
    assert run(3) is None  # 60%: data, however long the run


def test_a_family_groups_different_errors_and_the_message_says_what_to_do():
    breaker = FailureBreaker("download", min_items=20, max_failure_share=0.7, window=20,
                             advice="fix the cause and re-run the same command: fetched images are kept")
    kinds = [ConnectionRefusedError("refused"), TimeoutError("timed out"), OSError("name not known")]
    with pytest.raises(SystematicFailure) as info:
        for i in range(20):  # each kind alone is a third of the items: only the family reaches 70%
            breaker.failed(kinds[i % 3], family="network", item=f"https://img.example/{i}.jpg")
    message = str(info.value)
    assert message.startswith("download: 20 of 20 items failed with network "
                              "(ConnectionRefusedError 7, TimeoutError 7, OSError 6): ")
    # the last three distinct errors, newest first, with the item that failed
    assert ("https://img.example/19.jpg: timed out | https://img.example/18.jpg: refused | "
            "https://img.example/17.jpg: name not known") in message
    assert message.endswith("fix the cause and re-run the same command: fetched images are kept")
    assert "\n" not in message  # one line: the CLI quotes it from a runner's traceback

    separate = FailureBreaker("download", min_items=20, max_failure_share=0.7, window=20)
    for i in range(300):  # without a family each exception type is judged alone
        separate.failed(kinds[i % 3])
    assert separate.items == 300


def test_errors_that_are_never_about_the_item_stop_at_once():
    breaker = FailureBreaker("extract")
    with pytest.raises(SystematicFailure, match="ModuleNotFoundError: No module named 'justext'") as info:
        breaker.failed(ModuleNotFoundError("No module named 'justext'"))
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_preload_names_what_failed():
    def broken():
        raise ImportError("cannot import name 'Cleaner' from 'lxml.html.clean'")

    with pytest.raises(SystematicFailure, match="cannot load trafilatura: ImportError: cannot import name 'Cleaner'"):
        preload([("numpy", lambda: None), ("trafilatura", broken)])


def test_systematic_cause_is_found_inside_a_runner_exception():
    wrapped = RuntimeError("Pipeline failed\nTraceback ...\npipeline.failures.SystematicFailure: filter: 50 of 50 "
                           "items failed with RuntimeError: boom\n [while running 'Filter']")
    assert systematic_cause(wrapped) == "filter: 50 of 50 items failed with RuntimeError: boom"
    assert systematic_cause(RuntimeError("something else")) is None


def _obelics_parquet(path, n, with_doc_id=False, bad_every=0):
    """OBELICS-layout rows as other tools write them (no m3w doc_id unless asked)."""
    rows = []
    for i in range(n):
        general = {"url": f"https://example.org/page/{i}", "warc_filename": "crawl.warc.gz", "warc_record_offset": i}
        if with_doc_id:
            general["doc_id"] = f"{i:020x}"
        meta = json.dumps({"src": f"https://example.org/img/{i}.jpg", "alt_text": "a picture"})
        rows.append({
            "images": [f"https://example.org/img/{i}.jpg", None],
            "metadata": [meta, "null"],
            "general_metadata": "{not json" if bad_every and i % bad_every == 0 else json.dumps(general),
            "texts": [None, f"Paragraph number {i} says something different about topic {i * 7}."],
        })
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_dedup_reads_obelics_parquet_from_other_tools_with_stable_ids(tmp_path, fast_config):
    from pipeline.io.documents import document_files, read_documents
    from pipeline.jobs.stages import run_dedup

    _obelics_parquet(tmp_path / "obelics.parquet", 60)
    outputs = []
    for run in ("a", "b"):
        report = run_dedup([str(tmp_path / "obelics.parquet")], str(tmp_path / run), fast_config, [])
        read = report["stages"]["dedup_read"]["documents"]
        assert read["in"] == 60 and read["out"] == 60 and read["dropped"] == {}
        outputs.append(sorted(d.doc_id for d in read_documents(document_files([str(tmp_path / run)]))))
    assert outputs[0] == outputs[1] and len(set(outputs[0])) == len(outputs[0]) > 0


def test_a_few_bad_rows_are_counted_but_a_file_of_bad_rows_stops_dedup(tmp_path, fast_config):
    from pipeline.jobs.stages import run_dedup

    _obelics_parquet(tmp_path / "some.parquet", 60, bad_every=20)  # 3 of 60 rows unreadable
    report = run_dedup([str(tmp_path / "some.parquet")], str(tmp_path / "some"), fast_config, [])
    assert report["stages"]["dedup_read"]["documents"]["dropped"] == {"bad_row": 3}
    assert report["metrics"] == "committed"

    _obelics_parquet(tmp_path / "all.parquet", 60, bad_every=1)
    code = m3w(["dedup", "--input", str(tmp_path / "all.parquet"), "--output", str(tmp_path / "all"),
                "--set", "runner.direct_running_mode=in_memory"])
    assert code == 1


def test_an_always_raising_filter_stops_the_run_with_the_exception_named(tmp_path, fast_config, monkeypatch, capsys):
    from pipeline.filter import transforms as filtering

    _obelics_parquet(tmp_path / "docs.parquet", 60, with_doc_id=True)

    def always_raises(self, doc):
        raise ZeroDivisionError("a bug in a rule")

    monkeypatch.setattr(filtering.DocumentFilters, "__call__", always_raises)
    code = m3w(["filter", "--input", str(tmp_path / "docs.parquet"), "--output", str(tmp_path / "out"),
                "--set", "runner.direct_running_mode=in_memory"])
    assert code == 1
    assert "filter: 50 of 50 items failed with ZeroDivisionError: a bug in a rule" in capsys.readouterr().err


def test_a_broken_language_identifier_fails_in_the_driver_before_any_page(tmp_path, fixtures_dir, monkeypatch,
                                                                          capsys):
    from filters import language

    def broken_predict(self, text):
        raise ValueError("fastText model is corrupt")

    monkeypatch.setattr(language.LanguageIdentifier, "predict", broken_predict)
    code = m3w(["extract", "--input", str(fixtures_dir / "warc" / "warcfile.warc.gz"), "--output",
                str(tmp_path / "out"), "--set", "runner.direct_running_mode=in_memory"])
    assert code == 1
    assert "cannot load the fastText language model: ValueError: fastText model is corrupt" in capsys.readouterr().err


def test_a_gate_failing_on_every_page_stops_the_run_instead_of_failing_open(tmp_path, fixtures_dir, monkeypatch,
                                                                           capsys):
    from pipeline.filter import transforms as filtering

    def broken_gate(self, page):
        raise UnicodeError("gate bug")

    monkeypatch.setattr(filtering.PageGate, "__call__", broken_gate)
    code = m3w(["extract", "--input", str(fixtures_dir / "warc" / "warcfile.warc.gz"), "--output",
                str(tmp_path / "out"), "--set", "runner.direct_running_mode=in_memory",
                "--set", "runner.circuit_breaker.min_items=10"])
    assert code == 1
    assert "gate: 10 of 10 items failed with UnicodeError: gate bug" in capsys.readouterr().err


def test_a_broken_install_stops_extract_before_the_pipeline_starts(tmp_path, fixtures_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trafilatura.external", None)  # `import trafilatura.external` → ImportError
    code = m3w(["extract", "--input", str(fixtures_dir / "warc" / "warcfile.warc.gz"), "--output",
                str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot load trafilatura (with jusText and lxml_html_clean): ModuleNotFoundError" in err
    assert not (tmp_path / "out" / "documents").exists()


def test_write_atomically_never_leaves_the_path_missing_or_torn(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    write_atomically(str(target), b"old")
    write_atomically(str(target), b"new")
    assert target.read_bytes() == b"new"

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(str(target), b"newer")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left behind
