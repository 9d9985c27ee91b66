"""Resume fingerprints of what is read (issue 23, item 3): the matched crawl files (path, size, modification
time) and m3w's version, and one definition of the settings that never change a stage's output, shared by
`m3w build`'s resume and the download cache."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

import pytest

from filters.images import ImageFilterSettings
from pipeline.core import fingerprint as fp
from pipeline.images.download import DownloadSettings, results_fingerprint
from pipeline.io.documents import parquet_files, read_documents, stage_dir
from pipeline.jobs.build import BuildContext, fingerprint, run_build
from pipeline.settings import load_config

WARCS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "warc"
FAST = ["runner.direct_running_mode=in_memory", "runner.direct_num_workers=1", "canaries.pages=0"]


def build_key(crawl: Path, *overrides: str, stage: str = "documents") -> str:
    """The build fingerprint of `stage` for the crawl folder `crawl` with the defaults and `overrides`."""
    context = BuildContext([str(crawl)], str(crawl.parent / "out"), load_config(overrides=list(overrides)), [])
    return fingerprint(context, stage)


@pytest.fixture
def crawl(tmp_path: Path) -> Path:
    folder = tmp_path / "crawl"
    folder.mkdir()
    (folder / "a.warc.gz").write_bytes(b"first crawl file")
    return folder


def test_unchanged_files_and_settings_give_the_same_fingerprint(crawl):
    assert build_key(crawl) == build_key(crawl)
    assert build_key(crawl) != build_key(crawl, stage="images")


def test_a_file_of_another_size_changes_the_fingerprint(crawl):
    before = build_key(crawl)
    stamp = os.stat(crawl / "a.warc.gz").st_mtime_ns
    (crawl / "a.warc.gz").write_bytes(b"first crawl file, longer")
    os.utime(crawl / "a.warc.gz", ns=(stamp, stamp))  # same time: only the size tells
    assert build_key(crawl) != before


def test_a_touched_file_of_the_same_size_changes_the_fingerprint(crawl):
    before = build_key(crawl)
    stamp = os.stat(crawl / "a.warc.gz").st_mtime_ns
    os.utime(crawl / "a.warc.gz", ns=(stamp + 1_000_000_000, stamp + 1_000_000_000))
    assert build_key(crawl) != before


def test_an_added_or_removed_file_under_the_input_folder_changes_the_fingerprint(crawl):
    before = build_key(crawl)
    (crawl / "sub").mkdir()
    (crawl / "sub" / "b.warc.gz").write_bytes(b"second")
    added = build_key(crawl)
    assert added != before
    (crawl / "sub" / "b.warc.gz").unlink()
    assert build_key(crawl) == before


def test_the_fingerprint_lists_exactly_the_files_the_reader_matches(crawl):
    (crawl / "b.arc").write_bytes(b"x")
    context = BuildContext([str(crawl / "*.warc.gz")], "out", load_config(), [])
    assert [Path(f.path).name for f in context.files_read] == ["a.warc.gz"]
    state = context.files_read[0]
    assert state.size == len(b"first crawl file")
    assert state.stamp == f"mtime:{os.stat(crawl / 'a.warc.gz').st_mtime!r}"


def test_a_file_a_setting_names_is_part_of_the_fingerprint(crawl, tmp_path):
    url_map = tmp_path / "urls.json"
    url_map.write_text('{"a.html": "https://a.test/"}')
    before = build_key(crawl, f"read.url_map={url_map}")
    url_map.write_text('{"a.html": "https://b.test/page"}')
    assert build_key(crawl, f"read.url_map={url_map}") != before


def test_another_m3w_version_changes_the_fingerprint():
    files = [fp.FileState("crawl/a.warc.gz", 16, "mtime:1.0")]
    assert fp.stage_fingerprint("documents", {}, files, "0.1.0") != fp.stage_fingerprint("documents", {}, files,
                                                                                          "0.2.0")
    assert fp.stage_fingerprint("documents", {}, files) == fp.stage_fingerprint("documents", {}, files,
                                                                                fp.m3w_version())


def test_the_version_of_a_source_tree_that_is_not_installed_comes_from_its_setup_cfg(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert fp.m3w_version() == "0.1.0+source"


def test_a_setting_that_only_changes_how_a_stage_runs_keeps_the_fingerprint(crawl):
    before = build_key(crawl)
    for runtime in ("runner.direct_running_mode=multi_processing", "download.thread_count=3",
                    "download.rewrite_to=http://127.0.0.1:9", "output.progress_interval_s=5",
                    "image_filters.nsfw.batch_size=2", "smoke.seed=7"):
        assert build_key(crawl, runtime) == before, runtime
    for shaping in ("filters.language.threshold=0.7", "output.doc_shards=2", "download.image_size=224",
                    "shards.seq_len=128", "download.allow_loopback=true"):
        assert build_key(crawl, shaping) != before, shaping


def _another(key: str, value):
    """A valid value other than `value` for the download or image-filter setting `key`."""
    choices = {"resize_mode": "border", "encode_format": "png", "rewrite_to": "http://127.0.0.1:9",
               "model_path": "/models/other.onnx"}
    if key in choices:
        return choices[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1 if isinstance(value, int) else value / 2
    if isinstance(value, list):
        return value[:-1]
    return f"{value}-other"


def _settings_paths(section: dict, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], object]]:
    found = []
    for key, value in section.items():
        found += _settings_paths(value, path + (key,)) if isinstance(value, dict) else [(path + (key,), value)]
    return found


def test_build_resume_and_download_cache_agree_on_every_download_setting(crawl):
    """rewrite_to included: a mirror of the original URLs, so neither the build nor the cache depends on it."""
    defaults = load_config()

    def keys(config: dict) -> tuple[str, str]:
        cache = results_fingerprint(DownloadSettings.from_config(config["download"], "download"),
                                    ImageFilterSettings.from_config(config["image_filters"], "image_filters"))
        context = BuildContext([str(crawl)], "out", config, [])
        return cache, fingerprint(context, "images")

    base_cache, base_build = keys(defaults)
    settings = _settings_paths(defaults["download"], ("download",))
    settings += _settings_paths(defaults["image_filters"], ("image_filters",))
    for path, value in settings:
        config = load_config()
        section = config
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = _another(path[-1], value)
        cache, build = keys(config)
        assert (cache != base_cache) == (build != base_build) == (path not in fp.RUNTIME_ONLY), path


def test_output_relevant_leaves_out_exactly_the_listed_paths():
    settings = {"runner": {"a": 1}, "download": {"thread_count": 4, "timeout_s": 2}, "keep": {"runner": 1}}
    assert fp.output_relevant(settings) == {"download": {"timeout_s": 2}, "keep": {"runner": 1}}


def _pages(report: dict) -> int:
    return report["stages"]["extract"]["pages"]["in"]


def _crawl_files_of_documents(out: str) -> set[str]:
    """The crawl files the documents stage's written documents come from."""
    return {doc.warc_filename for doc in read_documents(parquet_files(stage_dir(out, "documents")))}


