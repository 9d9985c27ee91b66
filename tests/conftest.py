"""Shared test fixtures: the real-web fixture folder and a fast config."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipeline.config import load_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def pytest_configure(config):
    # Real-data tests must never be skipped silently: without the fixtures the suite fails loudly.
    if not (FIXTURES / "README.md").exists():
        raise pytest.UsageError(f"real-web fixtures not found at {FIXTURES}")


def pytest_collection_modifyitems(items):
    """Slow (end-to-end) tests first, in a fixed order: under pytest-xdist the workers then share the long
    runs from the start and finish on short tests, instead of one worker ending alone on a training run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
