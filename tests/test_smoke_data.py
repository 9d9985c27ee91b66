"""Smoke trainer plumbing: config profiles, shard loading and splitting, bad samples, dataset mixing."""

from __future__ import annotations

import io
import itertools
import json
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.config import ConfigError
from schemas.shards import iter_tar_groups, shard_paths
from train_smoke.canary_shards import build_records, canary_documents, mutate, shard_config, write_shard_set
from train_smoke.cli import refusal_text
from train_smoke.config import SmokeSettings, resolve_config, smoke_settings
from train_smoke.data import (
    PhiMismatch,
    ShardSet,
    ShardSetError,
    StreamingSequences,
    TableBatches,
    UndecodableShards,
    held_out,
    load_tables,
    open_shard_sets,
    streaming_batches,
)
from train_smoke.model import FlamingoLM, ModelConfig
from train_smoke.run import SmokeRun
from train_smoke.train import Trainer, mean_loss

CLASSES = ("circle", "ring", "stripes", "dots")


@pytest.fixture(scope="module")
def canary_set(tmp_path_factory):
    config = shard_config(seq_len=48, max_images=3, image_size=32)
    docs = canary_documents(40, images_per_doc=(2, 3), classes=CLASSES, image_size=32, seed=3)
    records, tokenizer = build_records(docs, config)
    root = tmp_path_factory.mktemp("smoke-data")
    good = write_shard_set(records, tokenizer, config, str(root / "good"), len(docs))
    return {"good": good, "records": records, "tokenizer": tokenizer, "config": config, "root": root,
            "docs": len(docs)}


def settings(*overrides: str) -> SmokeSettings:
    return smoke_settings(resolve_config(None, ["smoke.data.image_size=16", *overrides], profile="tiny"))


def test_profile_applies_under_user_overrides():
    base = resolve_config(None, [], profile="gpu")
    assert base["smoke"]["profile"] == "gpu" and base["smoke"]["device"] == "cuda"
    tiny = resolve_config(None, [], profile="tiny")
    steps = tiny["smoke"]["train"]["steps"]
    mine = resolve_config(None, [f"smoke.train.steps={steps + 7}", "smoke.train.lr=2.0e-3"], profile="tiny")
    assert mine["smoke"]["train"]["steps"] == steps + 7  # the user beats the profile
    assert smoke_settings(mine).train.lr == pytest.approx(2e-3)
    assert smoke_settings(resolve_config(None, ["smoke.train.lr=1e-3"], profile="tiny")).train.lr == 1e-3
    with pytest.raises(ConfigError, match=r"'smoke.train.lr': expected a number; got '1e-3'"):
        resolve_config(None, ["smoke.train.lr='1e-3'"], profile="tiny")  # quoted: a string, never a number
    with pytest.raises(ConfigError, match="unknown smoke profile"):
        resolve_config(None, [], profile="huge")
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_config(None, ["smoke.train.stepz=3"])
    with pytest.raises(ConfigError, match="freeze_lm"):
        smoke_settings(resolve_config(None, ["smoke.train.freeze_lm=true", "smoke.train.lm_pretrain_steps=0"]))


def test_split_is_by_document_and_counts_balance(canary_set):
    shard_set = ShardSet.open(canary_set["good"])
    assert shard_set.max_images == 3 and shard_set.seq_len == 48
    train, held, counts = load_tables(shard_set, 16, None, 0.25, 1000, None)
    assert counts.read == len(canary_set["records"])
    assert counts.read == counts.train + counts.eval + sum(counts.dropped.values())
    assert set(train.doc_ids).isdisjoint(held.doc_ids)
    assert all(held_out(d, 0.25) for d in held.doc_ids) and not any(held_out(d, 0.25) for d in train.doc_ids)
    assert bool(held.is_canary.all())
    assert held.images.shape[1:] == (3, 16, 16)
    # Every filled slot has an <image> token, in order, and φ is what the shards stored.
    image_id = shard_set.special.image
    assert torch.equal((held.slots >= 0).sum(1), (held.input_ids == image_id).sum(1))
    _, again, _ = load_tables(shard_set, 16, None, 0.25, 1000, None, load_train=False)
    assert again.keys == held.keys and torch.equal(again.input_ids, held.input_ids)


