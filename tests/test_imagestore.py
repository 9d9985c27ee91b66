"""The content-addressed image store: images stored once, documents by reference, damage never passes."""

from __future__ import annotations

import copy
import hashlib

import pytest

from filters.images import ImageFilterSettings
from pipeline.core.failures import BreakerSettings
from pipeline.images.download import DownloadSettings, FetchShardsDoFn, ImageResult
from pipeline.images.store import ImageStore, StoreError
from pipeline.settings import load_config
from schemas.document import Document, Image, Node


def test_put_get_once_by_content_and_damage_is_an_error(tmp_path):
    store = ImageStore.in_workdir(str(tmp_path / "work"))
    sha = store.put(b"picture bytes")
    assert sha == hashlib.sha256(b"picture bytes").hexdigest()
    path = tmp_path / "work" / "images" / sha[:2] / sha
    assert path.read_bytes() == b"picture bytes" and store.get(sha) == b"picture bytes"
    assert store.put(b"picture bytes") == sha and len(list((tmp_path / "work" / "images").rglob("*"))) == 2
    path.write_bytes(b"picture byte")  # truncated by a crash
    assert not store.verified(sha)
    with pytest.raises(StoreError, match="does not match its sha256"):
        store.get(sha)
    path.unlink()
    with pytest.raises(StoreError, match="missing from the image store"):
        store.get(sha)


def test_documents_travel_by_reference_and_get_their_bytes_back(tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    nodes = [Node(text="t"), Node(image=Image("https://a.test/1.jpg", data=b"one")),
             Node(image=Image("https://a.test/2.jpg"))]
    doc = Document("d" * 20, "https://a.test/p", nodes)
    original = copy.deepcopy(doc)
    light = store.by_reference(doc)
    assert doc == original, "the input is never mutated"
    assert light.nodes[1].image.data is None and light.nodes[1].image.stored == hashlib.sha256(b"one").hexdigest()
    assert light.nodes[2].image.stored is None, "an image never downloaded stays without bytes or reference"
    again = store.with_bytes(light)
    assert [n.image.data if n.image else n.text for n in again.nodes] == ["t", b"one", None]
    assert store.with_bytes(doc) is doc, "a document with its bytes inline is written as it is"


def test_a_finished_download_shard_whose_images_did_not_survive_is_fetched_again(tmp_path):
    config = load_config()
    breaker = BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker")
    fetcher = FetchShardsDoFn(str(tmp_path / "work"), DownloadSettings.from_config(config["download"], "download"),
                              ImageFilterSettings.from_config(config["image_filters"], "image_filters"), breaker)
    kept = ImageResult("https://a.test/1.jpg", meta={"sha256": fetcher.store.put(b"one")})
    dropped = ImageResult("https://a.test/2.jpg", "http_404", "download")
    fetcher._store("shard-00000-of-00001-x", [kept, dropped])
    results, stopped = fetcher._load("shard-00000-of-00001-x", 2)
    assert [r.url for r in results] == [kept.url, dropped.url] and not stopped
    sha = kept.meta["sha256"]
    (tmp_path / "work" / "images" / sha[:2] / sha).write_bytes(b"")  # renamed, but the data never reached the disk
    assert fetcher._load("shard-00000-of-00001-x", 2) is None
