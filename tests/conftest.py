"""Shared test fixtures: the real-web fixture folder and a fast config."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

import train_smoke  # noqa: F401  (first: sets torch's allocator up before any test allocates a tensor)
from pipeline.settings import load_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def pytest_configure(config):
    # Real-data tests must never be skipped silently: without the fixtures the suite fails loudly.
    if not (FIXTURES / "README.md").exists():
        raise pytest.UsageError(f"real-web fixtures not found at {FIXTURES}")


def pytest_collection_modifyitems(items):
    """Slow (end-to-end) tests first in every worker's share. pytest-xdist hands each of its N workers one
    contiguous 1/N of the collection (then steals from the longest queue), so each share gets its slice of
    the slow tests at its start and of the quick ones after: the long training runs overlap from the start
    instead of piling up at the end of one queue (where the stealing worker then picks them up last)."""
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    # The tests over the shared wget builds go to the first share together: a second worker that met one of them
    # early would wait idle on the file lock while the first builds.
    shared = [item for item in items if "wget_builds" in getattr(item, "fixturenames", ())]
    rest = [item for item in items if "wget_builds" not in getattr(item, "fixturenames", ())]
    slow = [item for item in rest if item.get_closest_marker("slow") is not None]
    quick = [item for item in rest if item.get_closest_marker("slow") is None]
    items[:] = [item for share in range(workers)
                for item in (shared if share == 0 else []) + slow[share::workers] + quick[share::workers]]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def fast_config():
    """Defaults with the single-process in-memory runner: the fastest for small test inputs."""
    return load_config(overrides=["runner.direct_running_mode=in_memory", "runner.direct_num_workers=1"])


@pytest.fixture(scope="session")
def article_pages() -> list[tuple[str, str, bytes]]:
    """(key, url, raw html) of the 181 article-benchmark pages."""
    root = FIXTURES / "article-benchmark"
    truth = json.loads((root / "ground-truth.json").read_text())
    pages = []
    for path in sorted((root / "html").glob("*.html.gz")):
        key = path.name[: -len(".html.gz")]
        pages.append((key, truth[key]["url"], gzip.decompress(path.read_bytes())))
    return pages


@pytest.fixture(scope="session")
def small_sample_crawl(tmp_path_factory) -> Path:
    """The generated sample crawl with few canary pages: every planted case, small enough for end-to-end runs."""
    from pipeline.sampledata.crawl import generate_sample_crawl

    out = tmp_path_factory.mktemp("sample")
    generate_sample_crawl(out, seed=0, n_canary_pages=6)
    return out


WGET_PAGES = 100  # issue 24: a real crawler's WARC of at least 100 real pages


@pytest.fixture(scope="session")
def wget_builds(tmp_path_factory) -> Path:
    """`m3w build` with the defaults (network off in effect: every picture from the crawl, no image host) of a GNU
    wget crawl of `WGET_PAGES` real article pages, once with the default riding canaries (`with/`) and once with
    `--canaries 0` (`without/`). Built once per test session: the xdist workers share it through a file lock."""
    from filelock import FileLock

    from pipeline.cli import main
    from tests.wget_crawl import crawl_with_wget, wget_available

    if not wget_available():  # `make system-deps` installs it; CI must never get here
        pytest.skip("GNU wget is not installed (make system-deps installs it)")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common parent (this run's)
    root = shared / "wget-builds"
    with FileLock(str(shared / "wget-builds.lock")):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            warc = crawl_with_wget(root / "crawl", pages=WGET_PAGES)
            for name, canaries in (("with", []), ("without", ["--canaries", "0"])):
                assert main(["build", "--input", str(warc), "--output", str(root / name), *canaries]) == 0
            (root / "done").write_text("")
    return root