def test_crop_keeps_only_images_inside_and_recomputes_targets(canary_set):
    shard_set = ShardSet.open(canary_set["good"])
    _, full, _ = load_tables(shard_set, 16, None, 0.5, 1000, None, load_train=False)
    _, cropped, _ = load_tables(shard_set, 16, 12, 0.5, 1000, None, load_train=False)
    assert cropped.input_ids.shape[1] == 12
    image_id = shard_set.special.image
    assert torch.equal((cropped.slots >= 0).sum(1), (cropped.input_ids == image_id).sum(1))
    assert (cropped.phi_next <= (cropped.slots >= 0).sum(1, keepdim=True)).all()
    assert torch.equal(cropped.targets, full.targets[:, :12])


def test_a_corrupt_sample_is_counted_not_fatal(canary_set, tmp_path):
    records = [(key, dict(members)) for key, members in canary_set["records"]]
    records[0][1]["phi.npy"] = b"not an npy file"
    out = write_shard_set(records, canary_set["tokenizer"], canary_set["config"], str(tmp_path / "bad"),
                          canary_set["docs"])
    shard_set = ShardSet.open(out)
    _, _, counts = load_tables(shard_set, 16, None, 0.5, 1000, None)
    assert counts.dropped == {"unreadable_sample:ValueError": 1}
    assert counts.read == counts.train + counts.eval + 1


def test_a_truncated_shard_is_an_error_naming_it(canary_set, tmp_path):
    out = write_shard_set(canary_set["records"], canary_set["tokenizer"], canary_set["config"],
                          str(tmp_path / "cut"), canary_set["docs"])
    path = shard_paths(out)[0]
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    # The manifest's checksum catches it before anything is read...
    with pytest.raises(ShardSetError, match=f"{path}: sha256 .* does not match the manifest"):
        open_shard_sets([out], None)
    # ...and a shard that cannot be read to its end is an error, not a skip.
    with pytest.raises(ShardSetError, match=f"{path}: unreadable shard"):
        load_tables(ShardSet.open(out), 16, None, 0.5, 1000, None)


def test_phi_is_recomputed_for_every_sample_and_a_mismatch_stops_naming_shard_and_key(canary_set, tmp_path):
    image_id = canary_set["tokenizer"].id_of("image")
    for mutation, member in (("phi_shift", "phi"), ("phi_next_shift", "phi_next")):
        broken = mutate(canary_set["records"], mutation, image_id, fraction=0.1)
        changed = [key for (key, a), (_, b) in zip(canary_set["records"], broken) if a != b]
        assert len(changed) == round(0.1 * len(broken))
        out = write_shard_set(broken, canary_set["tokenizer"], canary_set["config"], str(tmp_path / mutation),
                              canary_set["docs"])
        shard_set = open_shard_sets([out], None)[0]  # checksums match: the writer hashed the broken bytes
        with pytest.raises(PhiMismatch, match=rf"shard-\d+\.tar: sample ({'|'.join(changed)}): stored {member} "):
            load_tables(shard_set, 16, None, 0.5, 1000, None)
        with pytest.raises(PhiMismatch):  # streaming reads check it too
            list(itertools.islice(StreamingSequences(shard_set, 16, None, 0.0001, shuffle_buffer=1, seed=0),
                                  len(broken)))
        _, held, _ = load_tables(shard_set, 16, None, 0.5, 1000, None, verify_phi=False)
        assert held is not None


def test_shard_sets_must_share_a_tokenizer(canary_set, tmp_path):
    config = shard_config(seq_len=48, max_images=3, image_size=32, vocab_size=300)
    docs = canary_documents(6, classes=CLASSES, image_size=32, seed=9)
    records, tokenizer = build_records(docs, config)
    other = write_shard_set(records, tokenizer, config, str(tmp_path / "other"), len(docs))
    with pytest.raises(ShardSetError, match="different tokenizers"):
        open_shard_sets([canary_set["good"], other], None)
    with pytest.raises(ShardSetError, match="2 weights for 1"):
        open_shard_sets([canary_set["good"]], [1.0, 2.0])
    with pytest.raises(ShardSetError, match="no manifest"):
        ShardSet.open(str(tmp_path))


