"""`m3w dedup`: Parquet documents in, deduplicated Parquet + report.json + config.yaml out, deterministic."""

from __future__ import annotations

import json
import random
import string

import pytest
import yaml

from pipeline.cli import main as m3w
from pipeline.io.documents import document_files, parquet_bytes, read_documents
from schemas.document import Document, Image, Node

FAST = ["--set", "runner.direct_running_mode=in_memory", "--set", "dedup.near.max_rounds=4"]


def _text(seed: int, words: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(words))


def _documents() -> list[Document]:
    docs = []
    for i in range(30):
        seed = i if i % 10 else 0  # documents 10 and 20 repeat document 0's text under other URLs
        docs.append(Document(
            doc_id=f"{i:020x}", url=f"https://www.site.test/{i}", warc_date=f"2024-01-{i + 1:02d}T00:00:00Z",
            nodes=[Node(text=_text(seed)), Node(image=Image(url=f"https://img.test/{seed}.jpg", alt="a picture")),
                   Node(text="Subscribe to our newsletter for more stories.")]))
    return docs


@pytest.fixture
def input_dir(tmp_path):
    docs = _documents()
    folder = tmp_path / "in" / "documents"
    folder.mkdir(parents=True)
    (folder / "docs-00000-of-00002.parquet").write_bytes(parquet_bytes(docs[:15], False, "zstd"))
    (folder / "docs-00001-of-00002.parquet").write_bytes(parquet_bytes(docs[15:], False, "zstd"))
    return tmp_path / "in"


def test_dedup_command_writes_documents_report_and_config_deterministically(input_dir, tmp_path, capsys):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert m3w(["dedup", "--input", str(input_dir), "--output", str(out), *FAST]) == 0
        outputs.append(out)
    printed = capsys.readouterr().out
    assert "image content dedup skipped" in printed and "dedup_exact" in printed
    files = [sorted(p.name for p in (out / "documents").glob("*.parquet")) for out in outputs]
    assert files[0] == files[1] and len(files[0]) == 4  # output.doc_shards
    for name in files[0]:  # byte-identical shards
        assert (outputs[0] / "documents" / name).read_bytes() == (outputs[1] / "documents" / name).read_bytes()
    kept = read_documents(sorted(str(p) for p in (outputs[0] / "documents").glob("*.parquet")))
    assert sorted(int(d.doc_id, 16) for d in kept) == [i for i in range(30) if i not in (10, 20)]
    assert all("newsletter" not in d.text for d in kept)  # boilerplate of www.site.test
    report = json.loads((outputs[0] / "report.json").read_text())
    assert report["unbalanced"] == [] and report["image_dedup"] is False
    assert report["stages"]["dedup_read"]["documents"]["in"] == 30
    assert report["stages"]["dedup_exact"]["documents"]["dropped"] == {"exact_duplicate": 2}
    assert report["stages"]["dedup_paragraphs"]["paragraphs"]["dropped"] == {"boilerplate": 28}
    config = yaml.safe_load((outputs[0] / "config.yaml").read_text())
    assert config["dedup"]["near"]["max_rounds"] == 4 and config["dedup"]["near"]["bands"] == 14


def test_inputs_are_files_globs_or_directories(input_dir):
    files = sorted(str(p) for p in (input_dir / "documents").glob("*.parquet"))
    assert document_files([str(input_dir)]) == files  # an `m3w extract` output directory
    assert document_files([str(input_dir / "documents")]) == files
    assert document_files([str(input_dir / "documents" / "*-00001-*.parquet")]) == files[1:]
    with pytest.raises(FileNotFoundError, match="no Parquet"):
        document_files([str(input_dir / "missing")])


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    assert m3w(["dedup", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "out"), *FAST]) == 2
    assert "no Parquet document files found" in capsys.readouterr().err


def test_unreadable_rows_are_counted_and_unreadable_files_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.document import OBELICS_SCHEMA, document_to_row

    rows = [document_to_row(d) for d in _documents()[:3]]
    rows[1]["general_metadata"] = "{not json"
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=OBELICS_SCHEMA), folder / "docs.parquet")
    assert m3w(["dedup", "--input", str(folder), "--output", str(tmp_path / "out"), *FAST]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stages"]["dedup_read"]["documents"]["dropped"] == {"bad_row": 1}
    (folder / "docs.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(Exception, match="cannot read documents from .*docs.parquet"):
        m3w(["dedup", "--input", str(folder), "--output", str(tmp_path / "out2"), *FAST])
