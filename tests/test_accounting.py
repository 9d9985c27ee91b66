"""Nothing disappears silently: per-stage balance, continuity between stages, and what a build does when it breaks."""

from __future__ import annotations

import json

import pytest

import pipeline.jobs.build as build
from pipeline.core.accounting import broken_links, empty_result, running, stage_table, unbalanced
from pipeline.settings import load_config

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


def test_a_continuous_run_is_clean():
    table = stage_table(counts(read=(10, 9, {"not_html": 1}), extract=(9, 8, {"no_text": 1}), filter=(8, 8, {}),
                               shard=(8, 8, {})))
    assert broken_links(table, FLOW) == []


def test_a_stage_without_counters_after_one_that_emitted_items_lost_them():
    table = stage_table(counts(read=(10, 9, {"not_html": 1})))  # every page vanished before extract counted
    assert broken_links(table, FLOW) == ["read/records out=9 but extract/pages counted nothing"]
    table = stage_table(counts(read=(10, 9, {"not_html": 1}), filter=(9, 8, {"spam": 1}), shard=(8, 8, {})))
    assert broken_links(table, FLOW) == ["read/records out=9 but extract/pages counted nothing",
                                         "extract/pages out=0 but filter/documents in=9"]


def test_a_stage_after_one_that_emitted_nothing_may_count_nothing():
    table = stage_table(counts(read=(10, 9, {"not_html": 1}), extract=(9, 0, {"no_text": 9})))
    assert broken_links(table, FLOW) == []


def test_a_stage_the_config_switches_off_is_not_expected_to_count():
    flow = [("filter", "documents"), ("dedup_url", "documents"), ("dedup_exact", "documents")]
    table = stage_table({"filter|documents|in": 5, "filter|documents|out": 5,
                         "dedup_exact|documents|in": 5, "dedup_exact|documents|out": 4,
                         "dedup_exact|documents|drop|exact_duplicate": 1})
    assert broken_links(table, flow) == ["filter/documents out=5 but dedup_url/documents counted nothing",
                                         "dedup_url/documents out=0 but dedup_exact/documents in=5"]
    switched_off = load_config(overrides=["dedup.url.enabled=false"])
    assert running(flow, switched_off) == [("filter", "documents"), ("dedup_exact", "documents")]
    assert broken_links(table, running(flow, switched_off)) == []
    assert running(flow, load_config()) == flow


def test_an_empty_result_names_where_the_flow_reached_zero_and_why():
    """The issue's wget crawl: every picture refused as `unsafe_address`, so every document lost its images."""
    from pipeline.core.stages import document_flow

    table = stage_table({
        "read|records|in": 40, "read|records|out": 36, "read|records|drop|not_response": 4,
        "download|documents|in": 36, "download|documents|out": 0, "download|documents|drop|no_images": 36,
        "download|images|in": 118, "download|images|out": 0, "download|images|drop|unsafe_address": 118,
        "filter|documents|in": 36, "filter|documents|out": 36})
    assert empty_result(table, [("read", "records"), ("filter", "documents"), ("download", "documents"),
                                ("shard", "documents")]) == (
        "the run wrote nothing from 40 records read: download dropped every image (unsafe_address 118) and "
        "every document (no_images 36)")
    # The stage that emptied the flow is named with its top three reasons, in order, and how many more there are.
    drops = {"language": 5, "no_text": 9, "spam": 2, "nsfw": 1, "too_short": 2}
    table = stage_table(counts(read=(19, 19, {}), extract=(19, 0, drops)))
    assert empty_result(table, FLOW) == ("the run wrote nothing from 19 records read: extract dropped every page "
                                         "(no_text 9, language 5, spam 2, 2 more reasons)")
    assert empty_result(stage_table({}), document_flow()) is None  # nothing read: nothing to explain
    assert empty_result(table, FLOW[:1]) is None  # the read alone wrote 19


