"""Nothing disappears silently: per-stage balance, continuity between stages, and what a build does when it breaks."""

from __future__ import annotations

import json

import pipeline.jobs.build as build
from pipeline.config import load_config
from pipeline.core.accounting import broken_links, stage_table, unbalanced

FLOW = [("read", "records"), ("extract", "pages"), ("filter", "documents"), ("shard", "documents")]


def counts(**stages: tuple[int, int, dict[str, int]]) -> dict[str, int]:
    """{'filter': (in, out, drops)} → Beam-style counter names (unit taken from FLOW)."""
    units = dict(FLOW)
    out: dict[str, int] = {}
    for stage, (seen, kept, drops) in stages.items():
        unit = units[stage]
        out[f"{stage}|{unit}|in"] = seen
        out[f"{stage}|{unit}|out"] = kept
        for reason, n in drops.items():
            out[f"{stage}|{unit}|drop|{reason}"] = n
    return out


def test_a_gap_between_balanced_stages_is_reported():
    table = stage_table(counts(read=(10, 9, {"not_html": 1}), extract=(9, 7, {"no_text": 2}),
                               filter=(6, 6, {}), shard=(6, 6, {})))
    assert unbalanced(table) == []  # each stage balances on its own...
    assert broken_links(table, FLOW) == ["extract/pages out=7 but filter/documents in=6"]  # ...one went missing


def test_absent_stages_are_skipped_and_a_continuous_run_is_clean():
    table = stage_table(counts(read=(10, 9, {"not_html": 1}), filter=(9, 8, {"spam": 1}), shard=(8, 8, {})))
    assert broken_links(table, FLOW) == []


def fake_stages(monkeypatch, stage_counts: dict[str, dict[str, int]]) -> None:
    """Replace the three Beam jobs by ones that only report counters (what `_run` returns)."""
    monkeypatch.setattr(build, "STAGES", [(name, lambda ctx, out, name=name: name) for name in stage_counts])
    monkeypatch.setattr(build, "_run", lambda name, config: (stage_counts[name], "committed"))
    monkeypatch.setattr(build.registry, "document_flow", lambda: FLOW)


def test_a_stage_that_loses_documents_is_not_marked_complete(monkeypatch, tmp_path):
    stage_counts = {"documents": counts(read=(10, 9, {"not_html": 1}), extract=(9, 7, {"no_text": 2})),
                    "images": counts(filter=(6, 6, {})),  # one document lost on the way in
                    "shards": counts(shard=(6, 6, {}))}
    fake_stages(monkeypatch, stage_counts)
    report = build.run_build(["in.warc.gz"], str(tmp_path), load_config())
    assert report["broken_links"] == ["extract/pages out=7 but filter/documents in=6"]
    assert (tmp_path / "stages" / "documents" / build.MARKER).exists()
    assert not (tmp_path / "stages" / "images" / build.MARKER).exists()  # a re-run redoes it
    assert (tmp_path / "stages" / "shards" / build.MARKER).exists()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["broken_links"] == report["broken_links"]
    assert "lost between stages" in (tmp_path / "report.html").read_text()

    # The re-run trusts the completed prefix only: the stage after the redone one is redone as well.
    stage_counts["images"], stage_counts["shards"] = counts(filter=(7, 7, {})), counts(shard=(7, 7, {}))
    again = build.run_build(["in.warc.gz"], str(tmp_path), load_config())
    assert again["resumed_stages"] == ["documents"] and again["broken_links"] == []
    assert (tmp_path / "stages" / "images" / build.MARKER).exists()


def test_each_stage_job_checks_the_links_it_runs():
    from pipeline.core.accounting import flow_of

    assert flow_of(["dedup_read", "dedup_url", "dedup_exact", "dedup_near", "dedup_paragraphs"]) == [
        ("dedup_read", "documents"), ("dedup_url", "documents"), ("dedup_exact", "documents"),
        ("dedup_near", "documents"), ("dedup_paragraphs", "documents")]
    assert flow_of(["filter", "filter_paragraphs"]) == [("filter", "documents")]  # paragraphs are not documents
    assert flow_of(["read", "gate", "extract"]) == [("read", "records"), ("gate", "pages"), ("extract", "pages")]


def test_a_stage_command_exits_1_when_its_runner_loses_documents(monkeypatch, tmp_path):
    """`m3w dedup` (and every stage command) reports documents lost between its steps and fails."""
    import pipeline.jobs.stages as jobs
    from pipeline.commands import exit_status

    lost = {"dedup_read|documents|in": 10, "dedup_read|documents|out": 10,
            "dedup_url|documents|in": 10, "dedup_url|documents|out": 9, "dedup_url|documents|drop|duplicate_url": 1,
            "dedup_exact|documents|in": 7, "dedup_exact|documents|out": 7}  # two vanished on the way
    monkeypatch.setattr(jobs, "query_counts", lambda result: lost)
    monkeypatch.setattr(jobs, "metric_kind", lambda result: "committed")
    report = jobs.finish_report(None, str(tmp_path), ["dedup_read", "dedup_url", "dedup_exact"], 0.0)
    assert report["unbalanced"] == []
    assert report["broken_links"] == ["dedup_url/documents out=9 but dedup_exact/documents in=7"]
    assert json.loads((tmp_path / "report.json").read_text())["broken_links"] == report["broken_links"]
    assert exit_status(report) == 1
    assert exit_status({"unbalanced": [], "broken_links": []}) == 0
