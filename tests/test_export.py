"""`m3w export mmc4` and `m3w export pairs`: the layouts OpenFlamingo and img2dataset/LAION readers expect, every
image and text accounted for, and reading them back with webdataset as those trainers do."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image as PILImage

from pipeline.cli import main
from pipeline.config import ConfigError
from pipeline.core.stages import BY_NAME
from pipeline.export.mmc4 import mmc4_sample
from pipeline.export.pairs import PairExportSettings, PairRules, document_pairs, looks_like_file_name
from pipeline.export.writer import ExportSettings, check_export_config
from pipeline.jobs.stages import run_export
from pipeline.settings import load_config
from schemas.document import Document, Image, Node, make_doc_id
from tests.test_shards_helpers import drawn_bytes, make_document, photo_bytes, sample_documents, write_documents

IN_MEMORY = ["runner.direct_running_mode=in_memory", "runner.direct_num_workers=1"]


def export_config(*overrides: str) -> dict:
    return load_config(overrides=[*IN_MEMORY, *overrides])


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def assert_balanced(report: dict) -> None:
    assert not report["unbalanced"] and not report["broken_links"], report


# ----------------------------------------------------------------------------------------------------- mmc4


def reading_order(sample: dict) -> list[str]:
    """The document as OpenFlamingo rebuilds it: each image before the text block its similarity row picks."""
    before: dict[int, list[str]] = {}
    for info, row in zip(sample["image_info"], sample["similarity_matrix"]):
        assert row.count(1.0) == 1 and sum(row) == 1.0, row  # one-hot
        assert row.index(1.0) == info["matched_text_index"]
        before.setdefault(info["matched_text_index"], []).append(f"<image:{info['raw_url']}>")
    out: list[str] = []
    for index, text in enumerate(sample["text_list"]):
        out += before.get(index, [])
        if text:
            out.append(text)
    return out


def test_mmc4_sample_keeps_each_image_before_the_text_that_follows_it():
    doc = Document(doc_id="d1", url="https://a.test/p", nodes=[
        Node(image=Image(url="https://a.test/first.jpg", data=photo_bytes(0))),
        Node(text="Opening block."), Node(text="Same block, second node."),
        Node(image=Image(url="https://a.test/gone.jpg", data=None)),
        Node(image=Image(url="https://a.test/second.jpg", data=drawn_bytes(1))),
        Node(image=Image(url="https://a.test/third.jpg", data=photo_bytes(2))),
        Node(text="Middle block."),
        Node(image=Image(url="https://a.test/bad.jpg", data=b"\xff\xd8 truncated")),
        Node(image=Image(url="https://a.test/last.jpg", data=photo_bytes(3))),
    ])
    result = mmc4_sample(doc, "d1-0000", min_images=1, small_image_bytes=11_000)
    sample = result.sample
    assert sample["text_list"] == ["Opening block.\n\nSame block, second node.", "Middle block.", ""]
    assert [i["matched_text_index"] for i in sample["image_info"]] == [0, 1, 1, 2]
    assert reading_order(sample) == ["<image:https://a.test/first.jpg>", "Opening block.\n\nSame block, second node.",
                                     "<image:https://a.test/second.jpg>", "<image:https://a.test/third.jpg>",
                                     "Middle block.", "<image:https://a.test/last.jpg>"]
    assert base64.b64decode(sample["image_info"][1]["image_base64"]) == drawn_bytes(1)
    assert sample["image_info"][0]["image_name"] == "d1-0000-000.jpg"
    assert sample["image_info"][1]["image_name"] == "d1-0000-001.png"
    assert (result.images_in, result.images_kept, dict(result.image_drops)) == (6, 4, {"no_bytes": 1,
                                                                                       "undecodable": 1})
    assert result.small_images == sum(len(d) < 11_000 for d in (photo_bytes(0), drawn_bytes(1), photo_bytes(2),
                                                                photo_bytes(3)))


def test_mmc4_minimum_images_is_exact():
    doc = make_document(1, n_images=2)
    assert mmc4_sample(doc, "k", min_images=2, small_image_bytes=0).sample is not None
    dropped = mmc4_sample(doc, "k", min_images=3, small_image_bytes=0)
    assert dropped.sample is None and dropped.document_drop == "too_few_images"
    assert dict(dropped.image_drops) == {"in_dropped_document": 2}


def test_export_mmc4_job_counts_everything_and_round_trips_through_webdataset(tmp_path):
    docs = sample_documents()
    write_documents(docs, tmp_path / "docs")
    out = tmp_path / "mmc4"
    report = run_export("mmc4", [str(tmp_path / "docs")], str(out), export_config("export.num_shards=3"))
    assert_balanced(report)
    stage = report["stages"]["export_mmc4"]
    assert set(report["stages"]) == {"export_read", "export_mmc4"} and set(report["stages"]) <= set(BY_NAME)
    with_images = [d for d in docs if any(n.image and n.image.data for n in d.nodes)]
    assert stage["documents"]["in"] == len(docs)
    assert stage["images"]["in"] == sum(len(d.images) for d in docs)
    assert stage["images"]["dropped"] == {"no_bytes": 1, "undecodable": 1}
    assert stage["documents"]["dropped"] == {"too_few_images": len(docs) - len(with_images)}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shard_pattern"] == "{00000..00002}.tar" and manifest["total_samples"] == len(with_images)
    assert json.loads((out / "sizes.json").read_text()) == {s["file"]: s["samples"] for s in manifest["shards"]}

    # OpenFlamingo's reader: a brace pattern of tars, one `json` member per sample.
    pattern = str(out / manifest["shard_pattern"])
    samples = {json.loads(s)["doc_id"]: json.loads(s) for (s,) in wds.WebDataset(pattern, shardshuffle=False)
               .to_tuple("json")}
    assert set(samples) == {d.doc_id for d in with_images}
    for doc in with_images:
        expected = []
        for node in doc.nodes:
            if node.image is not None:
                if node.image.data and not node.image.data.startswith(b"\x89PNG\r\n\x1a\n not"):
                    expected.append(f"<image:{node.image.url}>")
            elif expected and not expected[-1].startswith("<image:"):
                expected[-1] += "\n\n" + node.text.strip()
            else:
                expected.append(node.text.strip())
        assert reading_order(samples[doc.doc_id]) == expected

    again = run_export("mmc4", [str(tmp_path / "docs")], str(tmp_path / "again"), export_config("export.num_shards=3"))
    assert_balanced(again)
    for shard in manifest["shards"]:
        assert (out / shard["file"]).read_bytes() == (tmp_path / "again" / shard["file"]).read_bytes()


# ---------------------------------------------------------------------------------------------------- pairs


def export_settings(*overrides: str) -> ExportSettings:
    return ExportSettings.from_config(load_config(overrides=list(overrides))["export"], "export")


def pair_rules(**changes) -> PairRules:
    cfg = {**load_config()["export"]["pairs"], **changes}
    return PairRules.from_config(PairExportSettings.from_config(cfg, "export.pairs"))


@pytest.mark.parametrize("text", ["IMG_0042.jpg", "DSC01234", "hero_banner-2x", "photo.webp", "IMG 0042",
                                  "screenshot-2024-01-02"])
def test_file_names_are_recognised(text):
    assert looks_like_file_name(text)


@pytest.mark.parametrize("text", ["A heron at dawn.", "COVID-19", "Mount Fuji from Lake Kawaguchi", "v2.0 release"])
def test_ordinary_texts_are_not_file_names(text):
    assert not looks_like_file_name(text)


@pytest.mark.parametrize(("text", "reason"), [
    ("IMG_0042.jpg", "file_name"),
    ("Image of a heron standing in the reeds", "boilerplate"),
    ("Click here to enlarge the map", "boilerplate"),
    ("Photo credit: Jane Doe / Agency", "boilerplate"),
    ("Photo: Reuters", "boilerplate"),
    ("thumbnail 3", "boilerplate"),
    ("A heron", "too_few_words"),
    ("A grey heron", None),
    (" ".join(["word"] * 60), None),
    (" ".join(["word"] * 61), "too_many_words"),
])
def test_pair_text_rules_at_their_thresholds(text, reason):
    assert pair_rules(min_words=3, max_words=60).rejection(text) == reason


def test_pair_language_rule_uses_fasttext():
    from filters.base import TextItem
    from filters.language import LanguageRule, LanguageSettings

    rule = LanguageRule(LanguageSettings(enabled=True, model=None, languages=["en"], threshold=0.5, top_k=10))
    rules = pair_rules(languages=["en"])

    def language_of(text):
        return rule(TextItem(text=text)).reason or None

    assert rules.rejection("A grey heron standing in the river at sunrise", language_of) is None
    assert rules.rejection("Ein Graureiher steht bei Sonnenaufgang im Fluss", language_of) == "language"


def test_bad_pair_rules_fail_before_any_work():
    with pytest.raises(ConfigError, match="sources"):
        check_export_config("pairs", export_settings("export.pairs.sources=[caption, title]"))
    with pytest.raises(ConfigError, match="boilerplate_patterns"):
        check_export_config("pairs", export_settings("export.pairs.boilerplate_patterns=['(unclosed']"))


def captioned_document() -> Document:
    """Four photos: a good caption, a boilerplate caption with a good alt, only a following sentence, nothing."""
    url = "https://news.test/story"
    nodes = [
        Node(text="A story about herons."),
        Node(image=Image(url="https://img.test/1.jpg", caption="A grey heron fishing at dawn",
                         alt="A grey heron fishing at dawn", data=photo_bytes(0))),
        Node(image=Image(url="https://img.test/2.jpg", caption="Image of the river", alt="The river after the storm",
                         data=photo_bytes(1))),
        Node(image=Image(url="https://img.test/3.jpg", alt="DSC01234", data=drawn_bytes(3))),
        Node(text="Herons wait motionless for fish. Then they strike."),
        Node(image=Image(url="https://img.test/4.jpg", caption="Logo", alt="logo", data=photo_bytes(4))),
    ]
    return Document(doc_id=make_doc_id(url, "t.warc.gz", 0), url=url, nodes=nodes, metadata={"language": "en"})


def test_document_pairs_take_the_first_qualifying_source():
    doc = captioned_document()
    result = document_pairs(doc, pair_rules(), lambda position: f"k{position}")
    texts = {key: (json.loads(m["json"])["source"], m["txt"].decode()) for key, m in result.pairs}
    assert texts == {"k1": ("caption", "A grey heron fishing at dawn"), "k2": ("alt", "The river after the storm"),
                     "k3": ("adjacent", "Herons wait motionless for fish.")}
    assert result.images_in == 4 and dict(result.image_drops) == {"no_qualifying_text": 1}
    assert result.texts_in == 8 and result.texts_kept == 3
    assert dict(result.text_drops) == {"superseded": 1, "boilerplate": 2, "file_name": 1, "same_as_other_source": 1}
    members = dict(result.pairs)["k3"]
    assert set(members) == {"png", "txt", "json"}
    meta = json.loads(members["json"])
    assert (meta["width"], meta["height"], meta["url"]) == (480, 360, "https://img.test/3.jpg")
    assert meta["page_url"] == doc.url


def test_export_pairs_job_reads_back_as_img2dataset_webdataset(tmp_path):
    docs = [captioned_document(), *sample_documents()]
    write_documents(docs, tmp_path / "docs")
    out = tmp_path / "pairs"
    assert main(["export", "pairs", "--input", str(tmp_path / "docs"), "--output", str(out),
                 *[f"--set={o}" for o in IN_MEMORY], "--set", "export.target_shard_bytes=400000"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert_balanced(report)
    stage = report["stages"]["export_pairs"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) > 1 and manifest["total_samples"] == stage["images"]["out"]
    assert stage["images"]["in"] == sum(len(d.images) for d in docs)
    assert stage["texts"]["out"] == stage["images"]["out"] == stage["samples"]["out"]

    # A CLIP / OpenFlamingo LAION loader: images decoded, caption text, metadata.
    pattern = str(out / manifest["shard_pattern"])
    rows = list(wds.WebDataset(pattern, shardshuffle=False).decode("pil").to_tuple("jpg;png;webp", "txt", "json"))
    assert len(rows) == manifest["total_samples"]
    for image, text, meta in rows:
        assert isinstance(image, PILImage.Image) and image.size == (meta["width"], meta["height"])
        assert text == meta["caption"] and meta["source"] in ("caption", "alt", "adjacent")
        assert len(text.split()) >= 3
    by_url = {meta["url"]: text for _, text, meta in rows}
    assert by_url["https://img.test/1.jpg"] == "A grey heron fishing at dawn"


# -------------------------------------------------------------------------------------- Hugging Face datasets


def test_datasets_loads_document_parquet_with_the_obelics_columns(tmp_path):
    import datasets

    docs = sample_documents()
    files = write_documents(docs, tmp_path / "docs")
    loaded = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    strings = datasets.List(datasets.Value("string"))
    assert loaded.features == datasets.Features({"images": strings, "metadata": strings,
                                                 "general_metadata": datasets.Value("string"), "texts": strings,
                                                 "image_bytes": datasets.List(datasets.Value("binary"))})
    assert loaded.num_rows == len(docs)
    by_id = {json.loads(row["general_metadata"])["doc_id"]: row for row in loaded}
    for doc in docs:
        row = by_id[doc.doc_id]
        assert row["texts"] == [n.text if n.image is None else None for n in doc.nodes]
        assert row["images"] == [n.image.url if n.image else None for n in doc.nodes]
        metas = [json.loads(m) if m else None for m in row["metadata"]]
        assert [m["src"] if m else None for m in metas] == row["images"]
        assert row["image_bytes"] == [n.image.data if n.image else None for n in doc.nodes]
    first = next(d for d in docs if any(n.image and n.image.data for n in d.nodes))
    data = next(n.image.data for n in first.nodes if n.image and n.image.data)
    assert PILImage.open(io.BytesIO(data)).size == PILImage.open(io.BytesIO(
        next(b for b in by_id[first.doc_id]["image_bytes"] if b))).size
