"""`m3w shard` end to end: tokenizer, Beam shard sink, manifest, document Parquet, determinism."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image as PILImage
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from pipeline.config import ConfigError
from pipeline.inspect.validate import validate
from pipeline.io.documents import read_documents
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from pipeline.settings import load_config
from pipeline.shards.sequences import fit_image
from pipeline.shards.settings import ShardSettings
from pipeline.shards.tokenizer import (
    TrainTokenizer,
    prepare_tokenizer,
    sample_rank,
    tokenizer_from_json,
    train_bpe,
)
from pipeline.shards.writer import check_shard_config
from schemas.shards import (
    SpecialTokens,
    iter_samples,
    iter_tar_groups,
    loss_target_mask,
    read_manifest,
    shard_paths,
)
from tests.test_shards_helpers import (
    MARKER_BACKGROUND,
    build_shards,
    make_document,
    sample_documents,
    shard_config,
    write_documents,
)

SEQ_LEN = "shards.seq_len=96"


@pytest.fixture(scope="module")
def docs():
    return sample_documents()


@pytest.fixture(scope="module")
def built(tmp_path_factory, docs):
    root = tmp_path_factory.mktemp("shards")
    write_documents(docs, root / "in")
    report = build_shards(root / "in", root / "out", SEQ_LEN)
    return root, report


def test_counts_balance_and_name_every_drop(built, docs):
    root, report = built
    assert report["unbalanced"] == []
    stage = report["stages"]["shard"]
    assert stage["documents"]["in"] == len(docs)
    assert stage["images"]["in"] == sum(len(d.images) for d in docs)
    assert stage["images"]["dropped"] == {"no_bytes": 1, "undecodable": 1}
    manifest = read_manifest(str(root / "out"))
    assert stage["sequences"]["out"] == manifest["total_samples"] == report["shards"]["samples"]
    assert stage["documents"]["out"] == manifest["total_documents"]
    assert manifest["total_samples"] > len(docs), "seq_len 96 splits the longer documents"


def test_manifest_checksums_counts_and_tokenizer(built):
    root, _ = built
    out = root / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 2, "target_shard_bytes 400 kB spreads ~1 MB over several shards"
    for entry in manifest["shards"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        assert entry["samples"] == sum(1 for _ in iter_tar_groups(str(out / entry["file"])))
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(Path(e["file"]).name
                                                                          for e in manifest["shards"])
    tokenizer_text = (out / "tokenizer.json").read_text()
    assert hashlib.sha256(tokenizer_text.encode()).hexdigest() == manifest["tokenizer"]["sha256"]
    tokenizer = Tokenizer.from_str(tokenizer_text)
    for role, token in {"image": "<image>", "eoc": "<EOC>", "eos": "<eos>", "pad": "<pad>"}.items():
        assert manifest["tokenizer"]["special_tokens"][role] == {"token": token, "id": tokenizer.token_to_id(token)}
    assert manifest["seq_len"] == 96 and manifest["max_images"] == 5 and manifest["image_size"] == [320, 320]
    assert manifest["config"]["resize_mode"] == "center_crop"
    assert validate(str(out)).ok


def test_sequences_carry_each_documents_text_and_images_in_order(built, docs):
    """Concatenating a document's windows gives back its text exactly and its images in order."""
    root, _ = built
    out = root / "out"
    manifest = read_manifest(str(out))
    special = SpecialTokens.from_manifest(manifest)
    tokenizer = Tokenizer.from_str((out / "tokenizer.json").read_text())
    by_doc: dict[str, list] = {}
    for sample in iter_samples(str(out)):
        by_doc.setdefault(sample.metadata["doc_id"], []).append(sample)
    assert set(by_doc) == {d.doc_id for d in docs}
    for doc in docs:
        samples = sorted(by_doc[doc.doc_id], key=lambda s: s.metadata["window"])
        assert [s.metadata["window"] for s in samples] == list(range(len(samples)))
        ids = np.concatenate([s.input_ids[s.attention_mask.astype(bool)] for s in samples])
        assert ids[-2:].tolist() == [special.eoc, special.eos]
        text_ids = [int(i) for i in ids if i not in (special.image, special.eoc, special.eos)]
        chunks, current = [], []
        for node in doc.nodes:
            if node.image is not None and node.image.data and not node.image.data.startswith(b"\x89PNG\r\n\x1a\n not"):
                chunks.append("\n\n".join(current).strip())
                current = []
            elif node.text:
                current.append(node.text)
        chunks.append("\n\n".join(current).strip())
        assert tokenizer.decode(text_ids) == "".join(chunks)

        usable = [img for img in doc.images if img.data and not img.data.startswith(b"\x89PNG\r\n\x1a\n not")]
        urls = [url for s in samples for url in s.metadata["image_urls"]]
        assert urls == [img.url for img in usable]
        slots = [data for s in samples for data in s.image_bytes]
        expected = [fit_image(img.data, (320, 320), "center_crop", "jpeg", 90) for img in usable]
        assert [hashlib.sha256(b).digest() for b in slots] == [hashlib.sha256(b).digest() for b in expected]
        for sample in samples:
            assert sample.metadata["url"] == doc.url and sample.metadata["language"] == doc.metadata["language"]
            targets = loss_target_mask(sample.input_ids, sample.attention_mask, special.image, special.pad)
            assert sample.metadata["n_targets"] == int(targets.sum()) > 0