@pytest.mark.slow
def test_a_build_over_a_folder_redoes_its_documents_when_a_crawl_file_is_added_or_touched(tmp_path):
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    shutil.copy(WARCS / "warcfile.warc.gz", crawl)
    out = str(tmp_path / "out")
    config = load_config(overrides=FAST)

    first = run_build([str(crawl)], out, config, only=["documents"])
    assert first["resumed_stages"] == [] and _pages(first) == 1
    assert "clipped.warc.gz" not in _crawl_files_of_documents(out)
    again = run_build([str(crawl)], out, config, only=["documents"])
    assert again["resumed_stages"] == ["documents"]

    shutil.copy(WARCS / "clipped.warc.gz", crawl)  # one more page, with five pictures
    added = run_build([str(crawl)], out, config, only=["documents"])
    assert added["resumed_stages"] == []
    assert added["stages"]["read"]["files"]["in"] == 2 and _pages(added) == 2
    assert "clipped.warc.gz" in _crawl_files_of_documents(out)  # the new page reached the documents

    stamp = os.stat(crawl / "clipped.warc.gz").st_mtime_ns + 1_000_000_000
    os.utime(crawl / "clipped.warc.gz", ns=(stamp, stamp))
    touched = run_build([str(crawl)], out, config, only=["documents"])
    assert touched["resumed_stages"] == [] and _pages(touched) == 2
    assert run_build([str(crawl)], out, config, only=["documents"])["resumed_stages"] == ["documents"]


def test_overlapping_patterns_list_each_file_once_and_a_pattern_matching_nothing_adds_nothing(crawl):
    files = fp.read_files([str(crawl / "*.warc.gz"), str(crawl / "a.*"), str(crawl / "*.arc")])
    assert [Path(f.path).name for f in files] == ["a.warc.gz"]
