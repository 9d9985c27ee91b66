"""Re-attaching fetched images to their documents (pipeline/images/transforms.py), without running a pipeline."""

from __future__ import annotations

import copy

from pipeline.images.download import DOWNLOAD, IMAGE_FILTER, DownloadSettings, ImageResult
from pipeline.images.transforms import USES, PlanDownloadsDoFn, RebuildDocumentsDoFn, document_key
from pipeline.settings import load_config
from schemas.document import Document, Image, Node


def doc_with(urls: list[str], **metadata) -> Document:
    nodes = [Node(text="intro")]
    for i, url in enumerate(urls):
        nodes += [Node(image=Image(url=url)), Node(text=f"after {i}")]
    return Document("ab" * 10, "https://site.example/p", nodes, metadata=metadata)


def ok(url: str) -> ImageResult:
    """A kept result as the fetcher leaves it: bytes in the image store, their sha256 in the meta."""
    return ImageResult(url, meta={"sha256": "sha-of-" + url, "nsfw_score": 0.01})


def shape(doc: Document) -> list[str]:
    return [f"img:{n.image.url}" if n.image else f"txt:{n.text}" for n in doc.nodes]


def test_failed_images_leave_the_sequence_and_neighbouring_texts_merge():
    doc = doc_with(["https://a.test/1.jpg", "https://a.test/2.jpg", "https://a.test/3.jpg"])
    results = {1: ok("https://a.test/1.jpg"), 3: ImageResult("https://a.test/2.jpg", "http_404", DOWNLOAD),
               5: ImageResult("https://a.test/3.jpg", "min_side", IMAGE_FILTER)}
    rebuilt = RebuildDocumentsDoFn().rebuild(copy.deepcopy(doc), 0, results)
    assert shape(rebuilt) == ["txt:intro", "img:https://a.test/1.jpg", "txt:after 0\n\nafter 1\n\nafter 2"]
    image = rebuilt.images[0]
    assert image.data is None and image.stored == image.meta["sha256"] == "sha-of-https://a.test/1.jpg"


def test_document_fates():
    doc = doc_with(["https://a.test/1.jpg", "https://a.test/2.jpg"])
    rebuild = RebuildDocumentsDoFn().rebuild
    nothing = {1: ImageResult("u", "timeout", DOWNLOAD), 3: ImageResult("v", "http_500", DOWNLOAD)}
    assert rebuild(copy.deepcopy(doc), 0, nothing) is None
    nsfw = {1: ok("https://a.test/1.jpg"), 3: ImageResult("https://a.test/2.jpg", "nsfw", IMAGE_FILTER)}
    assert rebuild(copy.deepcopy(doc), 0, nsfw) is None
    filtered = {1: ImageResult("u", "aspect_ratio", IMAGE_FILTER), 3: ImageResult("v", "format", IMAGE_FILTER)}
    assert rebuild(copy.deepcopy(doc), 0, filtered) is None
    both = {1: ok("https://a.test/1.jpg"), 3: ok("https://a.test/2.jpg")}
    assert len(rebuild(copy.deepcopy(doc), 0, both).images) == 2


def test_plan_never_emits_an_opted_out_or_unsafe_url_and_does_not_touch_its_input():
    config = load_config(overrides=["download.allow_loopback=false"])
    plan = PlanDownloadsDoFn(DownloadSettings.from_config(config["download"], "download"))
    opted = doc_with(["https://a.test/1.jpg"], opt_out=["noai"])
    outputs = list(plan.process(opted))
    assert [o for o in outputs if getattr(o, "tag", None) == USES] == []
    key, (planned, refused) = outputs[-1]
    assert refused == 1 and planned.images == [] and len(opted.images) == 1
    mixed = doc_with(["http://169.254.169.254/latest/meta-data/x.jpg", "https://a.test/2.jpg", "ftp://a.test/3.jpg"])
    outputs = list(plan.process(mixed))
    uses = [o.value for o in outputs if getattr(o, "tag", None) == USES]
    key, (planned, refused) = outputs[-1]
    assert uses == [("https://a.test/2.jpg", (key, 2))] and key == document_key(planned)
    assert shape(planned)[2] == "img:https://a.test/2.jpg" and refused == 0 and len(mixed.images) == 3
