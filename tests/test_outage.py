"""An image host that goes down in the middle of `m3w build` stops the build within the breaker's window,
naming the failure family; re-running the same build with the host back ends with exactly the images,
sequences and shard bytes of an undisturbed build. A build whose images stage has transient failures
pending is not marked complete, and its re-run fetches exactly those URLs (issue 23, parts 1 and 2).

The sample crawl with 6 canary pages has 173 unique image URLs; the breaker's window is set to 60 items
here (the defaults' 300 are covered in tests/test_failures.py and tests/test_download_retry.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main as m3w
from pipeline.images.download import NETWORK_ERRORS, NOT_REQUESTED, results_from_parquet
from pipeline.sampledata.imagehost import ImageHost, Response
from pipeline.settings import load_config
from tests.test_build import tree_digest
from tests.test_download_retry import HostThatGoesDown, _closed_port

ANSWERED_BEFORE_OUTAGE = 100
WINDOW = 60
TRIP_AFTER = 42  # 70% (the default max_failure_share) of the 60 items in the window
THREADS = 4  # requests in flight when the breaker trips finish: at most 2 x threads more failures


class HealedHost(ImageHost):
    """The local image host where the sample crawl's transient failures (500, timeout) have passed."""

    def response_for(self, target: str) -> Response:
        return super().response_for(target.replace("/fail/500/", "/").replace("/fail/timeout/", "/"))


