"""Test data for the shard tests: documents built in memory with real photographs (scikit-image's bundled
public-domain pictures) and drawn images, written as OBELICS Parquet, and a helper that runs `m3w shard`.

Imported by tests/test_shards*.py, tests/test_inspect*.py and benchmarks/shards.py; it holds no tests.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from pipeline.io.documents import parquet_bytes
from pipeline.settings import load_config
from schemas.document import Document, Image, Node, make_doc_id

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel")
WORDS = ("river stone light garden window market bridge harbour morning winter paper village mountain engine "
         "forest table music letter station summer orange silver castle theatre island museum kitchen bicycle "
         "library meadow lantern feather compass pepper velvet canyon glacier meteor pebble orchard").split()
# The drawn "marker" image: magenta with a cyan disc, colours found nowhere else on an inspector page.
MARKER_BACKGROUND = (255, 0, 255)
MARKER_DISC = (0, 255, 255)


def encode(pixels: np.ndarray | PILImage.Image, image_format: str = "JPEG", quality: int = 92) -> bytes:
    image = pixels if isinstance(pixels, PILImage.Image) else PILImage.fromarray(pixels)
    out = io.BytesIO()
    image.convert("RGB").save(out, format=image_format, quality=quality)
    return out.getvalue()


def photo_bytes(index: int) -> bytes:
    import skimage.data

    return encode(getattr(skimage.data, PHOTOS[index % len(PHOTOS)])())


def drawn_bytes(seed: int, size: tuple[int, int] = (480, 360), image_format: str = "PNG") -> bytes:
    """A deterministic picture of random shapes (each seed a different one)."""
    rng = random.Random(seed)
    image = PILImage.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(size[0] - 40), rng.randrange(size[1] - 40)
        box = (x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 200))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return encode(image, image_format)


def marker_bytes(size: tuple[int, int] = (400, 400)) -> bytes:
    image = PILImage.new("RGB", size, MARKER_BACKGROUND)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4), fill=MARKER_DISC)
    return encode(image, "PNG")


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def make_document(index: int, n_images: int, words_per_text: int = 40, seed: int = 0,
                  language: str = "en", host: str | None = None, image_first: bool = False,
                  image_source=None) -> Document:
    """A document alternating text and images (optionally opening with an image)."""
    rng = random.Random(seed * 100_003 + index)
    url = f"https://{host or f'site{index % 3}.test'}/articles/{index}.html"
    nodes: list[Node] = []
    source = image_source or (lambda k: drawn_bytes(index * 31 + k) if k % 2 else photo_bytes(index + k))
    for k in range(n_images):
        if not (image_first and k == 0):
            nodes.append(Node(text=" ".join(sentence(rng, max(3, words_per_text // 4)) for _ in range(4))))
        nodes.append(Node(image=Image(url=f"https://img.{host or 'sample'}.test/{index}/{k}.jpg",
                                      alt=f"picture {k}", data=source(k))))
    nodes.append(Node(text=sentence(rng, words_per_text)))
    return Document(doc_id=make_doc_id(url, "test.warc.gz", index), url=url, nodes=nodes,
                    warc_filename="test.warc.gz", warc_record_offset=index, metadata={"language": language})


def sample_documents() -> list[Document]:
    """A small varied corpus: short and long documents, 0..7 images, an image-first page, a marker image,
    an undecodable image, an image without bytes, two languages, three domains."""
    docs = [make_document(i, n_images=i % 8, words_per_text=12 + 17 * (i % 5)) for i in range(10)]
    docs.append(make_document(10, n_images=2, image_first=True, language="fr"))
    marker = make_document(11, n_images=2, words_per_text=20, host="marker.test",
                           image_source=lambda k: marker_bytes() if k == 0 else photo_bytes(k))
    docs.append(marker)
    broken = make_document(12, n_images=3, words_per_text=20, language="de")
    broken.nodes[1].image.data = b"\x89PNG\r\n\x1a\n not really a png"
    broken.nodes[3].image.data = None
    docs.append(broken)
    return docs


def write_documents(docs: list[Document], directory: Path, files: int = 2) -> list[Path]:
    """Documents → OBELICS Parquet files with image bytes (what `m3w shard` reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(files):
        path = directory / f"docs-{n:05d}.parquet"
        path.write_bytes(parquet_bytes(docs[n::files], with_bytes=True, compression="zstd"))
        paths.append(path)
    return paths


def shard_config(*overrides: str, running_mode: str = "in_memory") -> dict:
    return load_config(overrides=[f"runner.direct_running_mode={running_mode}", "runner.direct_num_workers=2",
                                  "shards.bpe_vocab_size=600", "shards.target_shard_bytes=400000", *overrides])


def build_shards(docs_dir: Path, out: Path, *overrides: str, running_mode: str = "in_memory") -> dict:
    """Run `m3w shard` (the job function) and return its report."""
    from pipeline.jobs.stages import run_shard

    return run_shard([str(docs_dir)], str(out), shard_config(*overrides, running_mode=running_mode))
