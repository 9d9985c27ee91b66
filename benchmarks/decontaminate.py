"""Decontamination methods side by side: recall on planted near-copies of benchmark pictures, by kind of edit,
false positives on unrelated pictures, and the cost per training picture.

    python -m benchmarks.decontaminate [--index-size 100000] [--tiny]
                                       [--clip-checkpoint FILE --clip-arch ViT-B-32 | --clip-checkpoint FOLDER]

Benchmark pictures are real photographs from scikit-image's wheel (`skimage.data`, public domain / CC0), cut into
tiles that do not overlap (every other tile of each photograph; the rest are unrelated pictures), plus pictures of
the sample crawl's image host: a crop of one of those photographs under a seeded colour field (unrelated: other
seeds, so the same photographs under other fields). Every copy is planted by one kind of edit and then stored as
m3w's downloader keeps a picture by default (centred square, 320 px, JPEG 95); the kinds are the issue's (resize
to 90%, JPEG quality 70, a crop of 3/5/10% on each side, a mirror image) and three more: the done-when
combination (90%, quality 70, 3% cropped), a 5% crop at one corner, and the benchmark picture itself cropped 3%
(the copy shows more). A method's false-positive rate is the share of unrelated training pictures that match any
benchmark picture.

Methods: pHash of the whole picture (as shown, centred square, mirrored; within 4 bits as m3w's image dedup,
and within 8); imagehash's `crop_resistant_hash` (segments' dHashes, a match when one segment is within 25% of
its bits, imagehash's default; judged on the first 20 benchmark pictures and 20 unrelated ones of each
family, since it takes ~0.3 CPU-s a picture); m3w's windows (pipeline/decontaminate/
pictures.py: pHash and dHash of 41 crop hypotheses against each benchmark picture's core); and, with a local
open_clip checkpoint, an embedding (cosine ≥ `--clip-min-similarity`). Cost: CPU ms per training picture,
decoding included. Then m3w's windows against an index of `--index-size` benchmark pictures (synthetic fillers
from the image host plus the real ones): the time to hash each benchmark picture, the index size, the cost per
training picture, and recall and false positives against that index.
`--tiny`: a few pictures, a 300-picture index, crop_resistant_hash on one picture segmented at 120 px instead of
imagehash's 300 (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/decontaminate.py`: the repository root on the path
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipeline.decontaminate.pictures import PictureIndex, benchmark_entries, grey_grid

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
          "camera", "moon", "clock", "coins", "grass", "gravel", "brick", "cell", "colorwheel", "motorcycle")
TILE = 250  # px: the photographs are cut into tiles about this size


def jpeg(picture: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB")


def crop(picture: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = picture.size
    return picture.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def resized(picture: Image.Image, share: float) -> Image.Image:
    return picture.resize((round(picture.width * share), round(picture.height * share)), Image.Resampling.LANCZOS)


def stored(picture: Image.Image) -> bytes:
    """As m3w's downloader keeps a picture by default: the centred square at 320 px, JPEG quality 95."""
    return jpeg(ImageOps.fit(picture, (320, 320), Image.Resampling.LANCZOS), 95)


# kind → (what the benchmark holds, what the web shows), both from the original picture
KINDS: dict[str, Callable[[Image.Image], tuple[Image.Image, Image.Image]]] = {
    "resize 90%": lambda p: (p, decoded(jpeg(resized(p, 0.9)))),
    "JPEG q70": lambda p: (p, decoded(jpeg(p, 70))),
    "crop 3%": lambda p: (p, crop(p, 0.03, 0.03, 0.03, 0.03)),
    "crop 5%": lambda p: (p, crop(p, 0.05, 0.05, 0.05, 0.05)),
    "crop 10%": lambda p: (p, crop(p, 0.1, 0.1, 0.1, 0.1)),
    "mirror": lambda p: (p, ImageOps.mirror(p)),
    "90% + q70 + crop 3%": lambda p: (p, decoded(jpeg(crop(resized(p, 0.9), 0.03, 0.03, 0.03, 0.03), 70))),
    "crop 5% at a corner": lambda p: (p, crop(p, 0.05, 0.05, 0.0, 0.0)),
    "benchmark cropped 3%": lambda p: (crop(p, 0.03, 0.03, 0.03, 0.03), p),
}
CROPPED_BENCHMARK = "benchmark cropped 3%"


