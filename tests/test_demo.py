"""`m3w demo`, the README's first command, end to end on a small sample crawl (the full one is `make demo`)."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main


@pytest.mark.slow
def test_demo_runs_the_whole_journey_and_a_verdict_short_of_pass_fails_it(tmp_path, capsys):
    out = tmp_path / "demo"
    # Five training steps cannot teach the canaries: the verdict is not PASS, so the (strict) demo exits 1
    # even though the pipeline balanced and the shards validated.
    code = main(["demo", "--output", str(out), "--canaries", "24", "--set", "smoke.train.steps=5",
                 "--set", "smoke.train.control_run=false"])
    printed = capsys.readouterr().out
    report = json.loads((out / "build" / "report.json").read_text())
    assert report["smoke"]["status"] != "pass"
    assert code == 1 and "pipeline and shards: OK" in printed and "demo FAILED" in printed
    assert not report["unbalanced"] and not report["broken_links"]
    manifest = json.loads((out / "build" / "stages" / "shards" / "manifest.json").read_text())
    assert report["shards"]["samples"] == manifest["total_samples"] > 0
    page = (out / "build" / "report.html").read_text()
    assert f"<td>samples</td><td>{manifest['total_samples']}</td>" in page
    assert "Smoke-training verdict" in page and "data:image/jpeg;base64," in page  # the samples survive
    assert (out / "smoke" / "smoke_report.json").exists()
    assert str(out / "build" / "report.html") in printed