def test_streaming_yields_every_training_document_once_per_epoch(canary_set):
    shard_set = ShardSet.open(canary_set["good"])
    train, _, _ = load_tables(shard_set, 16, None, 0.25, 1000, None)
    stream = iter(StreamingSequences(shard_set, 16, None, 0.25, shuffle_buffer=8, seed=1))
    first_epoch = [next(stream).key for _ in range(len(train))]
    assert sorted(first_epoch) == sorted(train.keys)
    assert first_epoch != sorted(first_epoch)  # shuffled


def test_weighted_mixing_accumulates_the_weighted_gradient(canary_set, tmp_path):
    """One step over two shard sets equals one backward pass of Σ λ_m loss_m / Σ λ_m."""
    mutated = mutate(canary_set["records"], "shuffle_images", canary_set["tokenizer"].id_of("image"))
    other = write_shard_set(mutated, canary_set["tokenizer"], canary_set["config"], str(tmp_path / "b"),
                            canary_set["docs"])
    s = settings("smoke.train.lr=0.0", "smoke.train.gate_lr=0.0", "smoke.train.batch_size=4",
                 "smoke.train.phi_next_prob=0.0", "smoke.train.grad_clip=1000000.0", "smoke.train.log_every=1")
    sets = open_shard_sets([canary_set["good"], other], [3.0, 1.0])
    tables = {x.name: load_tables(x, 16, None, 0.25, 1000, None)[0] for x in sets}
    shape = ModelConfig.from_settings(s.model, s.data.image_size, sets[0].vocab_size)

    def fresh() -> FlamingoLM:
        torch.manual_seed(0)
        model = FlamingoLM(shape)
        with torch.no_grad():
            for block in model.xattn.values():
                block.alpha_xattn.fill_(0.5)
        return model

    batches = {name: next(TableBatches(table, 4, seed=5)) for name, table in tables.items()}
    expected = fresh().train()
    total = sum((w * mean_loss(expected(b.input_ids, b.phi, b.images, b.filled), b)
                 for w, b in zip((3.0, 1.0), batches.values())), torch.zeros(())) / 4.0
    total.backward()

    model = fresh()
    trainer = Trainer(model, s, torch.device("cpu"), "mix", progress=False)
    streams = {name: iter([batches[name]]) for name in tables}
    captured = {}
    original_step = torch.optim.AdamW.step

    def capture(self, *args, **kwargs):
        captured.update({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        return original_step(self, *args, **kwargs)

    torch.optim.AdamW.step = capture
    try:
        history = trainer.train(streams, {x.name: x.weight for x in sets}, steps=1)
    finally:
        torch.optim.AdamW.step = original_step
    assert set(history.loss) == set(tables)
    for name, param in expected.named_parameters():
        if param.grad is not None:
            assert torch.allclose(captured[name], param.grad, atol=1e-6), name


def test_a_zero_weight_set_is_not_trained(canary_set):
    sets = open_shard_sets([canary_set["good"], canary_set["good"]], [1.0, 0.0])
    assert [x.name for x in sets] == ["good#0", "good#1"]
    s = settings("smoke.train.batch_size=4", "smoke.train.log_every=1")
    shape = ModelConfig.from_settings(s.model, s.data.image_size, sets[0].vocab_size)
    table = load_tables(sets[0], 16, None, 0.25, 1000, None)[0]
    streams = {x.name: TableBatches(table, 4, seed=0) for x in sets}
    history = Trainer(FlamingoLM(shape), s, torch.device("cpu"), "zero", progress=False).train(
        streams, {x.name: x.weight for x in sets}, steps=2)
    assert list(history.loss) == ["good#0"] and len(history.loss["good#0"]) == 2
    with pytest.raises(ShardSetError, match="weight 0"):
        open_shard_sets([canary_set["good"]], [0.0])


def test_a_set_with_a_last_step_stops_there_and_the_others_go_on(canary_set):
    sets = open_shard_sets([canary_set["good"], canary_set["good"]], [1.0, 1.0])
    s = settings("smoke.train.batch_size=4", "smoke.train.log_every=1")
    shape = ModelConfig.from_settings(s.model, s.data.image_size, sets[0].vocab_size)
    table = load_tables(sets[0], 16, None, 0.25, 1000, None)[0]
    drawn = {x.name: 0 for x in sets}

    def counted(name: str):
        for batch in TableBatches(table, 4, seed=0):
            drawn[name] += 1
            yield batch

    streams = {x.name: counted(x.name) for x in sets}
    history = Trainer(FlamingoLM(shape), s, torch.device("cpu"), "last", progress=False).train(
        streams, {x.name: x.weight for x in sets}, steps=3, last_steps={"good#1": 1})
    assert drawn == {"good#0": 3, "good#1": 1}
    assert len(history.loss["good#0"]) == 3 and len(history.loss["good#1"]) == 1


def test_mutations_change_what_they_name(canary_set):
    image_id = canary_set["tokenizer"].id_of("image")
    records = canary_set["records"]

    def arrays(recs, member):
        return [np.load(io.BytesIO(m[member])) for _, m in recs]

    shifted = mutate(records, "phi_shift", image_id)
    for before, after in zip(arrays(records, "phi.npy"), arrays(shifted, "phi.npy")):
        assert after[0] == 0 and np.array_equal(after[1:][before[1:] > 0], before[:-1][before[1:] > 0])
    exclusive = mutate(records, "phi_exclusive", image_id)
    for (_, m), before, after in zip(records, arrays(records, "phi.npy"), arrays(exclusive, "phi.npy")):
        ids = np.load(io.BytesIO(m["input_ids.npy"]))
        assert np.array_equal(after[ids == image_id], before[ids == image_id] - 1)
        assert np.array_equal(after[ids != image_id], before[ids != image_id])
    permuted = mutate(records, "permute_images", image_id)
    rotated = 0
    for (_, a), (_, b) in zip(records, permuted):
        slots = sorted(k for k in a if k.startswith("img"))
        if len(slots) >= 2:
            assert [b[k] for k in slots] == [a[k] for k in slots[1:] + slots[:1]]
            rotated += 1
    assert rotated > 0
    shuffled = mutate(records, "shuffle_images", image_id)
    own = {key.rsplit("-", 1)[0]: {v for k, v in m.items() if k.startswith("img")} for key, m in records}
    moved = [v not in own[key.rsplit("-", 1)[0]] for key, m in shuffled for k, v in m.items() if k.startswith("img")]
    assert all(moved)
    following = mutate(records, "phi_next_shift", image_id)
    for (_, m), before, after in zip(records, arrays(records, "phi_next.npy"), arrays(following, "phi_next.npy")):
        ids = np.load(io.BytesIO(m["input_ids.npy"]))
        at_image = np.flatnonzero(ids == image_id)
        assert np.array_equal(after[at_image], before[np.minimum(at_image + 1, len(ids) - 1)])
    # Partial strength: exactly the seeded share of sequences changes, the others are untouched.
    for mutation in ("shuffle_images", "permute_images", "phi_shift"):
        partial = mutate(records, mutation, image_id, fraction=0.2)
        assert sum(a != b for (_, a), (_, b) in zip(records, partial)) == pytest.approx(0.2 * len(records), abs=1.5)


def test_tar_written_by_the_builder_is_plain_webdataset(canary_set):
    path = shard_paths(canary_set["good"])[0]
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names == sorted(names) and all(n.count(".") >= 1 for n in names)
    meta = [json.loads(m["json"]) for _, m in iter_tar_groups(path)]
    assert all(item["url"].startswith("https://canary.sample-web.test/") for item in meta)


def test_canary_shards_are_byte_for_byte_what_the_projects_shard_writer_writes(canary_set, tmp_path):
    """`build_records`/`write_shard_set` rebuild the writer without Beam (for a bare GPU machine); the project's
    writer (BuildSamplesDoFn with its image store, train_bpe, write_manifest) must give the same bytes."""
    from pipeline.core.failures import BreakerSettings
    from pipeline.images.store import ImageStore
    from pipeline.shards.settings import ShardSettings
    from pipeline.shards.tokenizer import train_bpe
    from pipeline.shards.writer import BuildSamplesDoFn, StoredMember, write_manifest

    config = canary_set["config"]
    docs = canary_documents(40, images_per_doc=(2, 3), classes=CLASSES, image_size=32, seed=3)
    shards = config["shards"]
    tokenizer = train_bpe((d.text for d in docs), int(shards["bpe_vocab_size"]), int(shards["bpe_min_frequency"]))
    assert tokenizer.json == canary_set["tokenizer"].json
    assert tokenizer.special_tokens == canary_set["tokenizer"].special_tokens
    store = ImageStore(str(tmp_path / "store"))
    settings = ShardSettings.from_config(shards, "shards")
    breaker = BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker")
    builder = BuildSamplesDoFn(settings, breaker, store)
    builder.setup()
    project = [(key, {suffix: store.get(data.sha256) if isinstance(data, StoredMember) else data
                      for suffix, data in members.items()})
               for doc in docs for item in builder.process(doc, tokenizer) if isinstance(item, tuple)
               for key, members in [item]]
    assert project == canary_set["records"]
    ours = Path(canary_set["good"])
    theirs = tmp_path / "project"
    write_shard_set(project, canary_set["tokenizer"], config, str(theirs), len(docs))  # same tars...
    write_manifest(json.loads((ours / "manifest.json").read_text())["shards"], str(theirs), tokenizer, len(docs),
                   settings)  # ...and the project's manifest and tokenizer file over them
    for name in ("manifest.json", "tokenizer.json", *(f"shards/{p.name}" for p in (ours / "shards").iterdir())):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name


# --------------------------------------------------------------------------- undecodable samples (issue 23, item 8)


def corrupted_set(canary_set, out: Path, count: int) -> tuple[str, list[str]]:
    """The canary records with every image of `count` sequences zeroed, written with a manifest over the broken
    bytes (so only decoding can find them); returns the set and the broken keys."""
    records = canary_set["records"]
    broken = mutate(records, "corrupt_images", canary_set["tokenizer"].id_of("image"), fraction=count / len(records))
    changed = [key for (key, a), (_, b) in zip(records, broken) if a != b]
    assert len(changed) == count
    return write_shard_set(broken, canary_set["tokenizer"], canary_set["config"], str(out), len(records)), changed


def first_in_read_order(shard_set: str, keys: list[str]) -> tuple[str, str]:
    """(shard, key) of the first of `keys` a reader of the shard set meets."""
    return next((path, key) for path in shard_paths(shard_set) for key, _ in iter_tar_groups(path) if key in keys)


def test_m3w_smoke_refuses_shards_with_30_percent_undecodable_images_before_training(canary_set, tmp_path, capsys,
                                                                                      monkeypatch):
    n = len(canary_set["records"])
    shards, changed = corrupted_set(canary_set, tmp_path / "bad", round(0.3 * n))
    shard, key = first_in_read_order(shards, changed)

    def no_training(*args, **kwargs):
        raise AssertionError("refused shards must never reach training")

    monkeypatch.setattr(Trainer, "train", no_training)
    started = time.perf_counter()
    code = main(["smoke", shards, "--output", str(tmp_path / "out"), "--profile", "tiny", "--quiet"])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert (f"{len(changed)} of {n} samples cannot be decoded ({len(changed) / n:.2%}, above "
            f"smoke.data.max_undecodable_share 1.00%); first: {shard}: sample {key} (UnidentifiedImageError") in err
    assert seconds < 30 and not (tmp_path / "out" / "smoke_report.json").exists()
    # Streaming: the first pass (the held-out sample the verdict judges) refuses them before training too.
    code = main(["smoke", shards, "--output", str(tmp_path / "streamed"), "--profile", "tiny", "--quiet",
                 "--set", "smoke.data.cache=false"])
    err = capsys.readouterr().err
    assert code == 2 and "samples cannot be decoded" in err, err
    assert re.search(r"first: \S+shard-\d+\.tar: sample (\S+) \(", err).group(1) in changed


def test_undecodable_samples_are_refused_only_above_the_limit_exactly(canary_set, tmp_path):
    n = len(canary_set["records"])
    limit = 2 / n
    at_limit, _ = corrupted_set(canary_set, tmp_path / "two", 2)
    over, changed = corrupted_set(canary_set, tmp_path / "three", 3)
    _, _, counts = load_tables(ShardSet.open(at_limit), 16, None, 0.25, 1000, None, max_undecodable_share=limit)
    assert (counts.undecodable, counts.decoded, counts.undecodable_share) == (2, n, limit)
    assert counts.dropped == {"unreadable_sample:UnidentifiedImageError": 2}
    assert counts.read == counts.train + counts.eval + 2
    shard, key = first_in_read_order(over, changed)
    with pytest.raises(UndecodableShards, match=rf"3 of {n} samples cannot be decoded .* first: "
                                                rf"{shard}: sample {key} \(UnidentifiedImageError: cannot identify"):
        load_tables(ShardSet.open(over), 16, None, 0.25, 1000, None, max_undecodable_share=limit)
    # The training stream judges what it decoded at the end of each epoch, against the same limit.
    assert len(list(itertools.islice(StreamingSequences(ShardSet.open(at_limit), 16, None, 0.0001, shuffle_buffer=4,
                                                        seed=0, max_undecodable_share=limit), 2 * n))) == 2 * n
    with pytest.raises(UndecodableShards, match=rf"3 of {n} samples cannot be decoded"):
        list(itertools.islice(StreamingSequences(ShardSet.open(over), 16, None, 0.0001, shuffle_buffer=4, seed=0,
                                                 max_undecodable_share=limit), 2 * n))


def test_half_a_percent_undecodable_proceeds_under_the_default_limit_and_the_verdict_counts_them(canary_set, tmp_path,
                                                                                              capsys):
    docs = canary_documents(200, images_per_doc=(2, 3), classes=CLASSES, image_size=32, seed=4)
    records, tokenizer = build_records(docs, canary_set["config"])
    records = records[:200]  # one sequence per document at seq_len 48: exactly 200
    shards, changed = corrupted_set({**canary_set, "records": records, "tokenizer": tokenizer}, tmp_path / "half", 1)
    config = resolve_config(None, ["smoke.data.image_size=16"], profile="tiny")
    assert config["smoke"]["data"]["max_undecodable_share"] == 0.01
    run = SmokeRun([shards], config, progress=False)  # loads and checks the data; trains nothing yet
    assert len(run.train_tables["half"]) + len(run.eval_tables["half"]) == 199
    undecodable = run.undecodable()
    assert {k: undecodable[k] for k in ("samples", "of", "share", "limit")} == {"samples": 1, "of": 200,
                                                                                 "share": 0.005, "limit": 0.01}
    assert undecodable["first"].endswith(  # without the object's address: the report stays byte-stable
        f"sample {changed[0]} (UnidentifiedImageError: cannot identify image file <_io.BytesIO object>)")
    # Three steps teach nothing (exit 1), but the run is judged, and its verdict names the skipped sample.
    code = main(["smoke", shards, "--output", str(tmp_path / "out"), "--profile", "tiny", "--quiet",
                 "--set", "smoke.data.image_size=16", "--set", "smoke.train.steps=3", "--set",
                 "smoke.train.control_run=false", "--set", "smoke.train.probe_every=0",
                 "--set", "smoke.verdict.bootstrap_samples=50", "--set", "smoke.verdict.leak_sequences=8"])
    out = capsys.readouterr().out
    verdict = json.loads((tmp_path / "out" / "smoke_report.json").read_text())["verdict"]
    assert code == 1 and verdict["undecodable_samples"] == 1
    assert "(1 of 200 samples undecodable and skipped, 0.50%; limit 1.00%)" in verdict["summary"]
    check = verdict["checks"]["undecodable_samples"]
    assert (check["status"], check["value"], check["threshold"]) == ("pass", 0.005, 0.01)
    assert "undecodable_samples" in out and "1 of 200 samples undecodable" in out


def test_a_refusal_in_a_loader_worker_reaches_the_command_line_as_one_line(canary_set, tmp_path):
    """The gpu profile streams through DataLoader worker processes; their refusal arrives wrapped in the worker's
    traceback, and `m3w smoke` prints only the message."""
    n = len(canary_set["records"])
    over, _ = corrupted_set(canary_set, tmp_path / "three", 3)
    batches = streaming_batches(ShardSet.open(over), 16, None, 0.0001, batch_size=4, shuffle_buffer=4, seed=0,
                                num_workers=1, prefetch_factor=2, pin_memory=False, max_undecodable_share=2 / n)
    with pytest.raises(UndecodableShards) as caught:
        for _ in range(n):
            next(batches)
    assert "Original Traceback" in str(caught.value)
    assert refusal_text(caught.value).startswith(f"{over} (loader worker 0): 3 of {n} samples cannot be decoded (")
