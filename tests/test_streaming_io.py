"""The writers and readers that bound a build's memory: documents Parquet in row groups, shard tars streamed
from the image store, Parquet read a batch at a time, documents read back by reference (issue 14's 100k build)."""

from __future__ import annotations

import hashlib
import io
import os

import pyarrow.parquet as pq
import pytest

import pipeline.io.documents as documents_io
from pipeline.core.files import HashingWriter, open_atomically
from pipeline.images.store import ImageStore
from pipeline.io.documents import iter_rows, parquet_bytes, read_documents, write_parquet
from schemas.document import row_to_document
from schemas.shards import tar_bytes, write_tar
from tests.test_shards_helpers import drawn_bytes, make_document


def _docs(n: int) -> list:
    return [make_document(index, n_images=2, seed=index) for index in range(n)]


def test_documents_parquet_is_cut_into_row_groups_by_payload_and_reads_back_whole(tmp_path, monkeypatch):
    docs = _docs(12)
    whole = parquet_bytes(docs, with_bytes=True, compression="zstd")
    assert pq.ParquetFile(io.BytesIO(whole)).num_row_groups == 1  # 12 small documents: under 64 MiB

    per_doc = [documents_io._payload_bytes(doc, True) for doc in docs]
    assert all(size > sum(len(n.text or "") for n in doc.nodes) for size, doc in zip(per_doc, docs))  # images count
    monkeypatch.setattr(documents_io, "ROW_GROUP_BYTES", per_doc[0] + per_doc[1] + per_doc[2])
    cut = parquet_bytes(docs, with_bytes=True, compression="zstd")
    groups = pq.ParquetFile(io.BytesIO(cut)).metadata
    assert groups.num_row_groups >= 3
    assert groups.row_group(0).num_rows == 3  # the group is cut by the document that reaches the budget
    assert cut == parquet_bytes(docs, with_bytes=True, compression="zstd")  # deterministic

    path = tmp_path / "docs.parquet"
    path.write_bytes(cut)
    back = read_documents([str(path)])
    assert [d.doc_id for d in back] == [d.doc_id for d in docs]
    assert [[i.data for i in d.images] for d in back] == [[i.data for i in d.images] for d in docs]


def test_an_empty_documents_file_is_valid_parquet_with_the_schema(tmp_path):
    path = tmp_path / "empty.parquet"
    with open_atomically(str(path)) as handle:
        write_parquet(handle, [], with_bytes=True, compression="zstd")
    assert "image_bytes" in pq.read_schema(str(path)).names
    assert read_documents([str(path)]) == []


def test_rows_are_read_a_batch_at_a_time_and_a_damaged_file_is_an_error(tmp_path, monkeypatch):
    docs = _docs(7)
    path = tmp_path / "docs.parquet"
    path.write_bytes(parquet_bytes(docs, with_bytes=False, compression="zstd"))
    batches = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(documents_io, "READ_BATCH_ROWS", 3)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    rows = iter_rows(str(path))
    first = next(rows)
    assert row_to_document(first).doc_id == docs[0].doc_id
    assert batches == [3]  # one batch decoded for the first row, not the whole file
    assert len(list(rows)) == 6 and batches == [3, 3, 1]

    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"cannot read documents from .*damaged\.parquet"):
        list(iter_rows(str(damaged)))


def test_documents_read_with_a_store_carry_references_and_the_same_bytes(tmp_path):
    from pipeline.io.documents import _ReadDocumentFile

    docs = _docs(3)
    path = tmp_path / "docs.parquet"
    path.write_bytes(parquet_bytes(docs, with_bytes=True, compression="zstd"))
    store = ImageStore(str(tmp_path / "store"))
    carried = list(_ReadDocumentFile(None, None, store).process(str(path)))
    images = [image for doc in carried for image in doc.images]
    assert images and all(image.data is None and image.stored for image in images)
    assert [store.get(image.stored) for image in images] == [i.data for d in docs for i in d.images]


def test_streamed_tar_equals_the_in_memory_tar_and_its_digest(tmp_path):
    samples = [(f"doc{n}-0000", {"img0.jpg": drawn_bytes(n), "json": b'{"n": %d}' % n}) for n in (2, 0, 1)]
    expected = tar_bytes(samples)
    target = tmp_path / "shard.tar"
    with open_atomically(str(target)) as handle:
        tar = HashingWriter(handle)
        write_tar(tar, sorted(samples))
    assert target.read_bytes() == expected
    assert tar.size == len(expected) and tar.hexdigest() == hashlib.sha256(expected).hexdigest()


def test_a_failed_streamed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "shard.tar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="store lost an image"):
        with open_atomically(str(target)) as handle:
            handle.write(b"half a shard")
            raise RuntimeError("store lost an image")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["shard.tar"]
