"""Decontamination (issue 26): benchmark pictures and passages are found in training documents and removed, each
match is audited, and unrelated pictures and text are left alone (pipeline/decontaminate/)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from pipeline.cli import main as m3w
from pipeline.decontaminate.audit import contamination_summary
from pipeline.decontaminate.embedding import EmbeddingIndex
from pipeline.decontaminate.pictures import (
    PictureIndex,
    benchmark_entries,
    grey_grid,
    hypotheses,
    popcount,
    window_hashes,
)
from pipeline.decontaminate.sources import Part, picture_parts, read_passages, read_pictures, text_parts
from pipeline.decontaminate.texts import PassageIndex, contaminated_paragraphs, ngram_hashes
from pipeline.dedup.keys import shingle_words
from pipeline.io.documents import parquet_bytes, read_documents
from pipeline.report.contamination import add_contamination, render_html
from pipeline.sampledata.crawl.images import load_photo
from pipeline.sampledata.imagehost import generated_picture
from pipeline.settings import load_config
from schemas.document import Document, Node
from schemas.document import Image as DocImage

PASSAGE = ("which of the following instruments was used by the astronomer to observe the four largest moons "
           "of jupiter in the winter of 1610")
OTHER_TEXT = ("the harbour town keeps its old fish market open every morning and the boats come back before "
              "noon with whatever the cold sea gave them that day")


def jpeg(picture: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo(name: str, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    picture = load_photo(name)
    return picture.crop(box) if box else picture


def crop(picture: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = picture.size
    return picture.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def resized(picture: Image.Image, share: float) -> Image.Image:
    return picture.resize((round(picture.width * share), round(picture.height * share)), Image.Resampling.LANCZOS)


def stored(picture: Image.Image, side: int = 320) -> bytes:
    """As the downloader keeps a picture by default: the centred square, `side` pixels, JPEG 95."""
    return jpeg(ImageOps.fit(picture, (side, side), Image.Resampling.LANCZOS), 95)


def index_of(pictures: list[bytes], max_crop: float = 0.1, phash: int = 8, dhash: int = 12) -> PictureIndex:
    entries = [entry for item, data in enumerate(pictures) for entry in benchmark_entries(data, item, max_crop)]
    return PictureIndex(entries, phash, dhash, max_crop)


# -------------------------------------------------------------------------------------------------- pictures

BENCHMARK = ["astronaut", "coffee", "chelsea", "rocket", "camera", "clock"]
COPIES = {
    "resize 90% + JPEG q70": lambda p: jpeg(resized(p, 0.9), 70),
    "resize 90% + q70 + crop 3% each side": lambda p: jpeg(crop(resized(p, 0.9), 0.03, 0.03, 0.03, 0.03), 70),
    "crop 10% each side": lambda p: jpeg(crop(p, 0.1, 0.1, 0.1, 0.1)),
    "crop 5% at a corner": lambda p: jpeg(crop(p, 0.05, 0.05, 0, 0)),
    "mirror": lambda p: jpeg(ImageOps.mirror(p)),
    "stored by the downloader": lambda p: stored(crop(p, 0.03, 0.03, 0.03, 0.03)),
}
# The benchmark picture is the cropped one: the training copy shows more of the photograph.
WIDER = {"3% more on each side": 0.03, "10% more on each side": 0.1}


@pytest.fixture(scope="module")
def benchmark_index() -> PictureIndex:
    return index_of([jpeg(photo(name)) for name in BENCHMARK])


@pytest.mark.parametrize("kind", sorted(COPIES))
def test_every_planted_copy_of_a_benchmark_photo_is_found_and_named(benchmark_index, kind):
    for item, name in enumerate(BENCHMARK):
        grid, _ = grey_grid(COPIES[kind](photo(name)))
        match = benchmark_index.match(grid)
        assert match is not None and match.item == item, (kind, name)
        assert match.phash_distance <= 8 and match.dhash_distance <= 12


@pytest.mark.parametrize("kind", sorted(WIDER))
def test_a_copy_showing_more_than_a_cropped_benchmark_picture_is_found(kind):
    cut = WIDER[kind]
    index = index_of([jpeg(crop(photo(name), cut, cut, cut, cut)) for name in BENCHMARK])
    for item, name in enumerate(BENCHMARK):
        match = index.match(grey_grid(stored(photo(name)))[0])
        assert match is not None and match.item == item, (kind, name)


def test_pictures_from_one_photograph_under_other_colour_fields_are_no_copies():
    """The sample crawl's host draws crops of 16 photographs under a seeded colour field: 30 such benchmark
    pictures, 60 others (the same photographs, other fields) as training pictures: none matches."""
    bench = [jpeg(generated_picture(f"bench-{i}", (320, 256))) for i in range(30)]
    index = index_of(bench)
    found = [index.match(grey_grid(stored(generated_picture(f"other-{i}", (320, 256))))[0]) for i in range(60)]
    assert [m for m in found if m is not None] == []


def test_distinct_photographs_and_their_mirrors_are_no_copies(benchmark_index):
    for name in ("coins", "moon", "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry"):
        for picture in (photo(name), ImageOps.mirror(photo(name))):
            assert benchmark_index.match(grey_grid(stored(picture))[0]) is None, name


def _entry_at(data: bytes, phash_flips: int, dhash_flips: int):
    """A benchmark entry whose hashes lie exactly so many bits from the picture's whole-picture window."""
    from pipeline.decontaminate.pictures import BenchmarkEntry

    phash, dhash = window_hashes(grey_grid(data)[0], [(0.0, 0.0, 1.0, 1.0)])
    flip = lambda value, bits: int(value) ^ ((1 << bits) - 1) << 7  # noqa: E731 - `bits` contiguous bits
    return BenchmarkEntry(0, "as shown", flip(phash[0], phash_flips), flip(dhash[0], dhash_flips))


