"""`m3w smoke SHARDS PAIRS --weights 1 0.5`: the smoke trainer mixes interleaved shards with the image-text pairs of
`m3w export pairs`, as Flamingo mixes them, and reports each dataset's loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.jobs.stages import run_export
from pipeline.settings import load_config
from schemas.shards import SpecialTokens, read_manifest
from tests.test_shards_helpers import build_shards, drawn_bytes, make_document, write_documents
from train_smoke.pairs import PairSet, is_pair_set, pair_sequence
from train_smoke.run import load_tokenizer


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory):
    """A shard set and a pair export made from the same 40 documents (two drawn pictures each)."""
    root = tmp_path_factory.mktemp("export-smoke")
    docs = [make_document(i, n_images=2, words_per_text=16, image_source=lambda k, i=i: drawn_bytes(7 * i + k))
            for i in range(40)]
    write_documents(docs, root / "docs")
    report = build_shards(root / "docs", root / "shards", "shards.seq_len=64", "shards.image_size=32")
    assert not report["unbalanced"]
    report = run_export("pairs", [str(root / "docs")], str(root / "pairs"),
                        load_config(overrides=["runner.direct_running_mode=in_memory"]))
    assert not report["unbalanced"] and report["stages"]["export_pairs"]["samples"]["out"] == 80
    return root


def test_a_pair_is_image_text_eoc_eos_with_the_contracts_phi(datasets_dir):
    manifest = read_manifest(str(datasets_dir / "shards"))
    special = SpecialTokens.from_manifest(manifest)
    tokenizer = load_tokenizer(str(datasets_dir / "shards" / "tokenizer.json"))
    members = {"jpg": drawn_bytes(1, image_format="JPEG"), "txt": b"Silver engine garden glacier mountain.",
               "json": json.dumps({"doc_id": "d1", "page_url": "https://a.test/"}).encode()}
    text_ids = tokenizer.encode("Silver engine garden glacier mountain.", add_special_tokens=False).ids
    seq = pair_sequence("d1-0001", members, tokenizer, special, image_size=32, max_text_tokens=3)
    assert seq.input_ids.tolist() == [special.image, *text_ids[:3], special.eoc, special.eos]
    assert seq.phi.tolist() == [1] * 6 and seq.phi_next.tolist() == [1, 0, 0, 0, 0, 0]
    assert seq.targets.tolist() == [False, True, True, True, True, True]
    assert len(seq.images) == 1 and seq.images[0].shape == (3, 32, 32) and seq.images[0].dtype == np.uint8
    assert is_pair_set(str(datasets_dir / "pairs")) and not is_pair_set(str(datasets_dir / "shards"))
    assert len(PairSet.open(str(datasets_dir / "pairs")).shards) == 1


def test_smoke_mixes_shards_and_pairs_and_reports_each_loss(datasets_dir, tmp_path):
    out = tmp_path / "smoke"
    code = main(["smoke", str(datasets_dir / "shards"), str(datasets_dir / "pairs"), "--weights", "1", "0.5",
                 "--output", str(out), "--profile", "tiny", "--quiet", "--set", "smoke.train.steps=8",
                 "--set", "smoke.train.log_every=2", "--set", "smoke.train.control_run=false",
                 "--set", "smoke.train.probe_every=0"])
    report = json.loads((out / "smoke_report.json").read_text())
    assert code in (0, 1)  # the verdict (no canaries here) is not this test's subject
    counts = report["datasets"]["pairs"]
    assert counts["kind"] == "pairs" and counts["weight"] == 0.5
    assert counts["in"] == 80 == counts["train"] + counts["eval"] + sum(counts["dropped"].values())
    assert counts["eval"] > 0
    assert set(report["training"]["main"]["loss"]) == {"shards", "pairs"}
    assert all(len(values) == 8 for values in report["training"]["main"]["loss"].values())  # one per step
    losses = report["dataset_losses"]
    assert {name: entry["kind"] for name, entry in losses.items()} == {"shards": "interleaved", "pairs": "pairs"}
    for entry in losses.values():
        assert math.isfinite(entry["train_loss"]) and math.isfinite(entry["heldout_loss"])
    assert set(report["evaluation"]) == {"shards"}  # the verdict judges the interleaved set only


def test_pairs_alone_are_refused(datasets_dir, tmp_path, capsys):
    assert main(["smoke", str(datasets_dir / "pairs"), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "interleaved shard set" in capsys.readouterr().err
