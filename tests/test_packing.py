"""Packed shards (`shards.packing: true`, issue 28): rows of several documents within L tokens and N images, φ per
document, the writer's Beam job, the validator's packed invariants (a planted cross-document leak is named), the
stats' fill rates, old shard sets still read, and the smoke trainer keeping documents apart (a trainer whose
attention crosses a document boundary is caught by the leak check, exactly)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main as m3w
from pipeline.config import ConfigError
from pipeline.inspect.stats import compute_stats
from pipeline.inspect.validate import validate
from pipeline.settings import load_config
from pipeline.shards.packing import first_fit_decreasing, pack_records, window_metadata
from schemas.shards import (
    CU_SEQLENS,
    DOC_INDEX,
    PHI,
    POSITION_IDS,
    compute_phi,
    iter_samples,
    iter_tar_groups,
    loss_target_mask,
    npy_array,
    npy_bytes,
    packed_layout,
    read_manifest,
    sha256_bytes,
    tar_bytes,
)
from tests.test_shards_helpers import sample_documents, write_documents
from train_smoke.canary_shards import build_canary_shards, build_records, canary_documents, shard_config
from train_smoke.data import ShardSet, held_out, load_tables
from train_smoke.model import FlamingoLM, ModelConfig, VisionConfig
from train_smoke.verdict import cross_document_check, leak_check, shuffled_slots

IMAGE, PAD = 1, 0


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Ops this small gain nothing from a second thread, and a busy second core stalls them badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ the knapsack


def test_first_fit_decreasing_fills_rows_to_both_capacities_exactly_and_never_beyond():
    sizes = [(6, 1), (4, 1), (4, 0), (3, 2), (2, 1), (1, 0)]  # 20 tokens, 5 images
    rows = first_fit_decreasing(sizes, seq_len=10, max_images=3)
    assert rows == [[0, 1], [2, 3, 4, 5]]  # 6+4 = 10 tokens; 4+3+2+1 = 10 tokens, 0+2+1+0 = 3 images
    assert first_fit_decreasing(sizes, seq_len=10, max_images=2) == [[0, 1], [2, 3, 5], [4]]  # images bind
    assert first_fit_decreasing([(10, 3)], 10, 3) == [[0]]  # a full window is a row of its own


def test_packing_the_same_windows_in_another_order_gives_the_same_bytes():
    config = shard_config(seq_len=64, max_images=6, image_size=16, vocab_size=300)
    records, tokenizer = build_records(canary_documents(12, (1, 3), image_size=16, words_after=(1, 8)), config)
    image, pad = tokenizer.id_of("image"), tokenizer.id_of("pad")
    rows = pack_records(records, 64, 6, image, pad)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    assert tar_bytes(pack_records(shuffled, 64, 6, image, pad)) == tar_bytes(rows)
    # Every window is in exactly one row, whole: its tokens, in order, and its images with their hashes.
    windows = {key: (members, window_metadata((key, members))) for key, members in records}
    packed = [(doc["key"], members, doc, meta) for _, members in rows
              for meta in [json.loads(members["json"])] for doc in meta["documents"]]
    assert sorted(key for key, *_ in packed) == sorted(windows)
    assert len(rows) < len(records)
    for key, members, doc, meta in packed:
        own, own_meta = windows[key]
        start = meta["documents"].index(doc)
        cu = npy_array(members[CU_SEQLENS])
        ids = npy_array(members["input_ids.npy"])[cu[start]:cu[start + 1]]
        assert ids.tolist() == npy_array(own["input_ids.npy"])[: own_meta["n_tokens"]].tolist()
        slots = range(doc["first_slot"], doc["first_slot"] + doc["n_images"])
        assert [meta["image_sha256"][s] for s in slots] == own_meta["image_sha256"]
        assert all(members[f"img{s}.jpg"] == own[f"img{k}.jpg"] for k, s in enumerate(slots))
        assert meta["n_tokens"] <= 64 and meta["n_images"] <= 6


# -------------------------------------------------------------------------------------------- φ per document


def test_phi_resets_at_each_document_and_never_names_another_documents_image():
    # document 1: "a <image> b"; document 2: "c d <EOC> <image> e"; document 3: "f"; then padding
    ids = np.array([5, 1, 6, 7, 8, 3, 1, 9, 10, 0, 0])
    doc = np.array([1, 1, 1, 2, 2, 2, 2, 2, 3, 0, 0])
    mask = doc > 0
    phi, phi_next = compute_phi(ids, IMAGE, mask, doc)
    assert phi.tolist() == [0, 1, 1, 0, 0, 0, 2, 2, 0, 0, 0]  # document 2 sees nothing before its own image
    assert phi_next.tolist() == [1, 1, 0, 2, 2, 2, 2, 0, 0, 0, 0]  # document 1 never looks ahead into document 2
    unpacked, _ = compute_phi(ids, IMAGE, mask)
    assert unpacked.tolist()[3:6] == [1, 1, 1]  # what a trainer that ignores the boundaries would condition on
    targets = loss_target_mask(ids, mask, IMAGE, PAD, doc)
    assert not targets[[0, 3, 8]].any() and targets[[2, 4, 9 - 2]].all()  # a document's first token is no target
    position_ids, cu_seqlens = packed_layout(doc)
    assert position_ids.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 0, 0]
    assert cu_seqlens.tolist() == [0, 3, 8, 9]


# ------------------------------------------------------------------------------------------- the Beam writer


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """The same documents through `m3w shard`, chunked and packed (buffers of 4 windows: several buffers)."""
    root = tmp_path_factory.mktemp("packing")
    write_documents(sample_documents(), root / "in")
    out = {}
    for mode, extra in (("chunked", []), ("packed", ["shards.packing=true", "shards.packing_buffer=4"])):
        overrides = ["runner.direct_running_mode=in_memory", "shards.bpe_vocab_size=600", "shards.seq_len=96",
                     "shards.docs_parquet_images=none", *extra]
        code = m3w(["shard", "--input", str(root / "in"), "--output", str(root / mode),
                    *(arg for item in overrides for arg in ("--set", item))])
        assert code == 0
        out[mode] = root / mode
    return out


def test_the_writer_packs_every_window_and_image_into_fewer_rows_that_validate(written):
    reports = {mode: json.loads((path / "report.json").read_text()) for mode, path in written.items()}
    assert all(report["unbalanced"] == [] for report in reports.values())
    counts = {mode: {unit: {kind: report["stages"]["shard"][unit][kind] for kind in ("in", "out", "dropped")}
                     for unit in ("sequences", "images")} for mode, report in reports.items()}
    assert counts["packed"] == counts["chunked"]  # the same windows written, the same images placed: nothing lost
    info = reports["packed"]["stages"]["shard"]["sequences"]["info"]
    assert info["padding_tokens"] == info["rows"] * 96 - info["real_tokens"]
    manifest = read_manifest(str(written["packed"]))
    assert manifest["mode"] == "packed" and manifest["format_version"] == 2
    chunked, packed = (compute_stats(str(path)) for path in (written["chunked"], written["packed"]))
    assert packed["real_tokens"] == chunked["real_tokens"] and packed["images"] == chunked["images"]
    assert packed["sequences"] < chunked["sequences"] and packed["padding_share"] < chunked["padding_share"]
    assert packed["documents"] == chunked["documents"]
    result = validate(str(written["packed"]))
    assert result.ok, [str(p) for p in result.problems]
    rows = list(iter_samples(str(written["packed"])))
    assert any(len(row.cu_seqlens) > 2 for row in rows)
    assert packed["token_fill"] == round(sum(r.attention_mask.sum() for r in rows) / (96 * len(rows)), 4)
    slots = manifest["max_images"]  # a packed row's image slots: shards.packing_max_images (10 by default)
    assert slots == 10 and all(row.metadata["max_images"] == slots for row in rows)
    assert packed["image_slot_fill"] == round(sum(len(r.image_bytes) for r in rows) / (slots * len(rows)), 4)


def test_packing_and_random_windows_are_refused_together():
    with pytest.raises(ConfigError, match="shards.packing"):
        load_config(overrides=["shards.packing=true", "shards.random_window=true"])


# ---------------------------------------------------------------------------------------------- the validator


@pytest.fixture(scope="module")
def packed_canaries(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed-canaries") / "set"
    build_canary_shards(str(out), n_docs=40, seq_len=64, image_size=16, packing=True, packing_max_images=8,
                        classes=("circle", "ring"), images_per_doc=(1, 3), num_shards=1)
    return out


def rewrite_row(shards: Path, tmp_path: Path, change) -> tuple[Path, str]:
    """A copy of the set with the first row of ≥ 2 documents changed by `change(members)`, the manifest re-signed
    (so only the planted problem is left to find)."""
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["shards"][0]
    groups = list(iter_tar_groups(str(out / entry["file"])))
    key = next(k for k, members in groups if json.loads(members["json"])["n_documents"] >= 2)
    data = tar_bytes([(k, change(dict(m)) if k == key else m) for k, m in groups])
    (out / entry["file"]).write_bytes(data)
    entry.update(sha256=sha256_bytes(data), bytes=len(data))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, key


def test_a_phi_pointing_into_another_document_of_the_row_is_named_a_cross_document_leak(packed_canaries, tmp_path):
    assert validate(str(packed_canaries)).ok

    def leak(members):
        doc, phi = npy_array(members[DOC_INDEX]), npy_array(members[PHI]).copy()
        first_of_second = int(np.flatnonzero(doc == 2)[0])
        phi[first_of_second] = 1  # the second document's first token names the first document's first image
        members[PHI] = npy_bytes(phi, phi.dtype)
        return members

    out, key = rewrite_row(packed_canaries, tmp_path, leak)
    result = validate(str(out))
    assert {p.key for p in result.problems} == {key}
    assert any("cross-document leak" in p.message and "document 2 names slot 1 of document 1" in p.message
               for p in result.problems), [str(p) for p in result.problems]
    assert m3w(["inspect", "validate", str(out)]) == 1


def test_boundaries_that_disagree_with_the_document_index_are_rejected(packed_canaries, tmp_path):
    def break_layout(members):
        cu_seqlens = npy_array(members[CU_SEQLENS]).copy()
        cu_seqlens[1] += 1  # the first boundary one token late
        members[CU_SEQLENS] = npy_bytes(cu_seqlens, cu_seqlens.dtype)
        positions = npy_array(members[POSITION_IDS]).copy()
        positions[int(np.flatnonzero(npy_array(members[DOC_INDEX]) == 2)[0])] = 7  # no restart
        members[POSITION_IDS] = npy_bytes(positions, positions.dtype)
        return members

    out, key = rewrite_row(packed_canaries, tmp_path, break_layout)
    messages = [p.message for p in validate(str(out)).problems]
    assert any(m.startswith("cu_seqlens ") and "disagree with doc_index" in m for m in messages), messages
    assert any("position_ids do not restart at each document" in m for m in messages), messages


def test_a_row_over_its_image_budget_is_rejected(packed_canaries, tmp_path):
    manifest = json.loads((packed_canaries / "manifest.json").read_text())
    busiest = max(json.loads(m["json"])["n_images"] for _, m in iter_tar_groups(str(packed_canaries /
                                                                                 manifest["shards"][0]["file"])))
    out = tmp_path / "tight"
    shutil.copytree(packed_canaries, out)
    manifest["max_images"] = busiest - 1  # the same rows judged against a smaller N
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert any(f"exceed max_images = {busiest - 1}" in p.message for p in validate(str(out)).problems)


def test_a_version_1_shard_set_still_reads_and_validates(tmp_path):
    out = build_canary_shards(str(tmp_path / "v1"), n_docs=6, seq_len=48, image_size=16, num_shards=1)
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    manifest["format_version"] = 1
    (Path(out) / "manifest.json").write_text(json.dumps(manifest))
    assert validate(out).ok
    assert all(not sample.is_packed for sample in iter_samples(out))


# ------------------------------------------------------------------------------------------ the smoke trainer


def tiny_model(vocab_size: int, open_gates: bool = True) -> FlamingoLM:
    """Untrained, with the gates opened (α = 1), so images reach the logits: the leak check is about exact zeros."""
    torch.manual_seed(0)
    model = FlamingoLM(ModelConfig(vocab_size=vocab_size, d_model=32, lm_layers=2, lm_heads=2, xattn_heads=2,
                                   resampler_latents=2, resampler_layers=1, resampler_heads=2, image_size=16,
                                   vision=VisionConfig(channels=[8, 16])))
    for block in model.xattn.values():
        torch.nn.init.constant_(block.alpha_xattn, 1.0 if open_gates else 0.0)
        torch.nn.init.constant_(block.alpha_dense, 1.0 if open_gates else 0.0)
    return model


def test_held_out_documents_leave_their_rows_and_are_judged_alone_with_the_same_logits(packed_canaries):
    shard_set = ShardSet.open(str(packed_canaries))
    train, held, _ = load_tables(shard_set, 16, None, 0.3, 1000, None)
    assert held.doc_index is None and train.doc_index is not None  # judged one document a row, trained packed
    assert all(held_out(doc_id, 0.3) for doc_id in held.doc_ids)
    stored = {sample.key: sample.metadata["documents"] for sample in iter_samples(str(packed_canaries))}
    for row, key in enumerate(train.keys):  # a training row keeps exactly its documents that are not held out
        kept = [doc for doc in stored[key] if not held_out(doc["doc_id"], 0.3)]
        assert int(train.attention_mask[row].sum()) == sum(doc["n_tokens"] for doc in kept)
        assert int(train.doc_index[row].max()) == len(kept)
    assert len(held) == sum(held_out(doc["doc_id"], 0.3) for docs in stored.values() for doc in docs)
    assert held.packed is not None and int(held.packed.doc_index.max()) >= 2
    model = tiny_model(shard_set.vocab_size).eval()
    packed = held.packed  # the held-out documents packed again: what the cross-document leak check runs on
    assert int(packed.attention_mask.sum()) == int(held.attention_mask.sum())
    row = int(torch.nonzero(packed.doc_index.max(dim=1).values >= 2)[0])
    with torch.no_grad():
        batch = packed.batch(torch.tensor([row]))
        in_row = model(batch.input_ids, batch.phi, batch.images, batch.filled, packing=batch.packing)[0]
        for number in (1, 2):
            where = packed.doc_index[row] == number
            alone_row = next(i for i in range(len(held)) if torch.equal(
                held.input_ids[i][held.attention_mask[i]], packed.input_ids[row][where]))
            alone = held.batch(torch.tensor([alone_row]))
            logits = model(alone.input_ids, alone.phi, alone.images, alone.filled)[0]
            assert torch.equal(logits[: int(where.sum())], in_row[where])


def test_a_crop_shorter_than_the_rows_cuts_them_at_document_boundaries_and_leaves_no_document_out(packed_canaries):
    shard_set = ShardSet.open(str(packed_canaries))
    whole, _, _ = load_tables(shard_set, 16, None, 0.0, 1000, None)
    cut, _, _ = load_tables(shard_set, 16, 24, 0.0, 1000, None)
    assert cut.input_ids.shape[1] == 24 and len(cut) > len(whole)
    stored = [doc for sample in iter_samples(str(packed_canaries)) for doc in sample.metadata["documents"]]
    assert int((cut.position_ids == 0)[cut.attention_mask].sum()) == len(stored)  # every document starts somewhere
    kept = [min(doc["n_tokens"], 24) for doc in stored]
    assert int(cut.attention_mask.sum()) == sum(kept)  # each document whole, or its first 24 tokens
    for row in range(len(cut)):
        ids, mask, doc = (t[row].numpy() for t in (cut.input_ids, cut.attention_mask, cut.doc_index))
        phi, phi_next = compute_phi(ids, shard_set.special.image, mask, doc)
        assert (phi == cut.phi[row].numpy()).all() and (phi_next == cut.phi_next[row].numpy()).all()
        assert int((cut.slots[row] >= 0).sum()) == int((ids[mask] == shard_set.special.image).sum())


def test_the_leak_check_is_exactly_zero_across_documents_and_catches_a_trainer_whose_attention_crosses_them(
        packed_canaries, monkeypatch):
    import train_smoke.model as model_module

    shard_set = ShardSet.open(str(packed_canaries))
    _, held, _ = load_tables(shard_set, 16, None, 0.5, 1000, None)
    packed = held.packed
    other = shuffled_slots(packed, 0)
    model = tiny_model(shard_set.vocab_size)
    cpu = torch.device("cpu")
    sound = cross_document_check(model, packed, cpu, 8, False, other, 0, shard_set.special)
    assert set(sound) == {f"{mode}/{cond}/cross_document" for mode in ("eval", "train") for cond in ("phi", "phi_next")}
    assert all(v["positions"] > 0 and v["max_abs_logit_diff"] == 0.0 for v in sound.values())
    assert all(v["max_abs_logit_diff"] == 0.0 for v in leak_check(model, packed, cpu, 8, False, other, 0).values())
    # The same model with plain causal attention over the whole row: another document now changes the logits.
    unmasked = model_module.document_mask
    monkeypatch.setattr(model_module, "document_mask", lambda doc_index: unmasked(torch.ones_like(doc_index)))
    leaking = cross_document_check(model, packed, cpu, 8, False, other, 0, shard_set.special)
    assert all(v["max_abs_logit_diff"] > 1e-3 for v in leaking.values())


@pytest.mark.slow  # one tiny-profile training run, 150 steps, no control run: ~45 CPU-seconds
def test_m3w_smoke_passes_on_packed_canary_shards_with_every_cross_document_logit_unchanged(tmp_path):
    # Two canary classes, two documents a row: 150 steps learn them with a wide margin (class-word loss 0.03
    # nats at 200 steps, bound 0.34); the cross-document check then runs on the trained model.
    shards = build_canary_shards(str(tmp_path / "packed"), n_docs=240, seq_len=128, image_size=64, packing=True,
                                 classes=("circle", "ring"), images_per_doc=(4, 5), words_after=(1, 3))
    assert compute_stats(shards)["documents_per_sequence"] >= 1.5
    code = m3w(["smoke", shards, "--output", str(tmp_path / "out"), "--profile", "tiny", "--quiet",
                "--set", "smoke.train.control_run=false", "--set", "smoke.train.probe_every=0",
                "--set", "smoke.train.steps=150"])
    report = json.loads((tmp_path / "out" / "smoke_report.json").read_text())
    assert code == 0 and report["verdict"]["status"] == "pass", report["verdict"]["summary"]
    leak = next(iter(report["evaluation"].values()))["leak"]
    cross = {name: value for name, value in leak.items() if name.endswith("cross_document")}
    assert len(cross) == 4 and all(v["positions"] > 0 for v in cross.values())
    assert report["verdict"]["checks"]["leak"]["value"] == 0.0
