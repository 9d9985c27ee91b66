"""The extract stage's guarantees: a page that hangs is dropped as `timeout` and the run goes on; an error
that is not about the page, or the same outcome on (nearly) every page, stops the run by name."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from pipeline.core.failures import FailureBreaker, SystematicFailure
from pipeline.extract.pages import PageExtractor
from pipeline.extract.transforms import ExtractDoFn
from pipeline.jobs.stages import extract_dofn
from pipeline.read.crawl import Page
from pipeline.settings import load_config

HANG = b"<!-- m3w-test: this page hangs the extractor -->"
ARTICLE = ("<html><body><article><h1>A walk in the hills</h1>" + "".join(
    f"<p>Paragraph {i}: the path climbs through beech woods to a ridge with a wide view over the valley.</p>"
    for i in range(6)) + '<img src="https://img.example/ridge.jpg" width="800" height="600"></article></body></html>')


IMPORT_ERROR = b"<!-- m3w-test: extraction cannot import its dependencies -->"


def misbehave_on_marked_pages(page: Page, extractor: PageExtractor) -> object:
    """The extractor, except on marked pages: one never returns (a busy loop, as a pathological page spins in
    C or Python code that nothing but killing the process can stop), one raises an ImportError."""
    if HANG in page.body:
        while True:
            pass
    if IMPORT_ERROR in page.body:
        raise ImportError("cannot import name 'Cleaner' from 'lxml.html.clean' (simulated broken install)")
    return extractor(page)


def page(url: str, body: bytes) -> Page:
    return Page(url=url, body=body, charset="utf-8", source="test")


def run(dofn: ExtractDoFn, item: Page) -> list:
    return list(dofn.process(item))


TIMEOUT_S = 4.0
GOOD = page("https://hills.example/a", ARTICLE.encode())
HANGING = page("https://hills.example/hang", ARTICLE.encode() + HANG)


@pytest.fixture(scope="module")
def dofn():
    """One extract DoFn with the timeout child on, shared by the tests below (each child start costs seconds)."""
    isolated = extract_dofn(load_config(overrides=[f"extract.timeout_s={TIMEOUT_S}"]), step=misbehave_on_marked_pages)
    started = time.monotonic()
    isolated.setup()  # the child starts (spawn, imports) here, outside every page's timeout
    print(f"child start-up {time.monotonic() - started:.2f}s, page timeout {TIMEOUT_S}s")
    yield isolated
    isolated.teardown()


def test_a_hanging_page_is_dropped_as_timeout_and_the_next_page_is_extracted(dofn):
    assert len(run(dofn, GOOD)) == 1
    child = dofn.worker.pid
    started = time.monotonic()
    assert run(dofn, HANGING) == []
    waited = time.monotonic() - started
    assert TIMEOUT_S <= waited < TIMEOUT_S + 10
    assert len(run(dofn, GOOD)) == 1  # a fresh child serves the next page
    assert dofn.worker.pid != child


def test_every_page_timing_out_stops_the_run(dofn):
    dofn.breaker = FailureBreaker("extract", min_items=2, max_failure_share=0.9)
    dofn.worker.timeout_s = 1.0
    try:
        assert run(dofn, HANGING) == []  # one page: a counted drop
        with pytest.raises(SystematicFailure, match="2 of 2 items failed with WorkerTimeout"):
            run(dofn, HANGING)
    finally:
        dofn.worker.timeout_s = TIMEOUT_S


def test_an_import_error_in_the_timeout_child_stops_the_run_at_the_first_page(dofn):
    dofn.breaker = FailureBreaker.from_config("extract", load_config()["runner"]["circuit_breaker"])
    with pytest.raises(SystematicFailure, match="ImportError: cannot import name 'Cleaner'"):
        run(dofn, page("https://hills.example/b", ARTICLE.encode() + IMPORT_ERROR))


def test_one_bad_page_is_a_counted_drop():
    def fail_on_one(page, extractor):
        if page.url.endswith("/bad"):
            raise ValueError("malformed table")
        return extractor(page)

    dofn = extract_dofn(load_config(overrides=["extract.timeout_s=0"]), step=fail_on_one)
    dofn.setup()
    assert run(dofn, page("https://hills.example/bad", ARTICLE.encode())) == []
    assert len(run(dofn, page("https://hills.example/good", ARTICLE.encode()))) == 1


def test_m3w_extract_exits_non_zero_naming_a_forced_import_error(monkeypatch, tmp_path, fixtures_dir, capsys):
    """Issue 14: a broken install used to write zero documents and exit 0."""
    import trafilatura.htmlprocessing

    from pipeline.cli import main

    def broken(*args, **kwargs):
        raise ImportError("cannot import name 'Cleaner' from 'lxml.html.clean' (forced by the test)")

    monkeypatch.setattr(trafilatura.htmlprocessing, "tree_cleaning", broken)
    status = main(["extract", "--input", str(fixtures_dir / "warc" / "warcfile.warc.gz"), "--output",
                   str(tmp_path / "out"), "--set", "extract.timeout_s=0", "--set",
                   "runner.direct_running_mode=in_memory"])
    assert status != 0
    assert "ImportError: cannot import name 'Cleaner'" in capsys.readouterr().err


def test_m3w_extract_with_lxml_html_clean_missing_fails_at_once_by_name(tmp_path, fixtures_dir):
    """The install of issue 14 (no lxml_html_clean): the command stops before reading, naming the module."""
    shadow = tmp_path / "shadow" / "lxml_html_clean"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('lxml_html_clean is not installed (simulated)')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow.parent))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "extract", "--input",
                           str(fixtures_dir / "warc" / "warcfile.warc.gz"), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1],
                          timeout=300)
    assert done.returncode != 0
    assert "ImportError" in done.stderr and "lxml_html_clean" in done.stderr
    assert not (tmp_path / "out" / "documents").exists()


def test_the_timeout_child_imports_no_beam():
    """What the child unpickles (its entry, the extractor, its start-up check) imports only extraction: it starts
    in a second or two, not in Beam's several."""
    from pipeline.extract.content import load_extract_dependencies
    from pipeline.extract.pages import extract_fields

    dofn = extract_dofn(load_config())
    sent = pickle.dumps((partial(extract_fields, step=dofn.step, extractor=dofn.extractor), load_extract_dependencies))
    probe = ("import pickle, sys; import pipeline.extract.isolate; pickle.loads(sys.stdin.buffer.read())[1](); "
             "assert 'apache_beam' not in sys.modules, 'apache_beam imported'")
    done = subprocess.run([sys.executable, "-c", probe], input=sent, capture_output=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr.decode()