@pytest.mark.parametrize(("phash_flips", "dhash_flips", "found"), [
    (8, 12, True), (9, 12, False), (8, 13, False), (0, 0, True)])
def test_a_match_needs_both_hashes_within_their_thresholds_exactly(phash_flips, dhash_flips, found):
    data = jpeg(photo("astronaut"))
    index = PictureIndex([_entry_at(data, phash_flips, dhash_flips)], 8, 12, 0.0)
    match = index.match(grey_grid(data)[0])
    assert (match is not None) == found
    if found:
        assert (match.phash_distance, match.dhash_distance, match.hypothesis) == (phash_flips, dhash_flips, "whole")


@pytest.mark.parametrize(("distance", "entries"), [(0, 3000), (3, 3000), (4, 3000), (8, 3000), (11, 3000),
                                                   (8, 70_000)])
def test_the_multi_index_finds_every_entry_within_the_distance(distance, entries):
    """Four 16-bit parts up to 2**16 entries, three of about 21 bits above: none loses a pair within the distance."""
    from pipeline.decontaminate.pictures import BenchmarkEntry

    rng = np.random.default_rng(distance)
    stored_hashes = rng.integers(0, 2**63, size=entries, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    query = stored_hashes[:20].copy()
    for row, bits in enumerate(rng.integers(0, 64, size=(20, distance))):
        for bit in bits:
            query[row] ^= np.uint64(1) << np.uint64(int(bit))
    index = PictureIndex([BenchmarkEntry(i, "as shown", int(h), 0) for i, h in enumerate(stored_hashes)],
                         distance, 64, 0.0)
    assert len(index.parts) == (4 if entries <= 2**16 else 3)
    windows, found_entries = index.candidates(query)
    found = set(zip(windows.tolist(), found_entries.tolist()))
    close = popcount(query[:, None] ^ stored_hashes[None, :]) <= distance
    assert {(int(w), int(e)) for w, e in zip(*np.nonzero(close))} <= found
    assert {(row, row) for row in range(20)} <= found


def test_crops_tried_stay_inside_the_picture_and_max_crop_zero_tries_the_whole_only():
    assert [h.name for h in hypotheses(0.0)] == ["whole"]
    tried = hypotheses(0.1)
    assert len(tried) == 41 and len({h.name for h in tried}) == 41
    for hypothesis in tried:
        left, top, right, bottom = hypothesis.window(0.1)
        assert 0.0 <= left < right <= 1.0 + 1e-9 and 0.0 <= top < bottom <= 1.0 + 1e-9, hypothesis


# -------------------------------------------------------------------------------------------------- text


def passage_index(*passages: str, ngram: int = 13) -> PassageIndex:
    return PassageIndex([ngram_hashes(shingle_words(p), ngram) for p in passages], range(len(passages)))


def test_a_paragraph_sharing_13_words_is_contaminated_and_12_are_not():
    words = PASSAGE.split()
    index = passage_index(PASSAGE)
    thirteen = f"Quoted today: {' '.join(words[3:16]).upper()}, said nobody."
    twelve = f"Quoted today: {' '.join(words[3:15])}, said nobody."
    found = contaminated_paragraphs([OTHER_TEXT, thirteen, twelve], index, 13)
    assert [(m.paragraph, m.item, m.ngram) for m in found] == [(1, 0, " ".join(words[3:16]))]


def test_an_ngram_across_a_paragraph_break_contaminates_both_paragraphs():
    words = PASSAGE.split()
    found = contaminated_paragraphs([OTHER_TEXT, " ".join(words[:7]), " ".join(words[7:14]) + ". And more."],
                                    passage_index(PASSAGE), 13)
    assert [m.paragraph for m in found] == [1, 2]


def test_a_passage_shorter_than_the_ngram_cannot_match():
    assert len(ngram_hashes(shingle_words("what colour is the bus"), 13)) == 0
    assert contaminated_paragraphs(["what colour is the bus"], passage_index("what colour is the bus"), 13) == []


# -------------------------------------------------------------------------------------------------- sources


def test_pictures_are_read_from_folders_tars_and_hugging_face_parquet_with_their_names(tmp_path):
    picture = jpeg(photo("coffee", (0, 0, 200, 200)))
    (tmp_path / "coco" / "val").mkdir(parents=True)
    (tmp_path / "coco" / "val" / "0001.jpg").write_bytes(picture)
    (tmp_path / "coco" / "annotations.json").write_text("{}")
    with tarfile.open(tmp_path / "shard-000.tar", "w") as archive:
        for name, data in (("k1.jpg", picture), ("k1.json", b"{}"), ("k2.png", picture)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    table = pa.table({"question": ["q0", "q1"], "image": [{"bytes": picture, "path": "COCO_1.jpg"},
                                                          {"bytes": picture, "path": None}]})
    pq.write_table(table, tmp_path / "vqa.parquet", row_group_size=1)
    parts = picture_parts([str(tmp_path / "coco"), str(tmp_path / "*.tar"), str(tmp_path / "vqa.parquet")])
    names = [(item.benchmark, Path(item.file).name, item.item) for part in parts for item, _ in read_pictures(part)]
    assert names == [
        (str(tmp_path / "coco"), "0001.jpg", ""),
        (str(tmp_path / "shard-000.tar"), "shard-000.tar", "k1.jpg"),
        (str(tmp_path / "shard-000.tar"), "shard-000.tar", "k2.png"),
        (str(tmp_path / "vqa.parquet"), "vqa.parquet", "row 0 image (COCO_1.jpg)"),
        (str(tmp_path / "vqa.parquet"), "vqa.parquet", "row 1 image"),
    ]
    with pytest.raises(FileNotFoundError, match=r"decontaminate.images: '.*nothing\*' matches no"):
        picture_parts([str(tmp_path / "nothing*")])


def test_passages_are_read_from_txt_jsonl_json_and_parquet_by_the_configured_fields(tmp_path):
    (tmp_path / "a.txt").write_text("first passage\n\nsecond passage\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "one", "id": 1}) + "\n" + json.dumps({"id": 2}) + "\n")
    (tmp_path / "c.json").write_text(json.dumps({"questions": [{"question": "why", "answers": ["a", "b"]}]}))
    pq.write_table(pa.table({"captions": [["x", "y"]], "text": ["z"]}), tmp_path / "d.parquet")
    read = {Path(part.path).name: [(item.item, text) for item, text in read_passages(part, ["text", "question",
                                                                                          "answers", "captions"])]
            for part in text_parts([str(tmp_path / "*")])}
    assert read == {
        "a.txt": [("line 1", "first passage"), ("line 3", "second passage")],
        "b.jsonl": [("line 1 text", "one")],
        "c.json": [("questions[0].question", "why"), ("questions[0].answers[0]", "a"),
                   ("questions[0].answers[1]", "b")],
        "d.parquet": [("row 0 captions[0]", "x"), ("row 0 captions[1]", "y"), ("row 0 text", "z")],
    }
    with pytest.raises(ValueError, match=r"has none of the fields \['caption'\]"):
        list(read_passages(Part(str(tmp_path / "c.json"), str(tmp_path / "c.json")), ["caption"]))


# -------------------------------------------------------------------------------------------------- embedding


def test_an_embedding_match_needs_the_similarity_threshold():
    vectors = np.eye(3, dtype=np.float32)
    index = EmbeddingIndex(vectors, np.array([7, 8, 9]), 0.95)
    assert index.match(np.array([0.0, 0.95, np.sqrt(1 - 0.95**2)])) == (8, 0.95)
    assert index.match(np.array([0.0, 0.94, np.sqrt(1 - 0.94**2)])) is None


# -------------------------------------------------------------------------------------------------- the stage


def doc_id(index: int) -> str:
    return f"{index:020d}"


def document(index: int, texts: list[str], pictures: list[bytes], **metadata) -> Document:
    nodes = []
    for number, text in enumerate(texts):
        nodes.append(Node(text=text))
        if number < len(pictures):
            nodes.append(Node(image=DocImage(url=f"https://img.test/{index}/{number}.jpg", data=pictures[number])))
    return Document(doc_id=doc_id(index), url=f"https://site.test/{index}.html", nodes=nodes, metadata=metadata)


@pytest.fixture(scope="module")
def decontaminated(tmp_path_factory) -> tuple[Path, int]:
    """`m3w decontaminate` on six documents against a benchmark of two photographs and one passage."""
    root = tmp_path_factory.mktemp("decontaminate")
    (root / "bench").mkdir()
    for name in ("astronaut", "coffee"):
        (root / "bench" / f"{name}.jpg").write_bytes(jpeg(photo(name)))
    (root / "bench" / "questions.jsonl").write_text(json.dumps({"question": PASSAGE}) + "\n")
    unrelated = stored(photo("clock"))
    words = PASSAGE.split()
    docs = [
        document(0, [OTHER_TEXT, OTHER_TEXT + " again"], [COPIES["resize 90% + q70 + crop 3% each side"](
            photo("astronaut")), unrelated]),
        document(1, [OTHER_TEXT, f"As the quiz put it: {PASSAGE}?", "The rest of the page is ours."], [unrelated]),
        document(2, [PASSAGE], [unrelated]),
        document(3, [OTHER_TEXT], [jpeg(ImageOps.mirror(photo("coffee")))]),
        document(4, [OTHER_TEXT], [jpeg(photo("coffee"))], canary=True),
        document(5, [" ".join(words[:12]) + " and then something else entirely"], [unrelated]),
    ]
    (root / "docs").mkdir()
    (root / "docs" / "docs.parquet").write_bytes(parquet_bytes(docs, True, "zstd"))
    code = m3w(["decontaminate", "--input", str(root / "docs"), "--output", str(root / "out"),
                "--set", "runner.direct_running_mode=in_memory",
                "--set", f"decontaminate.images=['{root / 'bench'}/*.jpg']",
                "--set", f"decontaminate.texts=['{root / 'bench'}/*.jsonl']",
                "--set", "decontaminate.text.fields=[question]"])
    return root / "out", code


def test_the_stage_removes_what_matches_and_counts_every_item(decontaminated):
    out, code = decontaminated
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    stage = report["stages"]["decontaminate"]
    assert report["unbalanced"] == [] and report["broken_links"] == []
    assert (stage["documents"]["in"], stage["documents"]["out"]) == (6, 4)
    assert stage["documents"]["dropped"] == {"contaminated": 1, "no_images": 1}
    assert stage["documents"]["info"] == {"canary_exempt": 1}
    assert stage["images"]["dropped"] == {"contaminated": 2, "in_contaminated_document": 1}
    assert stage["paragraphs"]["dropped"] == {"contaminated": 2}
    assert stage["benchmark_pictures"]["info"] == {"indexed": 2}
    assert stage["benchmark_passages"]["info"] == {"indexed": 1}

    kept = {doc.doc_id: doc for doc in read_documents(sorted(str(p) for p in (out / "documents").glob("*.parquet")))}
    assert sorted(kept) == [doc_id(0), doc_id(1), doc_id(4), doc_id(5)]
    assert [image.url for image in kept[doc_id(0)].images] == ["https://img.test/0/1.jpg"]
    assert PASSAGE not in kept[doc_id(1)].text and "The rest of the page is ours." in kept[doc_id(1)].text
    assert len(kept[doc_id(4)].images) == 1 and kept[doc_id(5)].text.startswith(" ".join(PASSAGE.split()[:12]))


def test_every_match_is_audited_with_the_benchmark_file_and_item(decontaminated):
    out, _ = decontaminated
    lines = [json.loads(line) for line in (out / "contamination.jsonl").read_text().splitlines()]
    pictures = sorted((r["doc_id"], r["picture"], Path(r["file"]).name, r["view"]) for r in lines
                      if r["match"] == "picture")
    assert pictures == [(doc_id(0), "https://img.test/0/0.jpg", "astronaut.jpg", "as shown"),
                        (doc_id(3), "https://img.test/3/0.jpg", "coffee.jpg", "as shown mirrored")]
    paragraphs = sorted((r["doc_id"], r["item"], r["action"]) for r in lines if r["match"] == "paragraph")
    assert paragraphs == [(doc_id(1), "line 1 question", "paragraph removed"),
                          (doc_id(2), "line 1 question", "document dropped")]
    assert all(len(r["ngram"].split()) == 13 for r in lines if r["match"] == "paragraph")
    report = json.loads((out / "report.json").read_text())
    assert report["contamination"]["matches"] == 4


def test_the_summary_and_the_html_name_each_benchmark_file(tmp_path):
    records = [{"match": "picture", "benchmark": "coco", "file": "a.jpg", "item": "", "doc_id": "d1",
                "action": "picture removed"},
               {"match": "paragraph", "benchmark": "vqa.json", "file": "vqa.json", "item": "q[1]", "doc_id": "d2",
                "action": "document dropped"},
               {"match": "paragraph", "benchmark": "vqa.json", "file": "vqa.json", "item": "q[1]", "doc_id": "d2",
                "action": "document dropped"}]
    assert contamination_summary(records) == {
        "coco": {"pictures": 1, "paragraphs": 0, "documents_dropped": 0, "items": 1},
        "vqa.json": {"pictures": 0, "paragraphs": 2, "documents_dropped": 1, "items": 1}}
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "contamination.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report: dict = {}
    add_contamination(report, str(tmp_path), str(tmp_path / "stage"))
    assert (tmp_path / "contamination.jsonl").exists() and report["contamination"]["matches"] == 3
    assert "<td>vqa.json</td><td>1</td><td>0</td><td>2</td><td>1</td>" in render_html(report["contamination"])
    (tmp_path / "stage" / "contamination.jsonl").unlink()  # a later run without benchmarks: no stale copy
    add_contamination(report := {}, str(tmp_path), str(tmp_path / "stage"))
    assert not (tmp_path / "contamination.jsonl").exists() and "contamination" not in report
    assert "not checked" in render_html(None)


def test_a_benchmark_pattern_matching_nothing_is_refused_before_the_output_is_touched(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "docs.parquet").write_bytes(parquet_bytes([document(0, [OTHER_TEXT], [])], False, "zstd"))
    code = m3w(["decontaminate", "--input", str(tmp_path / "docs"), "--output", str(tmp_path / "out"),
                "--set", f"decontaminate.texts=['{tmp_path}/missing/*.jsonl']"])
    assert code == 2
    assert capsys.readouterr().err.strip() == \
        f"m3w: decontaminate.texts: '{tmp_path}/missing/*.jsonl' matches no .txt/.json/.jsonl/.parquet file"
    assert not (tmp_path / "out").exists()


def test_a_build_resumes_only_while_the_benchmark_files_are_unchanged(tmp_path):
    """The files the benchmark settings name join every stage's fingerprint: a folder stands for every file
    below it, so a picture added or replaced deep inside it redoes the build."""
    from pipeline.core.fingerprint import files_named_by, read_files

    (tmp_path / "coco" / "val").mkdir(parents=True)
    (tmp_path / "coco" / "val" / "1.jpg").write_bytes(b"a")
    (tmp_path / "q.jsonl").write_text("{}")
    config = load_config(overrides=[f"decontaminate.images=['{tmp_path}/coco']",
                                    f"decontaminate.texts=['{tmp_path}/*.jsonl']"])
    patterns = files_named_by(config)
    assert patterns == [f"{tmp_path}/coco/**", f"{tmp_path}/*.jsonl"]
    before = read_files(patterns)
    assert [Path(f.path).name for f in before] == ["1.jpg", "q.jsonl"]
    (tmp_path / "coco" / "val" / "2.jpg").write_bytes(b"b")
    assert read_files(patterns) != before
