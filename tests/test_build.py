"""`m3w build` end to end: every stage, the report, resuming after a kill, and runner-independent output."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.stages import BY_NAME
from pipeline.jobs.build import run_build
from pipeline.sampledata.imagehost import ImageHost
from pipeline.settings import load_config


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of the shard output, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "_SUCCESS.json"}


def overrides(host: ImageHost, mode: str) -> list[str]:
    return ["download.allow_loopback=true", f"download.rewrite_to={host.base_url}",
            f"runner.direct_running_mode={mode}", "canaries.pages=0"]  # canaries: tests/test_canaries.py


def build_args(crawl: Path, out: Path, host: ImageHost, mode: str) -> list[str]:
    args = ["build", "--input", str(crawl / "crawl.warc.gz"), "--output", str(out)]
    for item in overrides(host, mode):
        args += ["--set", item]
    return args


@pytest.mark.slow
def test_killed_build_resumes_to_identical_shards_and_runners_agree(small_sample_crawl, tmp_path):
    with ImageHost(small_sample_crawl / "images") as host:
        # 1. Uninterrupted, on the multi-process runner.
        whole = tmp_path / "whole"
        config = load_config(overrides=overrides(host, "multi_processing"))
        report = run_build([str(small_sample_crawl / "crawl.warc.gz")], str(whole), config)
        assert report["unbalanced"] == [] and report["broken_links"] == []
        assert report["resumed_stages"] == []

        # 2. Killed once the first stage is complete and the second one is under way...
        cut = tmp_path / "cut"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen([sys.executable, "-m", "pipeline.cli",
                                    *build_args(small_sample_crawl, cut, host, "in_memory")],
                                   env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        marker = cut / "stages" / "documents" / "_SUCCESS.json"
        deadline = time.time() + 300
        while not marker.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "the first stage never completed"
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not (cut / "stages" / "shards" / "_SUCCESS.json").exists()

        # 3. ...then run again, single-process: the finished stage is skipped, the rest redone.
        config = load_config(overrides=overrides(host, "in_memory"))
        resumed = run_build([str(small_sample_crawl / "crawl.warc.gz")], str(cut), config)
        assert "documents" in resumed["resumed_stages"]

    whole_digest = tree_digest(whole / "stages" / "shards")
    assert any(name.endswith(".tar") for name in whole_digest)
    assert "manifest.json" in whole_digest
    assert tree_digest(cut / "stages" / "shards") == whole_digest
    assert tree_digest(cut / "stages" / "images") == tree_digest(whole / "stages" / "images")

    # The report: every stage, balanced, a funnel from records to sequences, and an HTML page.
    saved = json.loads((whole / "report.json").read_text())
    assert [stage for stage in saved["stages"] if stage not in BY_NAME] == []  # every counter names a registered stage
    for stage in ("read", "gate", "extract", "filter", "dedup_near", "download", "image_filter", "dedup_images",
                  "shard"):
        assert stage in saved["stages"], stage
    steps = [s["step"] for s in saved["funnel"]]
    assert steps[0] == "records read" and steps[-1] == "sequences written"
    assert saved["funnel"][-1]["count"] > 0
    html = (whole / "report.html").read_text()
    assert "Funnel" in html and "data:image/jpeg;base64," in html
