"""Alignment canaries ride along every `m3w build`: one maker (pages and pictures in a WARC), counted apart, written
to shard files of their own, never in the user's data, and a smoke verdict that says why when they are missing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import pytest
from PIL import Image as PILImage

from pipeline.canaries.riding import canary_config, canary_pages, ensure_canary_warc, warc_name
from pipeline.canaries.settings import CanarySettings
from pipeline.canaries.shapes import CANARY_SIZE, RIDING_HOST, is_canary, is_canary_url
from pipeline.core.accounting import StageCounters, counted_apart, split_group
from pipeline.report.canaries import canary_report, manifest_note, setting_of, summary
from pipeline.settings import load_config
from train_smoke.config import VerdictConfig, smoke_settings
from train_smoke.verdict import _merge_figures, why_too_few_canaries

FOUR = ["circle", "ring", "stripes", "dots"]


def settings(pages: int = 3, seed: int = 0) -> CanarySettings:
    return CanarySettings(pages=pages, classes=FOUR, seed=seed)


# -- the maker -------------------------------------------------------------------------------------------------


def warc_responses(path: Path) -> list[tuple[str, str, str, bytes]]:
    """(url, HTTP status, content type, payload) of every response record."""
    from warcio.archiveiterator import ArchiveIterator

    with path.open("rb") as handle:
        return [(r.rec_headers.get_header("WARC-Target-URI"), r.http_headers.get_statuscode(),
                 r.http_headers.get_header("Content-Type"), r.content_stream().read())
                for r in ArchiveIterator(handle) if r.rec_type == "response"]


def test_the_canary_warc_holds_every_page_and_its_pictures_as_http_200_responses(tmp_path):
    path = Path(ensure_canary_warc(str(tmp_path), settings(pages=3)))
    responses = warc_responses(path)
    pages = list(canary_pages(settings(pages=3)))
    assert [r[0] for r in responses if r[2].startswith("text/html")] == [p.url for p in pages]
    pictures = {url: body for url, _, kind, body in responses if kind == "image/jpeg"}
    assert {r[1] for r in responses} == {"200"}
    for page in pages:
        html = page.html.decode()
        assert 4 <= len(page.pictures) <= 6 and page.url.startswith(f"https://{RIDING_HOST}/")
        for picture in page.pictures:  # each <img> of the page is in the archive, a decodable canary picture
            assert f'src="{picture.url}"' in html and picture.url in pictures
            assert f"<p>{picture.cls.capitalize()}. " in html  # its class word opens the next paragraph
            with PILImage.open(io.BytesIO(pictures[picture.url])) as image:
                assert image.size == (CANARY_SIZE, CANARY_SIZE)
    assert len(pictures) == sum(len(p.pictures) for p in pages)
    assert all(is_canary_url(url) for url, *_ in responses)


def test_the_same_settings_find_their_warc_and_other_settings_replace_it(tmp_path):
    first = Path(ensure_canary_warc(str(tmp_path), settings(pages=2)))
    stamp = first.stat().st_mtime_ns
    assert Path(ensure_canary_warc(str(tmp_path), settings(pages=2))).stat().st_mtime_ns == stamp  # not rewritten
    other = Path(ensure_canary_warc(str(tmp_path), settings(pages=2, seed=1)))
    assert other.name == warc_name(settings(pages=2, seed=1)) != first.name
    assert not first.exists() and other.exists()
    # Deterministic bytes: written again elsewhere, the same file.
    again = Path(ensure_canary_warc(str(tmp_path / "again"), settings(pages=2, seed=1)))
    assert again.read_bytes() == other.read_bytes()


def test_canaries_run_under_the_users_config_with_english_admitted_and_their_archive_only():
    base = load_config()
    config, notes = canary_config(base)
    assert config["filters"] == base["filters"] and notes == []  # English is among the targets already
    assert config["download"]["from_archive"] is True and config["download"]["network"] is False
    for kept in (["eng_Latn", "de"], ["en"], []):  # English by any name, or no language rule: nothing changes
        config, notes = canary_config(load_config(overrides=[f"filters.language.languages=[{', '.join(kept)}]"]))
        assert config["filters"]["language"]["languages"] == kept and notes == []
    german = load_config(overrides=["filters.language.languages=[de, fr]"])
    config, notes = canary_config(german)
    assert config["filters"]["language"]["languages"] == ["de", "fr", "en"]
    assert config["filters"]["language"]["threshold"] == german["filters"]["language"]["threshold"]
    assert len(notes) == 1 and "['de', 'fr'] leaves English out" in notes[0]
    assert german["filters"]["language"]["languages"] == ["de", "fr"]  # the user's config is left alone


# -- counted apart ---------------------------------------------------------------------------------------------


def test_counters_made_inside_counted_apart_count_under_the_group_even_after_pickling():
    plain = StageCounters("filter")
    with counted_apart("canary"):
        grouped = StageCounters("filter")
    after = StageCounters("filter")
    assert (plain.prefix, grouped.prefix, after.prefix) == ("", "canary:", "")
    assert pickle.loads(pickle.dumps(grouped)).prefix == "canary:"
    counts = {"filter|documents|in": 5, "canary:filter|documents|in": 3, "canary:filter|documents|out": 3}
    assert split_group(counts, "canary") == ({"filter|documents|in": 5},
                                             {"filter|documents|in": 3, "filter|documents|out": 3})


def canary_counts(kept_by_filter: int, pages: int = 10) -> dict[str, int]:
    """Counters of a canary branch: `pages` pages of 5 pictures; the filter keeps `kept_by_filter` documents."""
    lost = pages - kept_by_filter
    counts = {"read|records|in": 1 + 7 * pages, "read|records|out": pages,  # warcinfo, requests, pages
              "read|records|drop|not_response": 1 + 6 * pages,
              "read|images|in": 5 * pages, "read|images|out": 5 * pages,
              "gate|pages|in": pages, "gate|pages|out": pages, "extract|pages|in": pages, "extract|pages|out": pages,
              "filter|documents|in": pages, "filter|documents|out": kept_by_filter,
              "filter|documents|drop|gopher_word_count": lost,
              "filter_paragraphs|paragraphs|in": 50, "filter_paragraphs|paragraphs|out": 49,
              "filter_paragraphs|paragraphs|drop|obelics_par_stopwords": 1}
    if kept_by_filter:
        counts.update({"download|documents|in": kept_by_filter, "download|documents|out": kept_by_filter,
                       "image_filter|documents|in": kept_by_filter, "image_filter|documents|out": kept_by_filter,
                       "shard|documents|in": kept_by_filter, "shard|documents|out": kept_by_filter,
                       "shard|sequences|in": kept_by_filter, "shard|sequences|out": kept_by_filter})
    return {name: n for name, n in counts.items() if n}


def test_the_report_follows_the_canaries_through_every_stage_and_names_what_dropped_them():
    config = load_config(overrides=["canaries.pages=10"])
    section = canary_report(canary_counts(kept_by_filter=7), config, [], "shard")
    rows = {row["stage"]: row for row in section["funnel"]}
    assert rows["read"] == {"stage": "read", "pages": 10, "pictures": 50, "dropped": {}}  # requests: expected drops
    assert rows["extract"]["documents"] == 10 and rows["filter"]["documents"] == 7
    assert rows["shard"]["sequences"] == 7
    assert "dedup_near" not in rows and "dedup_near" in section["exempt_stages"]  # canaries are never deduplicated
    assert section["lost"][0] == {"stage": "filter", "unit": "documents", "reason": "gopher_word_count", "count": 3,
                                  "setting": "filters.document.gopher_quality"}
    assert section["lost"][-1]["unit"] == "paragraphs"  # a removed title or note comes last
    assert section["summary"].startswith("10 canary pages → 7 canary sequences; ")
    assert ("filter dropped 3 canary documents (gopher_word_count: filters.document.gopher_quality)"
            in section["summary"])
    assert section["unbalanced"] == [] and section["broken_links"] == []


def test_a_setting_that_removes_every_canary_is_named_in_the_report_and_the_manifest():
    config = load_config(overrides=["canaries.pages=10"])
    section = canary_report(canary_counts(kept_by_filter=0), config, [], "shard")
    assert section["summary"].startswith("none of the 10 canary pages reached the shards: filter dropped 10 canary "
                                         "documents (gopher_word_count: filters.document.gopher_quality)")
    note = manifest_note(section, 10)
    assert [loss["reason"] for loss in note["lost"]] == ["gopher_word_count"]  # no paragraph in the note
    assert summary(0, 0, []).startswith("no alignment canaries (canaries.pages: 0, `m3w build --canaries 0`)")


@pytest.mark.parametrize("stage, reason, setting", [
    ("filter", "language", "filters.language"), ("gate", "language", "filters.language and filters.gate.language"),
    ("filter", "obelics_par_stopwords", "filters.paragraph"),
    ("filter", "obelics_stopwords", "filters.document.obelics"),
    ("filter", "gopher_dup_5_grams", "filters.document.gopher_repetition"),
    ("image_filter", "min_side", "image_filters.min_side"),
    ("shard", "too_few_images", "shards.min_images_per_sequence"),
    ("extract", "overlaid", "image_nodes.place.overlay_labels"), ("extract", "in_share_bar", "image_nodes.place"),
    ("image_filter", "in_nsfw_document", "image_filters.nsfw"),
    ("shard", "no_target", None)])
def test_each_drop_reason_names_the_setting_behind_it(stage, reason, setting):
    assert setting_of(stage, reason) == setting


# -- the verdict's reasons -------------------------------------------------------------------------------------


def verdict_config() -> VerdictConfig:
    return smoke_settings(load_config()).verdict


def test_a_verdict_without_enough_canaries_says_why():
    cfg = verdict_config()
    assert why_too_few_canaries([None], 0, cfg).startswith("these shards carry no alignment canaries")
    assert why_too_few_canaries([{"pages": 0, "shards": [], "samples": 0, "lost": []}], 0, cfg) == (
        "their build turned the alignment canaries off (canaries.pages: 0, `m3w build --canaries 0`)")
    gone = {"pages": 400, "shards": [], "samples": 0,
            "lost": [{"text": "filter dropped 400 canary documents (obelics_stopwords: filters.document.obelics)"}]}
    assert why_too_few_canaries([gone], 0, cfg) == (
        "none of their build's 400 canary pages reached the shards: filter dropped 400 canary documents "
        "(obelics_stopwords: filters.document.obelics)")
    few = {"pages": 5, "shards": [{"file": "canaries/shard-000000.tar"}], "samples": 6, "lost": []}
    assert why_too_few_canaries([few], 3, cfg).startswith(
        f"3 held-out canary events from 6 canary sequences, fewer than smoke.verdict.min_canary_events "
        f"({cfg.min_canary_events}): more canary pages (`m3w build --canaries N`)")


def figures(events: int, targets: int) -> dict[str, int]:
    return {"canary_events": events, "targets_seeing_an_image": targets}


def test_riding_canaries_decide_and_the_general_criteria_come_from_the_users_own_data():
    per_set = {"shards": figures(0, 900), "shards:canaries": figures(450, 2000)}
    merged = _merge_figures(per_set, riding=["shards:canaries"])
    assert merged["canary"] is per_set["shards:canaries"] and merged["general"] is per_set["shards"]
    assert merged["general_is_own_data"]
    alone = _merge_figures({"shards:canaries": figures(450, 2000)}, riding=["shards:canaries"])
    assert alone["general"]["canary_events"] == 450 and not alone["general_is_own_data"]  # no data of its own
    mixed = _merge_figures(per_set)  # canaries inside the data (the mutation table's sets): as before
    assert mixed["general"] is per_set["shards:canaries"] and not mixed["general_is_own_data"]


def test_documents_are_told_apart_by_their_mark_and_canary_urls_by_their_host():
    from schemas.document import Document

    assert is_canary(Document("a", "https://canaries.m3w.test/notes/0/00001.html", [], metadata={"canary": True}))
    assert not is_canary(Document("b", "https://canaries.m3w.test/notes/0/00001.html", []))
    assert is_canary_url(f"https://{RIDING_HOST}/pictures/0/00001-2.jpg")
    assert not is_canary_url("https://img.sample-web.test/photos/a.jpg")


def test_the_canaries_flag_stands_for_the_config_key_and_exports_never_hold_a_canary():
    import argparse

    from pipeline.commands import with_canaries
    from pipeline.config import ConfigError
    from pipeline.export.writer import ExportSettings, Mmc4DoFn, PairsDoFn
    from pipeline.jobs.canaries import as_canary
    from train_smoke.canary_shards import canary_documents

    args = argparse.Namespace(set=["shards.seq_len=64"], canaries=0)
    with_canaries(args)
    assert args.set == ["shards.seq_len=64", "canaries.pages=0"]
    with pytest.raises(ConfigError, match="canaries.pages"):
        load_config(overrides=["canaries.pages=-1"])
    export = ExportSettings.from_config(load_config()["export"], "export")
    doc = canary_documents(1, image_size=32, page_host=RIDING_HOST)[0]
    assert list(Mmc4DoFn(export.mmc4).process(doc))  # an unmarked page of the canary host is any page...
    assert list(Mmc4DoFn(export.mmc4).process(as_canary(doc))) == []  # ...a marked one is never exported
    assert list(PairsDoFn(export.pairs).process(as_canary(doc))) == []


# -- the shard writer: canary shards apart, the user's data untouched --------------------------------------------


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """`m3w shard` over the same user documents, alone and with marked canary documents beside them."""
    from pipeline.jobs.canaries import as_canary
    from tests.test_shards_helpers import build_shards, make_document, write_documents
    from train_smoke.canary_shards import canary_documents

    root = tmp_path_factory.mktemp("canary-shards")
    own = [make_document(i, n_images=1 + i % 3, words_per_text=20) for i in range(6)]
    canaries = [as_canary(doc) for doc in canary_documents(8, images_per_doc=(2, 3), classes=tuple(FOUR),
                                                           image_size=32, page_host=RIDING_HOST)]
    write_documents(own, root / "alone")
    write_documents(own + canaries, root / "with")
    args = ("shards.seq_len=64", "shards.image_size=32", "shards.docs_parquet_images=references")
    reports = {name: build_shards(root / name, root / f"out-{name}", *args) for name in ("alone", "with")}
    return root, reports, len(canaries)


def test_canary_documents_go_to_shard_files_of_their_own_and_leave_the_users_bytes_alone(written):
    root, reports, n_canaries = written
    alone, both = tree(root / "out-alone"), tree(root / "out-with")
    data = {name: digest for name, digest in alone.items() if name.startswith(("shards/", "docs/", "tokenizer"))}
    assert data and {name: both[name] for name in data} == data  # shards/, docs/, tokenizer.json: the same bytes
    assert sorted(name for name in both if name.startswith("canaries/")) == ["canaries/shard-000000.tar"]
    manifest = json.loads((root / "out-with" / "manifest.json").read_text())
    plain = json.loads((root / "out-alone" / "manifest.json").read_text())
    assert "canaries" not in plain and manifest["shards"] == plain["shards"]
    canaries = manifest["canaries"]
    assert [entry["file"] for entry in canaries["shards"]] == ["canaries/shard-000000.tar"]
    assert canaries["documents"] == n_canaries and canaries["samples"] == canaries["shards"][0]["samples"] > 0
    assert reports["with"]["stages"]["canary:shard"]["documents"]["in"] == n_canaries  # counted apart
    assert reports["with"]["stages"]["shard"] == reports["alone"]["stages"]["shard"]


def test_the_smoke_trainer_and_inspect_read_the_canaries_and_a_webdataset_glob_does_not(written):
    from pipeline.inspect.validate import validate
    from schemas.shards import canary_shard_paths, iter_samples, shard_paths
    from train_smoke.data import open_shard_sets

    root, _, _ = written
    out = str(root / "out-with")
    assert all(os.sep + "shards" + os.sep in path for path in shard_paths(out))
    assert [os.path.basename(os.path.dirname(p)) for p in canary_shard_paths(out)] == ["canaries"]
    assert not any(is_canary_url(sample.metadata["url"]) for sample in iter_samples(out))
    sets = open_shard_sets([out], None)
    assert [(s.name, s.canaries) for s in sets] == [("out-with", False), ("out-with:canaries", True)]
    result = validate(out)
    assert result.ok, result.problems[:3]
    assert result.shards == len(shard_paths(out)) + 1  # the canary shard is validated too


# -- end to end: a real crawler's WARC built with riding canaries, and the same build without -------------------


def smoke(shards: Path, out: Path, *sets: str) -> tuple[int, dict]:
    from pipeline.cli import main

    code = main(["smoke", str(shards), "--output", str(out), "--profile", "tiny", "--quiet",
                 *(arg for item in sets for arg in ("--set", item))])
    return code, json.loads((out / "smoke_report.json").read_text())


@pytest.mark.slow
def test_a_real_build_with_riding_canaries_passes_on_them_and_reports_its_own_data(wget_builds, tmp_path):
    shards = wget_builds / "with" / "stages" / "shards"
    # One training run (1000 steps, ~4 CPU-minutes at the tiny profile; no control run, no probes: neither changes
    # a required criterion).
    code, report = smoke(shards, tmp_path, "smoke.train.control_run=false", "smoke.train.probe_every=0")
    verdict = report["verdict"]
    assert code == 0 and verdict["status"] == "pass", verdict["summary"]
    assert verdict["canaries_used"] and verdict["canary_events"] >= 100
    checks = verdict["checks"]
    for mode in ("phi", "phi_next"):
        assert checks[f"canary_shuffle_gap[{mode}]"]["required"] and checks[f"canary_shuffle_gap[{mode}]"]["passed"]
        assert checks[f"shuffle_gap[{mode}]"]["level"] == "reported"  # the build's own sequences: evidence
        assert checks[f"shuffle_gap[{mode}]"]["evaluated"]
    assert set(report["datasets"]) == {"shards", "shards:canaries"}
    loss = report["training"]["main"]["loss"]  # the build's own data stopped after smoke.train.data_max_epochs
    assert 0 < len(loss["shards"]) < len(loss["shards:canaries"]) == 1000  # riding_canary_steps (tiny)


@pytest.mark.slow
def test_without_canaries_the_same_data_is_written_and_the_verdict_says_why_it_cannot_judge(wget_builds, tmp_path):
    with_, without = wget_builds / "with", wget_builds / "without"
    for folder in ("stages/shards/shards", "stages/shards/docs", "stages/images", "stages/documents"):
        own = {name: digest for name, digest in tree(without / folder).items() if not name.startswith("_SUCCESS")}
        assert own and {name: tree(with_ / folder).get(name) for name in own} == own, folder
    for name in ("tokenizer.json",):
        assert (with_ / "stages/shards" / name).read_bytes() == (without / "stages/shards" / name).read_bytes()
    manifest = json.loads((with_ / "stages/shards/manifest.json").read_text())
    pages = load_config()["canaries"]["pages"]
    assert manifest["canaries"]["pages"] == pages and manifest["canaries"]["samples"] > 0
    assert json.loads((without / "stages/shards/manifest.json").read_text())["canaries"]["pages"] == 0

    report = json.loads((with_ / "report.json").read_text())
    section = report["canaries"]
    stages = [row["stage"] for row in section["funnel"]]
    assert stages[:3] == ["read", "gate", "extract"] and stages[-1] == "shard"
    assert section["funnel"][0]["pages"] == pages and section["unbalanced"] == section["broken_links"] == []
    assert section["sequences"] == manifest["canaries"]["samples"]
    assert not any(stage.startswith("canary") for stage in report["stages"])  # the user's funnel is the user's
    assert "Alignment canaries" in (with_ / "report.html").read_text()

    code, report = smoke(without / "stages/shards", tmp_path, "smoke.train.steps=1", "smoke.train.control_run=false",
                         "smoke.train.probe_every=0")
    assert code == 1 and report["verdict"]["status"] == "inconclusive"
    assert "their build turned the alignment canaries off (canaries.pages: 0, `m3w build --canaries 0`)" in (
        report["verdict"]["summary"])


def rotated_canary_shards(shards: Path, out: Path, fraction: float) -> Path:
    """A copy of a build's shard set whose canary shards have their pictures rotated within `fraction` of their
    sequences after writing (each picture moved to the next slot of its own sequence), the manifest re-signed: a
    pipeline fault the checksums no longer catch."""
    import shutil

    from schemas.shards import iter_tar_groups, tar_bytes
    from train_smoke.canary_shards import mutate

    shutil.copytree(shards, out)
    manifest = json.loads((out / "manifest.json").read_text())
    image_token = manifest["tokenizer"]["special_tokens"]["image"]["id"]
    for entry in manifest["canaries"]["shards"]:
        path = out / entry["file"]
        data = tar_bytes(mutate(list(iter_tar_groups(str(path))), "permute_images", image_token, fraction=fraction))
        path.write_bytes(data)
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return out


@pytest.mark.slow
@pytest.mark.mutation_table  # a second training run on the real build: part of the acceptance table
def test_a_real_build_whose_canary_pictures_were_rotated_after_writing_does_not_pass(wget_builds, tmp_path):
    shards = rotated_canary_shards(wget_builds / "with" / "stages" / "shards", tmp_path / "shards", 0.10)
    code, report = smoke(shards, tmp_path / "smoke", "smoke.train.control_run=false", "smoke.train.probe_every=0")
    assert code != 0 and report["verdict"]["status"] != "pass", report["verdict"]["summary"]
    assert report["verdict"]["canaries_used"]