def test_sequences_are_what_a_build_writes():
    table = stage_table({**counts(read=(3, 3, {}), extract=(3, 3, {}), filter=(3, 3, {}), shard=(3, 3, {})),
                         "shard|sequences|in": 4, "shard|sequences|out": 0,
                         "shard|sequences|drop|too_few_images": 4})
    assert empty_result(table, FLOW) == ("the run wrote nothing from 3 records read: shard dropped every sequence "
                                         "(too_few_images 4)")


@pytest.fixture
def fake_crawl(tmp_path_factory, monkeypatch) -> None:
    """A working folder holding `in.warc.gz`, the fake builds' input: a build fingerprints the files it reads."""
    folder = tmp_path_factory.mktemp("crawl")
    (folder / "in.warc.gz").write_bytes(b"")
    monkeypatch.chdir(folder)


def fake_stages(monkeypatch, stage_counts: dict[str, dict[str, int]]) -> None:
    """Replace the three Beam jobs by ones that only report counters (what `_run` returns)."""
    monkeypatch.setattr(build, "STAGES", [(name, lambda ctx, out, name=name: name) for name in stage_counts])
    monkeypatch.setattr(build, "_run", lambda name, config: (stage_counts[name], "committed"))
    monkeypatch.setattr(build.registry, "document_flow", lambda: FLOW)
    monkeypatch.setattr(build, "LAST_STAGE", {"documents": "extract", "images": "filter", "shards": "shard"})


def test_a_stage_that_loses_documents_is_not_marked_complete(monkeypatch, tmp_path, fake_crawl):
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


def test_a_build_job_whose_items_all_vanish_before_its_last_stage_is_not_marked_complete(
        monkeypatch, tmp_path, fake_crawl):
    stage_counts = {"documents": counts(read=(10, 9, {"not_html": 1})),  # extract, its last stage, counted nothing
                    "images": {}, "shards": {}}
    fake_stages(monkeypatch, stage_counts)
    report = build.run_build(["in.warc.gz"], str(tmp_path), load_config())
    assert report["broken_links"] == ["read/records out=9 but extract/pages counted nothing"]
    assert not (tmp_path / "stages" / "documents" / build.MARKER).exists()


def test_a_build_that_writes_nothing_from_its_input_fails_naming_the_stage(monkeypatch, tmp_path, capsys, fake_crawl):
    from pipeline.commands import exit_status

    stage_counts = {"documents": counts(read=(10, 9, {"not_html": 1}), extract=(9, 0, {"no_text": 9})),
                    "images": {}, "shards": {}}
    fake_stages(monkeypatch, stage_counts)
    report = build.run_build(["in.warc.gz"], str(tmp_path), load_config())
    assert report["broken_links"] == [] and report["unverified"] is None
    assert report["empty"] == "the run wrote nothing from 10 records read: extract dropped every page (no_text 9)"
    assert json.loads((tmp_path / "report.json").read_text())["empty"] == report["empty"]
    assert exit_status(report) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"m3w: {report['empty']}; use --allow-empty if you expect an empty result"]
    assert exit_status(report, allow_empty=True) == 0


def test_a_run_whose_runner_returns_no_metrics_cannot_be_verified(monkeypatch, tmp_path, capsys, fake_crawl):
    import pipeline.jobs.stages as jobs
    from pipeline.commands import exit_status

    monkeypatch.setattr(jobs, "query_counts", lambda result: {})
    monkeypatch.setattr(jobs, "metric_kind", lambda result: "none")
    report = jobs.finish_report(None, str(tmp_path), ["dedup_read", "dedup_url", "dedup_exact"], 0.0)
    assert report["broken_links"] == [] and report["empty"] is None  # nothing to compare...
    assert report["unverified"].startswith("the runner returned no m3w metrics")  # ...which proves nothing
    assert exit_status(report, allow_empty=True) == 1
    assert capsys.readouterr().err.splitlines() == [f"m3w: cannot verify the run: {report['unverified']}"]

    fake_stages(monkeypatch, {"documents": {}, "images": {}, "shards": {}})
    built = build.run_build(["in.warc.gz"], str(tmp_path / "build"), load_config())
    assert built["unverified"] == report["unverified"] and exit_status(built) == 1