def test_marker_image_survives_into_its_slot(built):
    root, _ = built
    samples = iter_samples(str(root / "out"), decode_images=True)
    sample = next(s for s in samples if s.metadata["domain"] == "marker.test")
    assert sample.images.shape == (5, 320, 320, 3) and sample.image_mask().tolist()[:2] == [True, True]
    corner = sample.images[0, :40, :40].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - MARKER_BACKGROUND).max() < 20
    assert not sample.images[2:].any(), "empty slots are zeros"


def test_shards_are_plain_deterministic_tars_readable_by_webdataset(built):
    import webdataset as wds

    root, _ = built
    paths = shard_paths(str(root / "out"))
    for path in paths:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
        names = [m.name for m in members]
        keys = [n.split(".", 1)[0] for n in names]
        assert keys == sorted(keys), "samples sorted by key, each sample's members contiguous"
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
    loaded = list(wds.WebDataset(paths, shardshuffle=False).decode("rgb8"))
    assert len(loaded) == read_manifest(str(root / "out"))["total_samples"]
    for sample in loaded:
        assert sample["input_ids.npy"].dtype == np.int32 and sample["input_ids.npy"].shape == (96,)
        assert sample["json"]["n_images"] == sum(1 for k in sample if k.startswith("img"))
        for slot in range(sample["json"]["n_images"]):
            assert sample[f"img{slot}.jpg"].shape == (320, 320, 3)


def test_document_parquet_holds_the_documents_as_sharded(built, docs):
    root, _ = built
    files = sorted((root / "out" / "docs").glob("*.parquet"))
    assert files and pq.read_schema(files[0]).names == ["images", "metadata", "general_metadata", "texts",
                                                        "image_bytes"]
    written = {d.doc_id: d for d in read_documents([str(f) for f in files])}
    assert set(written) == {d.doc_id for d in docs}
    broken = written[docs[12].doc_id]
    assert len(broken.images) == 1, "the undecodable and byte-less images are not in the saved document"
    assert all(img.data for d in written.values() for img in d.images)


