"""Image dedup after download: in-document, exact and perceptual duplicates, identical image sets."""

from __future__ import annotations

import io

import apache_beam as beam
import numpy as np
import pytest
from PIL import Image as PILImage

from pipeline.core.accounting import query_counts, stage_table, unbalanced
from pipeline.core.failures import BreakerSettings
from pipeline.dedup import DedupImages
from pipeline.dedup.images import ImageDedupSettings
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from schemas.document import Document, Image, Node
from tests.test_dedup_components import Collect, collected


def picture(seed: int, size: int = 240) -> PILImage.Image:
    """A smooth random picture (low-frequency colour noise): pHash sees it as a photograph."""
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).resize((size, size),
                                                                                            PILImage.BICUBIC)


def encode(image: PILImage.Image, fmt: str = "PNG", size: int | None = None, **kwargs) -> bytes:
    if size:
        image = image.resize((size, size), PILImage.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def doc(doc_id: str, date: str, *images: tuple[str, bytes | None]) -> Document:
    nodes = [Node(text=f"Intro of {doc_id}.")]
    for url, data in images:
        nodes += [Node(image=Image(url=url, data=data)), Node(text=f"After {url}.")]
    return Document(doc_id=doc_id, url=f"https://site.test/{doc_id}", nodes=nodes, warc_date=date)


@pytest.fixture
def docs() -> list[Document]:
    p = {seed: picture(seed) for seed in range(1, 9)}
    photo1 = encode(p[1])
    return [
        doc("a", "2024-01-01T00:00:00Z", ("u/1.png", photo1), ("u/1-small.jpg", encode(p[1], "JPEG", 150, quality=70)),
            ("u/2.png", encode(p[2]))),
        doc("b", "2024-02-01T00:00:00Z", ("u/copy-of-1.png", photo1), ("u/3.png", encode(p[3]))),
        doc("c", "2024-03-01T00:00:00Z", ("u/2.webp", encode(p[2], "WEBP", 180, quality=60))),
        doc("d", "2024-01-05T00:00:00Z", ("u/4.png", encode(p[4])), ("u/5.png", encode(p[5]))),
        doc("e", "2024-01-06T00:00:00Z", ("u/5.jpg", encode(p[5], "JPEG", quality=80)),
            ("u/4.jpg", encode(p[4], "JPEG", 200, quality=85))),  # the same two pictures as d
        doc("f", "2024-01-01T00:00:00Z", ("u/broken.jpg", b"\xff\xd8\xff not a jpeg"), ("u/6.png", encode(p[6]))),
        doc("g", "2024-01-01T00:00:00Z", ("u/not-downloaded.jpg", None), ("u/7.png", encode(p[7]))),
        doc("h", "2024-01-01T00:00:00Z", ("u/8.png", encode(p[8]))),
    ]


def dedup_images(config: dict) -> DedupImages:
    return DedupImages(ImageDedupSettings.from_config(config["dedup"]["images"], "dedup.images"),
                       BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker"))


@pytest.fixture
def run(fast_config, tmp_path):
    fast_config["dedup"]["images"]["max_rounds"] = 4
    runs = iter(range(10))

    def run_dedup(docs: list[Document]) -> tuple[dict[str, Document], dict]:
        out = tmp_path / f"run{next(runs)}"
        pipeline = make_pipeline([], RunnerSettings.from_config(fast_config["runner"], "runner"))
        pipeline | beam.Create(docs) | dedup_images(fast_config) | Collect(out)
        result = pipeline.run()
        result.wait_until_finish()
        table = stage_table(query_counts(result))
        assert unbalanced(table) == []
        return {d.doc_id: d for d in collected(out)}, table["dedup_images"]

    return run_dedup


def urls(document: Document) -> list[str]:
    return [image.url for image in document.images]


def test_duplicates_within_and_across_documents(docs, run):
    kept, stage = run(docs)
    assert sorted(kept) == ["a", "b", "d", "f", "g", "h"]
    assert urls(kept["a"]) == ["u/1.png", "u/2.png"]  # its own resized copy of picture 1 goes
    assert urls(kept["b"]) == ["u/3.png"]  # the same bytes as a's picture: a was crawled first
    assert urls(kept["d"]) == ["u/4.png", "u/5.png"]
    assert urls(kept["f"]) == ["u/6.png"] and urls(kept["g"]) == ["u/not-downloaded.jpg", "u/7.png"]
    assert [n.text for n in kept["a"].nodes if n.text] == ["Intro of a.", "After u/1.png.\n\nAfter u/1-small.jpg.",
                                                           "After u/2.png."]
    meta = kept["a"].images[0].meta
    assert len(meta["phash"]) == 16 and len(meta["sha256"]) == 64
    assert stage["images"]["dropped"] == {
        "duplicate_in_document": 1, "exact_duplicate": 1, "perceptual_duplicate": 1,
        "identical_image_set": 2, "undecodable": 1}
    assert stage["images"]["in"] == 15 and stage["images"]["info"] == {"no_data": 1}
    assert stage["documents"]["dropped"] == {"identical_image_set": 1, "no_images": 1}
    assert stage["clusters"]["info"] == {"image_size_2": 4}  # pictures 1, 2, 4, 5 across documents


def test_copies_allowed_per_picture_and_image_sets_switch(docs, fast_config, run):
    fast_config["dedup"]["images"]["max_copies"] = 2
    fast_config["dedup"]["images"]["identical_image_sets"] = False
    photo = encode(picture(11))  # one picture in twelve more documents: the first two crawled keep it
    many = [doc(f"p{i:02d}", f"2024-01-{i + 1:02d}T00:00:00Z", ("u/shared.png", photo),
                (f"u/own{i}.png", encode(picture(100 + i)))) for i in range(12)]
    kept, stage = run(docs + many)
    assert sorted(kept) == sorted(d.doc_id for d in docs + many)
    assert urls(kept["b"]) == ["u/copy-of-1.png", "u/3.png"] and urls(kept["c"]) == ["u/2.webp"]
    assert urls(kept["e"]) == ["u/5.jpg", "u/4.jpg"]
    assert sorted(d for d in kept if "u/shared.png" in urls(kept[d])) == ["p00", "p01"]
    assert stage["images"]["dropped"] == {"duplicate_in_document": 1, "undecodable": 1, "exact_duplicate": 10}
    assert stage["clusters"]["info"] == {"image_size_2": 4, "image_size_11-100": 1}


def test_bad_settings_are_refused(fast_config):
    fast_config["dedup"]["images"]["hash_size"] = 16
    with pytest.raises(ValueError, match="hash_size"):
        dedup_images(fast_config)
    fast_config["dedup"]["images"]["hash_size"] = 8
    fast_config["dedup"]["images"]["hamming_threshold"] = 64
    with pytest.raises(ValueError, match="hamming_threshold"):
        dedup_images(fast_config)
