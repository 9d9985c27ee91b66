"""Acceptance of `m3w smoke` on the CPU tiny profile: correctly built canary shards pass, and shards broken
the ways a builder can break them (φ shifted, exclusive φ, images shuffled across documents, images
permuted within a sequence) each make it exit non-zero, for the reason the verdict names.

The shard sets are written through the project's shard writer from in-memory canary documents
(`train_smoke.canary_shards`), once per module; every run trains from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from train_smoke.canary_shards import MUTATIONS, build_records, canary_documents, mutate, shard_config, write_shard_set

pytestmark = pytest.mark.slow  # about three minutes of CPU training in all (CI runs it)

CLASSES = ("circle", "ring", "stripes", "dots")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("smoke-shards")
    config = shard_config(seq_len=64, max_images=5, image_size=64)
    docs = canary_documents(1000, images_per_doc=(4, 5), classes=CLASSES, image_size=64, seed=0,
                            words_after=(1, 3))
    records, tokenizer = build_records(docs, config)
    out = {"correct": write_shard_set(records, tokenizer, config, str(root / "correct"), len(docs))}
    for mutation in MUTATIONS:
        broken = mutate(records, mutation, tokenizer.id_of("image"))
        out[mutation] = write_shard_set(broken, tokenizer, config, str(root / mutation), len(docs))
    plain = canary_documents(60, images_per_doc=(2, 3), classes=CLASSES, image_size=64, seed=1,
                             page_host="www.sample-web.test")
    plain_records, _ = build_records(plain, config)  # same text style, but not canary pages
    out["plain"] = write_shard_set(plain_records, tokenizer, config, str(root / "plain"), len(plain))
    return out


def smoke(shards: list[str], out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["smoke", *shards, "--output", str(out), "--profile", "tiny", "--quiet", *extra])
    report = json.loads((out / "smoke_report.json").read_text())
    return code, report


def criteria(report: dict) -> dict[str, dict]:
    return report["verdict"]["checks"]


def test_correct_canary_shards_pass(shard_sets, tmp_path):
    code, report = smoke([shard_sets["correct"]], tmp_path)
    verdict = report["verdict"]
    assert code == 0, verdict
    assert verdict["status"] == "pass" and verdict["canaries_used"]
    named = criteria(report)
    canary = next(iter(report["evaluation"].values()))["canary"]
    chance = canary["chance_nats"]
    assert canary["events"] >= 100 and chance == pytest.approx(1.386, abs=0.05)  # four classes
    words = canary["class_word_loss"]
    assert words["true"] < 0.5 * chance < 0.8 * chance < words["shuffled"]
    assert canary["class_word_accuracy"]["true"] > 0.8
    assert words["phi_plus_1"] > words["true"] + 0.25 * chance and words["permuted"] > words["true"] + 0.25 * chance
    assert abs(words["phi_minus_1"] - words["true"]) < 0.05  # the contract makes φ−1 equivalent on class words
    assert named["leak"]["passed"] and named["leak"]["value"] == 0.0
    assert named["canary_gain_peak"]["value"] == "0"
    assert named["gates_vs_control"]["passed"]  # reported: the gates open more on true than on shuffled images
    # Outputs a person reads: the JSON report, the timings and the plots.
    for name in ("loss", "ablations", "gain_by_distance", "gates", "overview"):
        data = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    timing = json.loads((tmp_path / "smoke_timing.json").read_text())
    assert timing["main"]["tokens_per_s"] > 0 and 0 <= timing["main"]["data_wait_share"] < 1
    assert timing["main"]["model_tflops_per_step"] > 0


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_broken_shards_fail(shard_sets, tmp_path, mutation):
    code, report = smoke([shard_sets[mutation]], tmp_path, "--set", "smoke.train.control_run=false")
    verdict = report["verdict"]
    assert code == 1, verdict
    assert verdict["status"] == "fail"
    # The images no longer decide the word that follows them where φ says they do.
    assert "canary_true_loss" in verdict["failed"], verdict
    named = criteria(report)
    assert named["leak"]["passed"]  # the model itself stays sound: only the data is at fault
    if mutation in ("phi_shift", "phi_exclusive"):
        # φ − 1 brings back the true alignment: the minimum is not where the shards put it.
        assert "canary_alignment" in verdict["failed"], verdict


def test_without_canaries_the_verdict_is_inconclusive_unless_asked(shard_sets, tmp_path):
    fast = ["--set", "smoke.train.steps=4", "--set", "smoke.train.control_run=false"]
    code, report = smoke([shard_sets["plain"]], tmp_path / "a", *fast)
    assert code == 1 and report["verdict"]["status"] == "inconclusive"
    assert not report["verdict"]["canaries_used"]
    code, report = smoke([shard_sets["plain"]], tmp_path / "b", *fast, "--set",
                         "smoke.verdict.require_canaries=false")
    named = criteria(report)
    assert named["shuffle_gap"]["required"] and named["alignment"]["required"]
    assert not named["canary_true_loss"]["evaluated"]
    assert report["verdict"]["status"] in ("pass", "fail") and code == (0 if report["verdict"]["passed"] else 1)


def test_mixed_sets_are_weighted_and_the_report_is_deterministic(shard_sets, tmp_path):
    args = ["--weights", "1", "0.5", "--set", "smoke.train.steps=3", "--set", "smoke.train.control_run=false"]
    sets = [shard_sets["correct"], shard_sets["plain"]]
    smoke(sets, tmp_path / "a", *args)
    _, report = smoke(sets, tmp_path / "b", *args)
    assert (tmp_path / "a" / "smoke_report.json").read_bytes() == (tmp_path / "b" / "smoke_report.json").read_bytes()
    assert [d["weight"] for d in report["datasets"].values()] == [1.0, 0.5]
    assert set(report["training"]["main"]["loss"]) == {"correct", "plain"}
    assert set(report["evaluation"]) == {"correct", "plain"}
    assert report["evaluation"]["plain"]["canary"]["events"] == 0


def test_bad_arguments_are_clear_errors(shard_sets, tmp_path, capsys):
    assert main(["smoke", str(tmp_path), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["smoke", shard_sets["correct"], "--weights", "1", "2", "--output", str(tmp_path / "o")]) == 2
    assert "weights" in capsys.readouterr().err