def photo_tiles(names: tuple[str, ...]) -> list[Image.Image]:
    from pipeline.sampledata.crawl.images import load_photo

    tiles = []
    for name in names:
        picture = load_photo(name)
        across, down = max(1, picture.width // TILE), max(1, picture.height // TILE)
        w, h = picture.width // across, picture.height // down
        tiles += [picture.crop((i * w, j * h, (i + 1) * w, (j + 1) * h)) for j in range(down) for i in range(across)]
    return tiles


def colour_fields(prefix: str, count: int, size: tuple[int, int] = (320, 256)) -> list[Image.Image]:
    from pipeline.sampledata.imagehost import generated_picture

    return [generated_picture(f"{prefix}-{i}", size) for i in range(count)]


# ------------------------------------------------------------------------------------------------ methods


@dataclass
class Method:
    """A way to match: `build` the index from benchmark pictures (bytes), `find` a training picture's item."""

    name: str
    build: Callable[[list[bytes]], object]
    find: Callable[[object, bytes], int | None]
    limit: int | None = None  # at most this many benchmark pictures (and their copies): slow methods
    cost_ms: list[float] = field(default_factory=list)
    note: Callable[[], str] | None = None  # lines printed under the table


def windows_method(name: str, max_crop: float, phash: int, dhash: int) -> Method:
    def build(pictures: list[bytes]) -> PictureIndex:
        entries = [e for item, data in enumerate(pictures) for e in benchmark_entries(data, item, max_crop)]
        return PictureIndex(entries, phash, dhash, max_crop)

    def find(index: PictureIndex, data: bytes) -> int | None:
        match = index.match(grey_grid(data)[0])
        return None if match is None else match.item

    return Method(name, build, find)


def crop_resistant_method(limit: int | None, segmentation_size: int) -> Method:
    import functools

    import imagehash

    hash_of = functools.partial(imagehash.crop_resistant_hash, segmentation_image_size=segmentation_size)

    def build(pictures: list[bytes]) -> list[tuple[int, object]]:
        index = []
        for item, data in enumerate(pictures):
            picture = decoded(data)
            for view in (picture, ImageOps.mirror(picture)):
                index.append((item, hash_of(view)))
        return index

    def find(index: list[tuple[int, object]], data: bytes) -> int | None:
        """The benchmark picture with the most matching segments (then the smallest distances), if any matches:
        imagehash's default, one segment within 25% of its bits."""
        query = hash_of(decoded(data))
        best, item_found = (0, 0.0), None
        for item, hashed in index:
            segments, distance = query.hash_diff(hashed)
            if segments and (segments, -distance) > best:
                best, item_found = (segments, -distance), item
        return item_found

    return Method("imagehash crop_resistant_hash (1 segment, 25% bits)", build, find, limit)


def embedding_method(checkpoint: str, arch: str | None, min_similarity: float, index_size: int) -> Method:
    """open_clip image embeddings from a local checkpoint (a weights file with `arch`, or a folder with its
    open_clip_config.json), one torch thread as in a Beam worker; a training picture is embedded alone (as the
    stage does); its note adds the load, the benchmark side and the search against `index_size` pictures."""
    from pipeline.decontaminate.embedding import EmbeddingIndex, EmbeddingSettings, PictureEmbedder

    settings = EmbeddingSettings(checkpoint, arch, min_similarity, 32, 1)
    started = time.process_time()
    embedder = PictureEmbedder(settings)
    loaded_s = time.process_time() - started
    benchmark_ms: list[float] = []

    def build(pictures: list[bytes]) -> EmbeddingIndex:
        started = time.process_time()
        vectors = embedder.embed(pictures)
        benchmark_ms.append(1000 * (time.process_time() - started) / max(1, len(pictures)))
        return EmbeddingIndex(vectors, np.arange(len(pictures)), min_similarity)

    def find(index: EmbeddingIndex, data: bytes) -> int | None:
        match = index.match(embedder.embed([data])[0])
        return None if match is None else match[0]

    def note() -> str:
        dimensions = embedder.embed([jpeg(Image.new("RGB", (32, 32)))]).shape[1]
        return (f"open_clip {arch or Path(checkpoint).name}: checkpoint loaded in {loaded_s:.1f} CPU-s; a benchmark "
                f"picture embedded in {np.median(benchmark_ms):.1f} CPU-ms (batches of {settings.batch_size})\n"
                + embedding_search(index_size, dimensions))

    return Method(f"open_clip {arch or Path(checkpoint).name} embedding (cosine >= {min_similarity})", build, find,
                  note=note)


def embedding_search(size: int, dimensions: int, queries: int = 50) -> str:
    """The exhaustive search's own cost against `size` benchmark embeddings (random unit vectors: the search
    does not depend on their values), one thread."""
    from pipeline.decontaminate.embedding import EmbeddingIndex

    random = np.random.default_rng(0)
    vectors = random.standard_normal((size, dimensions), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = EmbeddingIndex(vectors, np.arange(size), 0.95)
    costs = []
    for query in vectors[:queries]:
        started = time.process_time()
        index.match(query)
        costs.append(1000 * (time.process_time() - started))
    return (f"open_clip embedding search against {size:,} benchmark pictures ({dimensions} floats each, "
            f"{index.vectors.nbytes / 2**20:.0f} MB): {np.median(costs):.2f} CPU-ms per training picture")


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class Data:
    originals: list[Image.Image]  # the benchmark pictures, before any edit: photo tiles, then colour fields
    photo_tiles: int
    unrelated: dict[str, list[bytes]]  # family → training pictures that are no copy of any benchmark picture


def make_data(tiny: bool) -> Data:
    tiles = photo_tiles(PHOTOS[:3] if tiny else PHOTOS)
    bench_tiles, other_tiles = tiles[0::2], tiles[1::2]
    fields = (2, 4) if tiny else (40, 200)
    if tiny:
        bench_tiles, other_tiles = bench_tiles[:3], other_tiles[:4]
    return Data(originals=bench_tiles + colour_fields("bench", fields[0]), photo_tiles=len(bench_tiles),
                unrelated={"photo tiles": [stored(p) for p in other_tiles],
                           "colour fields": [stored(p) for p in colour_fields("other", fields[1])]})


def judge(method: Method, data: Data) -> dict[str, str]:
    """Recall per kind ("found/planted") and false positives per family ("matched/unrelated")."""
    originals = data.originals[:method.limit] if method.limit else data.originals
    cells: dict[str, str] = {}
    plain = method.build([jpeg(original) for original in originals])
    for kind, edit in KINDS.items():
        pairs = [edit(original) for original in originals]
        index = method.build([jpeg(bench) for bench, _ in pairs]) if kind == CROPPED_BENCHMARK else plain
        found = 0
        for item, (_, web) in enumerate(pairs):
            picture = stored(web)
            started = time.process_time()
            found += method.find(index, picture) == item
            method.cost_ms.append(1000 * (time.process_time() - started))
        cells[kind] = f"{found}/{len(pairs)}"
    for family, pictures in data.unrelated.items():
        pictures = pictures[:method.limit] if method.limit else pictures
        matched = 0
        for picture in pictures:
            started = time.process_time()
            matched += method.find(plain, picture) is not None
            method.cost_ms.append(1000 * (time.process_time() - started))
        cells[family] = f"{matched}/{len(pictures)} ({100 * matched / max(1, len(pictures)):.1f}%)"
    return cells


def at_scale(size: int, data: Data) -> list[str]:
    """m3w's windows against `size` benchmark pictures: the real ones plus synthetic fillers."""
    fillers = size - len(data.originals)
    started = time.process_time()
    entries, item = [], 0
    for picture in data.originals:
        entries += benchmark_entries(jpeg(picture), item, 0.1)
        item += 1
    hash_started = time.process_time()
    for number in range(fillers):  # small synthetic pictures: the index's size matters here, not their pixels
        entries += benchmark_entries(jpeg(colour_fields(f"filler{number}", 1, (96, 80))[0], 85), item, 0.1)
        item += 1
    per_picture_ms = 1000 * (time.process_time() - hash_started) / max(1, fillers)
    index = PictureIndex(entries, 8, 12, 0.1)
    build_s = time.process_time() - started
    index_mb = sum(a.nbytes for a in (index.phash, index.dhash, index.item, index.view, *index.order,
                                      *index.starts)) / 2**20
    copies = [stored(KINDS["90% + q70 + crop 3%"](p)[1]) for p in data.originals]
    unrelated = [(family, number, p) for family, pictures in data.unrelated.items()
                 for number, p in enumerate(pictures)]
    costs, found, false = [], 0, []
    for item_number, picture in enumerate(copies + [p for *_, p in unrelated]):
        started = time.process_time()
        match = index.match(grey_grid(picture)[0])
        costs.append(1000 * (time.process_time() - started))
        if item_number < len(copies):
            found += match is not None and match.item == item_number
        elif match is not None:
            family, number, _ = unrelated[item_number - len(copies)]
            kind = "a real one" if match.item < len(data.originals) else "a synthetic filler"
            false.append(f"  false positive: {family} #{number} matched {kind} ({match.view}, {match.hypothesis}, "
                         f"pHash {match.phash_distance}, dHash {match.dhash_distance})")
    return [f"| {size:,} | {len(entries):,} | {per_picture_ms:.2f} | {build_s:.1f} | {index_mb:.1f} MB "
            f"| {np.median(costs):.2f} | {found}/{len(copies)} | {len(false)}/{len(unrelated)} "
            f"({100 * len(false) / max(1, len(unrelated)):.2f}%) |", *false]


def main() -> int:
    parser = argparse.ArgumentParser(prog="decontaminate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-size", type=int, default=100_000, help="benchmark pictures in the index at scale")
    parser.add_argument("--crop-resistant-pictures", type=int, default=20,
                        help="benchmark pictures (and unrelated ones per family) crop_resistant_hash is judged on: "
                             "it takes ~0.3 CPU-s a picture")
    parser.add_argument("--clip-checkpoint", help="a local open_clip checkpoint: adds the embedding method (a "
                        "weights file with --clip-arch, or a folder with its open_clip_config.json)")
    parser.add_argument("--clip-arch", help="the weights file's open_clip architecture, e.g. ViT-B-32")
    parser.add_argument("--clip-min-similarity", type=float, default=0.95)
    parser.add_argument("--tiny", action="store_true", help="a few pictures, a 300-picture index")
    args = parser.parse_args()
    if args.tiny:
        args.index_size, args.crop_resistant_pictures = 300, 1
    data = make_data(args.tiny)
    methods = [windows_method("pHash, whole picture (<= 4 bits, as image dedup)", 0.0, 4, 64),
               windows_method("pHash, whole picture (<= 8 bits)", 0.0, 8, 64),
               crop_resistant_method(args.crop_resistant_pictures, 120 if args.tiny else 300),
               windows_method("m3w windows: pHash <= 8 and dHash <= 12 over 41 crops", 0.1, 8, 12)]
    if args.clip_checkpoint:
        methods.append(embedding_method(args.clip_checkpoint, args.clip_arch, args.clip_min_similarity,
                                        args.index_size))
    print(f"command: python -m benchmarks.decontaminate {' '.join(sys.argv[1:])}".rstrip())
    print(f"benchmark: {len(data.originals)} pictures ({data.photo_tiles} photo tiles from skimage.data, "
          f"{len(data.originals) - data.photo_tiles} colour-field pictures); unrelated: "
          + ", ".join(f"{len(v)} {k}" for k, v in data.unrelated.items())
          + "; copies stored as the downloader keeps them (centred square, 320 px, JPEG 95)")
    columns = [*KINDS, *(f"false positives: {family}" for family in data.unrelated)]
    print("| method | " + " | ".join(columns) + " | CPU ms per training picture |")
    print("|---" * (len(columns) + 2) + "|")
    for method in methods:
        cells = judge(method, data)
        print(f"| {method.name} | " + " | ".join(cells[c.removeprefix('false positives: ')] for c in columns)
              + f" | {np.median(method.cost_ms):.2f} |")
    if not args.clip_checkpoint:
        print("| open_clip embedding | not measured: no local checkpoint given (--clip-checkpoint; needs "
              "open_clip_torch, nothing is downloaded) |")
    for method in methods:
        if method.note:
            print(method.note())
    print()
    print("m3w windows against a large benchmark index (the real pictures plus synthetic fillers):")
    print("| benchmark pictures | index entries | ms per benchmark picture (hash) | index build s | index memory "
          "| CPU ms per training picture (median) | planted copies found (90% + q70 + crop 3%) "
          "| false positives on unrelated pictures |")
    print("|---|---|---|---|---|---|---|---|")
    for line in at_scale(args.index_size, data):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