@pytest.mark.slow
def test_same_input_gives_byte_identical_output_on_another_run_and_runner(built, tmp_path):
    """A second run, multi-process with two workers this time, writes the very same bytes."""
    root, _ = built
    build_shards(root / "in", tmp_path / "again", SEQ_LEN, running_mode="multi_processing")
    first, second = root / "out", tmp_path / "again"
    compared = ["manifest.json", "tokenizer.json",
                *(str(p.relative_to(first)) for p in sorted(first.glob("shards/*.tar"))),
                *(str(p.relative_to(first)) for p in sorted(first.glob("docs/*.parquet")))]
    assert sorted(str(p.relative_to(second)) for p in second.glob("shards/*.tar")) == \
        [c for c in compared if c.startswith("shards/")]
    for name in compared:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_tokenizer_file_random_windows_webp_references_and_rerun_cleanup(built, tmp_path):
    """A user tokenizer with its own `</s>`, Flamingo-faithful windows, WebP slots, Parquet by reference,
    written over an earlier output: stale shards go, the result validates."""
    root, _ = built
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(["river stone light garden window market bridge"] * 20, trainer=trainer)
    tokenizer_path = tmp_path / "user-tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    before = len(list((out / "shards").glob("*.tar")))
    report = build_shards(root / "in", out, "shards.seq_len=64", f"shards.tokenizer={tokenizer_path}",
                          "shards.random_window=true", "shards.image_format=webp", "shards.seed=7",
                          "shards.docs_parquet_images=references", "shards.num_shards=1")
    assert report["unbalanced"] == []
    manifest = read_manifest(str(out))
    assert before > 1 and [e["file"] for e in manifest["shards"]] == ["shards/shard-000000.tar"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-000000.tar"]
    assert manifest["tokenizer"]["special_tokens"]["eos"]["token"] == "</s>"
    assert manifest["tokenizer"]["special_tokens"]["eos"]["id"] == tokenizer.token_to_id("</s>")
    assert manifest["mode"] == "random_window"
    samples = list(iter_samples(str(out)))
    assert len(samples) == manifest["total_documents"], "one window per document"
    assert all(s.metadata["window"] == 0 and s.metadata["n_windows"] == 1 for s in samples)
    assert all(name.endswith(".webp") for s in samples for name in s.members if name.startswith("img"))
    result = validate(str(out))
    assert result.ok, [str(p) for p in result.problems]
    assert "image_bytes" not in pq.read_schema(next((out / "docs").glob("*.parquet"))).names


def test_no_documents_gives_an_empty_but_complete_manifest(tmp_path):
    write_documents([], tmp_path / "in", files=1)
    report = build_shards(tmp_path / "in", tmp_path / "out")
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest["shards"] == [] and manifest["total_samples"] == 0 and report["unbalanced"] == []
    assert (tmp_path / "out" / "tokenizer.json").exists()


def test_trained_bpe_is_deterministic_with_the_special_tokens():
    texts = ["Über den Fluss, the river runs to the sea.", "Le marché ouvre à l'aube."] * 30
    first, second = train_bpe(texts, 400, 2), train_bpe(texts, 400, 2)
    assert first.json == second.json and first.sha256 == second.sha256
    assert {r: e["token"] for r, e in first.special_tokens.items()} == {
        "image": "<image>", "eoc": "<EOC>", "eos": "<eos>", "pad": "<pad>"}
    assert first.id_of("pad") == 0
    tokenizer = tokenizer_from_json(first.json)
    ids = tokenizer.encode("a page that writes <image> and <EOC> as text", add_special_tokens=False).ids
    assert first.id_of("image") not in ids and first.id_of("eoc") not in ids, "text can never forge a special token"
    assert tokenizer.decode(ids) == "a page that writes <image> and <EOC> as text"


def test_prepare_keeps_existing_ids_and_adds_only_what_is_missing():
    tokenizer = Tokenizer(models.WordLevel({"hello": 0, "</s>": 1, "[PAD]": 2, "world": 3}, unk_token="hello"))
    info = prepare_tokenizer(tokenizer)
    assert info.special_tokens["eos"] == {"token": "</s>", "id": 1}
    assert info.special_tokens["pad"] == {"token": "[PAD]", "id": 2}
    assert {info.id_of("image"), info.id_of("eoc")} == {4, 5} and info.vocab_size == 6


def test_tokenizer_trains_on_a_deterministic_capped_sample_of_documents():
    docs = [make_document(i, n_images=1, words_per_text=10) for i in range(12)]
    config = load_config(overrides=["runner.direct_running_mode=in_memory", "shards.bpe_vocab_size=300",
                                    "shards.bpe_sample_rate=0.6", "shards.bpe_max_documents=4"])
    chosen = sorted((sample_rank(d.doc_id), d.doc_id, d.text) for d in docs if sample_rank(d.doc_id) < 0.6)[:4]
    assert 0 < len(chosen) <= 4
    expected = train_bpe([text for _, _, text in chosen], 300, int(config["shards"]["bpe_min_frequency"]))
    for order in (docs, docs[::-1]):
        pipeline = make_pipeline([], RunnerSettings.from_config(config["runner"], "runner"))
        infos = pipeline | beam.Create(order) | TrainTokenizer(ShardSettings.from_config(config["shards"], "shards"))
        assert_that(infos | beam.Map(lambda info: info.sha256), equal_to([expected.sha256]))
        pipeline.run().wait_until_finish()


def test_bad_shard_config_fails_before_any_work():
    cases = [("shards.resize_mode=squash", "resize_mode"), ("shards.image_format=gif", "image_format"),
             ("shards.max_images=0", "max_images"), ("shards.docs_parquet_images=maybe", "docs_parquet")]
    for override, match in cases:
        with pytest.raises(ConfigError, match=match):
            check_shard_config(ShardSettings.from_config(shard_config(override)["shards"], "shards"))


def test_decoded_image_slot_matches_an_independent_resize(built):
    root, _ = built
    sample = next(s for s in iter_samples(str(root / "out")) if s.image_bytes)
    with PILImage.open(io.BytesIO(sample.image_bytes[0])) as image:
        assert image.size == (320, 320) and image.mode == "RGB" and image.format == "JPEG"