def build(crawl: Path, out: Path, port: int) -> int:
    settings = [f"download.rewrite_to=http://127.0.0.1:{port}", "download.allow_loopback=true",
                "download.timeout_s=1", "download.retries=0", f"download.thread_count={THREADS}",
                "image_filters.nsfw.enabled=false", "runner.direct_running_mode=in_memory",
                f"runner.circuit_breaker.window={WINDOW}", "runner.circuit_breaker.min_items=20", "canaries.pages=0"]
    args = ["build", "--input", str(crawl / "crawl.warc.gz"), "--output", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return m3w(args)


def report_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def stored_shards(out: Path) -> list[tuple[dict[str, Any], list]]:
    """(marker, results) of every download shard kept in the build's work folder."""
    shards = []
    for marker in sorted((out / "work" / "download" / "shards").glob("*.done.json")):
        results = results_from_parquet(marker.with_name(marker.name.replace(".done.json", ".parquet")).read_bytes())
        shards.append((json.loads(marker.read_text()), results))
    return shards


@pytest.fixture(scope="module")
def undisturbed(small_sample_crawl, tmp_path_factory) -> Path:
    """The sample crawl built with its image host up all along."""
    out = tmp_path_factory.mktemp("undisturbed") / "build"
    port = _closed_port()
    with ImageHost(small_sample_crawl / "images", port=port, timeout_sleep_s=3):
        assert build(small_sample_crawl, out, port) == 0
    return out


@pytest.mark.slow
def test_an_outage_mid_build_stops_it_and_a_rerun_completes_it_as_if_nothing_happened(
        small_sample_crawl, undisturbed, tmp_path, capsys):
    out = tmp_path / "build"
    port = _closed_port()
    with HostThatGoesDown(small_sample_crawl / "images", port=port, timeout_sleep_s=3,
                          answers=ANSWERED_BEFORE_OUTAGE) as host:
        assert build(small_sample_crawl, out, port) == 1
        assert host.went_down.is_set()
    err = capsys.readouterr().err
    assert f"m3w: stopped, download: {TRIP_AFTER} of {WINDOW} items failed with network (connection_error" in err
    assert "fix the cause and re-run the same command: fetched images are kept" in err
    assert not (out / "stages" / "images" / "_SUCCESS.json").exists()

    # The shard in progress was kept with what it fetched; the breaker stopped it within its window, and the
    # URLs after that were never requested. (The planted timeout, answered too late, is a network failure.)
    [(marker, results)] = stored_shards(out)
    reasons = [r.reason for r in results]
    failed, held_back = sum(reason in NETWORK_ERRORS for reason in reasons), reasons.count(NOT_REQUESTED)
    assert marker["stopped"] is True and sum(r.kept for r in results) > 0
    assert TRIP_AFTER <= failed <= TRIP_AFTER + 1 + 2 * THREADS <= WINDOW
    assert ANSWERED_BEFORE_OUTAGE - 1 <= len(results) - failed - held_back <= ANSWERED_BEFORE_OUTAGE
    assert held_back > 0

    # The host is back: the same command completes the build, asking only what had no answer.
    no_answer = set(load_config()["download"]["retry_next_run"]) | NETWORK_ERRORS | {NOT_REQUESTED}
    with ImageHost(small_sample_crawl / "images", port=port, timeout_sleep_s=3) as host:
        assert build(small_sample_crawl, out, port) == 0
        assert sorted(host.requested_targets()) == sorted(
            host.url_for(r.url).removeprefix(host.base_url) for r in results if r.reason in no_answer)
    assert "images: 3 of 173 image URLs failed transiently (http_500 2, timeout 1) and are pending: re-run the " \
           "same command to fetch only them" in capsys.readouterr().err
    resumed, whole = report_of(out), report_of(undisturbed)
    assert resumed["resumed_stages"] == ["documents"]
    for stage in ("download", "image_filter", "dedup_images", "shard"):
        for unit, entry in whole["stages"][stage].items():
            assert (resumed["stages"][stage][unit]["out"], resumed["stages"][stage][unit]["dropped"]) == \
                   (entry["out"], entry["dropped"]), (stage, unit)
    assert resumed["stages"]["shard"]["sequences"]["out"] == whole["stages"]["shard"]["sequences"]["out"] > 0
    def outcome(images: dict) -> dict:  # `requests` counts this run's requests: the re-run asks only the rest
        return {key: value for key, value in images.items() if key != "requests"}

    assert outcome(resumed["images"]) == outcome(whole["images"])
    assert tree_digest(out / "stages" / "shards") == tree_digest(undisturbed / "stages" / "shards")
    assert tree_digest(out / "stages" / "images") == tree_digest(undisturbed / "stages" / "images")


@pytest.mark.slow
def test_pending_retries_leave_the_images_stage_unfinished_and_the_rerun_fetches_exactly_them(
        small_sample_crawl, undisturbed, tmp_path, capsys):
    first = report_of(undisturbed)["images"]
    assert first["retry_pending"] == 3 and first["retry_pending_by_reason"] == {"http_500": 2, "timeout": 1}
    assert first["final_failures_by_reason"] == {"decode_error": 1, "http_404": 2, "opted_out_header": 1,
                                                 "wrong_content_type": 1}
    assert first["complete"] is False and first["pending_over_limit"] is False  # 3 of 173: exit 0, with a warning
    assert (undisturbed / "stages" / "shards" / "manifest.json").exists()  # everything else is written
    assert not (undisturbed / "stages" / "images" / "_SUCCESS.json").exists()
    pending = {r.url for _, results in stored_shards(undisturbed) for r in results
               if r.reason in first["retry_pending_by_reason"]}
    assert len(pending) == 3

    out = tmp_path / "build"
    shutil.copytree(undisturbed, out)
    port = _closed_port()
    with HealedHost(small_sample_crawl / "images", port=port) as host:  # the transient failures have passed
        assert build(small_sample_crawl, out, port) == 0
        asked = host.requested_targets()
    assert sorted(asked) == sorted(host.url_for(url).removeprefix(host.base_url) for url in pending)
    again = report_of(out)
    assert again["resumed_stages"] == ["documents"]
    assert again["images"]["retry_pending"] == 0 and again["images"]["complete"] is True
    assert again["images"]["final_failures_by_reason"] == first["final_failures_by_reason"]
    assert again["stages"]["download"]["urls"]["info"]["retried_from_earlier_run"] == 3
    assert again["stages"]["download"]["urls"]["out"] == report_of(undisturbed)["stages"]["download"]["urls"]["out"] + 3
    assert (out / "stages" / "images" / "_SUCCESS.json").exists()

    assert "pending" not in capsys.readouterr().err

    with ImageHost(small_sample_crawl / "images", port=port) as host:  # complete: nothing is asked again
        assert build(small_sample_crawl, out, port) == 0
        assert host.requested_targets() == []
    assert report_of(out)["resumed_stages"] == ["documents", "images", "shards"]
