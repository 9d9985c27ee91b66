"""Acceptance of `m3w smoke` on the CPU tiny profile: correctly built canary shards pass with seeds 0, 1 and 2,
and shards corrupted in only part of their sequences never pass (`MUTATION_TABLE`: images shuffled across
documents in 5/10/20% of sequences, rotated within 5/10%, φ_next shifted and φ + 1 in 10%). Without canaries
the general criteria decide, on bounds: correctly built pages pass, the same pages with shuffled images fail.

The shard sets are written through the project's shard writer from in-memory canary documents
(`train_smoke.canary_shards`), once per module; every run trains from scratch. Each assertion names the one
outcome its deterministic run gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from train_smoke.canary_shards import (
    MUTATION_TABLE,
    PHI_MUTATIONS,
    build_records,
    canary_documents,
    mutate,
    mutation_shard_sets,
    shard_config,
    write_shard_set,
)

pytestmark = pytest.mark.slow  # twelve CPU training runs (CI runs it); see the report for the measured time

CLASSES = ("circle", "ring", "stripes", "dots")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ("--set", "smoke.train.control_run=false")
QUICK = (*FAST, "--set", "smoke.train.probe_every=0")  # probes only draw the loss plot: the verdict is the same
# What each partial corruption gives (deterministic runs) and the criterion that decides it. At 5% the wrong
# canary events (4.4% and 5.4% measured) exceed the tiny profile's 4% but not beyond noise: inconclusive.
# Never PASS: at worst inconclusive, which exits 1 like a FAIL.
EXPECTED = {"shuffled_5pct": ("inconclusive", "canary_wrong_events[phi]"),
            "shuffled_10pct": ("fail", "canary_wrong_events[phi]"),
            "shuffled_20pct": ("inconclusive", "canary_true_loss[phi]"),  # the model hedges: loss 0.76, limit 0.69
            "rotated_5pct": ("inconclusive", "canary_wrong_events[phi]"),
            "rotated_10pct": ("fail", "canary_wrong_events[phi]"),  # 5.9%, bound 4.3%
            "phi_next_shifted_10pct": ("inconclusive", "canary_wrong_events[phi_next]"),  # 5.0%, bound 3.5%
            # The model hedges where φ names the previous image (class-word loss 1.7 nats, below 3 × chance), so
            # the events are not confidently wrong; φ − 1 then beats the stored alignment, which a tie forbids.
            "phi_plus_1_10pct": ("fail", "tied[phi]")}


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("smoke-shards")
    out = mutation_shard_sets(str(root), n_docs=600, classes=CLASSES, image_size=64)
    config = shard_config(seq_len=64, max_images=3, image_size=32)
    plain = canary_documents(300, images_per_doc=(2, 3), classes=CLASSES, image_size=32, seed=1,
                             words_after=(1, 3), page_host="www.sample-web.test")
    records, tokenizer = build_records(plain, config)  # same text style, but not canary pages
    out["plain"] = write_shard_set(records, tokenizer, config, str(root / "plain"), len(plain))
    shuffled = mutate(records, "shuffle_images", tokenizer.id_of("image"))
    out["plain_shuffled"] = write_shard_set(shuffled, tokenizer, config, str(root / "plain_shuffled"), len(plain))
    return out


def smoke(shards: list[str], out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["smoke", *shards, "--output", str(out), "--profile", "tiny", "--quiet", *extra])
    report = json.loads((out / "smoke_report.json").read_text())
    return code, report


def checks(report: dict) -> dict[str, dict]:
    return report["verdict"]["checks"]


def canary_figures(report: dict, mode: str = "phi") -> dict:
    return next(iter(report["evaluation"].values()))["modes"][mode]["canary"]


def test_correct_canary_shards_pass_with_every_figure_on_the_right_side(shard_sets, tmp_path):
    code, report = smoke([shard_sets["correct"]], tmp_path, *FAST)
    verdict = report["verdict"]
    assert code == 0, verdict
    assert verdict["status"] == "pass" and verdict["canaries_used"] and verdict["failed"] == []
    named = checks(report)
    for mode in ("phi", "phi_next"):
        canary = canary_figures(report, mode)
        chance = canary["chance_nats"]
        assert canary["events"] >= 300 and chance == pytest.approx(1.386, abs=0.05)  # four classes
        assert canary["wrong_events"]["share"] <= 0.04  # per event: at most the tiny profile's 4% wrong
        for name in ("canary_wrong_events", "canary_true_loss", "canary_shuffle_gap", "canary_misaligned",
                     "canary_permuted"):
            assert named[f"{name}[{mode}]"]["status"] == "pass" and named[f"{name}[{mode}]"]["required"]
        for name in ("shuffle_gap", "misaligned", "permuted"):  # consulted with canaries: must not fail
            assert named[f"{name}[{mode}]"]["level"] == "consulted" and named[f"{name}[{mode}]"]["status"] == "pass"
        words = canary["class_word_loss"]
        assert words["true"] < 0.5 * chance < words["shuffled"]
    assert named["leak"]["status"] == "pass" and named["leak"]["value"] == 0.0
    leak = next(iter(report["evaluation"].values()))["leak"]
    assert {"train/phi/cross_sequence", "train/phi_next/cross_sequence", "train/phi/dark"} <= set(leak)
    assert named["canary_gain_peak"]["value"] == "0"
    for name in ("loss", "ablations", "gain_by_distance", "gates", "overview"):
        data = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    timing = json.loads((tmp_path / "smoke_timing.json").read_text())
    assert timing["main"]["tokens_per_s"] > 0 and 0 <= timing["main"]["data_wait_share"] < 1
    assert timing["main"]["model_tflops_per_step"] > 0


# The acceptance table (marker `mutation_table`): `make test` runs it whole, `make test-mutations` alone.
TABLE = pytest.mark.mutation_table


@pytest.mark.parametrize("seed", [pytest.param(1, marks=TABLE), pytest.param(2, marks=TABLE)])
def test_correct_canary_shards_pass_with_other_seeds(shard_sets, tmp_path, seed):
    code, report = smoke([shard_sets["correct"]], tmp_path, *QUICK, "--set", f"smoke.seed={seed}")
    assert code == 0 and report["verdict"]["status"] == "pass", report["verdict"]
    for mode in ("phi", "phi_next"):
        assert canary_figures(report, mode)["wrong_events"]["share"] <= 0.04


@pytest.mark.parametrize("name,mutation,fraction",
                         [pytest.param(*row, id=row[0], marks=TABLE) for row in MUTATION_TABLE])
def test_partial_corruption_never_passes(shard_sets, tmp_path, name, mutation, fraction):
    # The φ mutations would be stopped by the trainer's input check (next test); here the verdict alone judges.
    extra = ("--set", "smoke.data.check_phi=false") if mutation in PHI_MUTATIONS else ()
    code, report = smoke([shard_sets[name]], tmp_path, *QUICK, *extra)
    verdict = report["verdict"]
    status, criterion = EXPECTED[name]
    assert verdict["status"] == status, verdict
    assert code == 1
    named = checks(report)
    assert named["leak"]["status"] == "pass"  # the model stays sound: only the data is at fault
    # Per-event judgement (or the φ − 1 tie) catches a partial corruption; the mean class-word loss alone would not.
    assert named[criterion]["status"] == status, named[criterion]
    assert criterion in verdict["failed" if status == "fail" else "inconclusive"]


@pytest.mark.parametrize("name", [row[0] for row in MUTATION_TABLE if row[1] in PHI_MUTATIONS])
def test_the_trainer_stops_on_stored_phi_that_the_tokens_contradict(shard_sets, tmp_path, capsys, name):
    assert main(["smoke", shard_sets[name], "--output", str(tmp_path), "--profile", "tiny", "--quiet"]) == 2
    err = capsys.readouterr().err
    member = "phi_next" if "next" in name else "phi"
    assert "shard-" in err and ": sample canary" in err and f"stored {member} does not match the tokens" in err
    assert not (tmp_path / "smoke_report.json").exists()


def test_without_canaries_the_general_criteria_decide_on_bounds(shard_sets, tmp_path):
    fast = ("--set", "smoke.train.steps=4", *FAST)
    code, report = smoke([shard_sets["plain"]], tmp_path / "a", *fast)
    assert code == 1 and report["verdict"]["status"] == "inconclusive"
    assert not report["verdict"]["canaries_used"]
    # 300 steps suffice for the general criteria (measured); the canary runs above need the profile's 500.
    general = ("--set", "smoke.verdict.require_canaries=false", "--set", "smoke.train.steps=300")
    code, report = smoke([shard_sets["plain"]], tmp_path / "b", *FAST, *general)
    named = checks(report)
    assert named["shuffle_gap[phi]"]["required"] and named["shuffle_gap[phi_next]"]["required"]
    assert named["canary_wrong_events[phi]"]["status"] == "not_applicable"
    assert code == 0 and report["verdict"]["status"] == "pass", report["verdict"]
    code, report = smoke([shard_sets["plain_shuffled"]], tmp_path / "c", *FAST, *general)
    named = checks(report)
    assert code == 1 and report["verdict"]["status"] == "fail", report["verdict"]
    for mode in ("phi", "phi_next"):
        gap = named[f"shuffle_gap[{mode}]"]
        assert gap["status"] == "fail" and gap["bounds"]["upper"] < gap["threshold"]


def test_mixed_sets_are_weighted_and_the_report_is_deterministic(shard_sets, tmp_path):
    args = ["--weights", "1", "0.5", "--set", "smoke.train.steps=3", *QUICK, "--set", "smoke.verdict.leak_sequences=8",
            "--set", "smoke.data.max_eval_sequences=64", "--set", "smoke.verdict.bootstrap_samples=200"]
    sets = [shard_sets["correct"], shard_sets["shuffled_5pct"]]  # one tokenizer: the same documents
    smoke(sets, tmp_path / "a", *args)
    _, report = smoke(sets, tmp_path / "b", *args)
    assert (tmp_path / "a" / "smoke_report.json").read_bytes() == (tmp_path / "b" / "smoke_report.json").read_bytes()
    assert [d["weight"] for d in report["datasets"].values()] == [1.0, 0.5]
    assert set(report["training"]["main"]["loss"]) == {"correct", "shuffled_5pct"}
    assert set(report["evaluation"]) == {"correct", "shuffled_5pct"}
    # A set with another tokenizer cannot join: the model has one vocabulary.
    assert main(["smoke", shard_sets["correct"], shard_sets["plain"], "--output", str(tmp_path / "c"), "--quiet"]) == 2


def test_bad_arguments_are_clear_errors(shard_sets, tmp_path, capsys):
    assert main(["smoke", str(tmp_path), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert main(["smoke", shard_sets["correct"], "--weights", "1", "2", "--output", str(tmp_path / "o")]) == 2
    assert "weights" in capsys.readouterr().err
