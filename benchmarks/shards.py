"""Shard writing and reading throughput: can the writer keep up per core, can a loader feed a trainer?

    python -m benchmarks.shards [--documents 300] [--seq-len 256] [--tiny]

Builds synthetic documents in memory (scikit-image's public-domain photos, cropped and flipped so each
image is distinct, plus drawn pictures; 1-6 images and 150-900 words each; sources ~640x480 JPEG), then
measures, on this machine:
  (a) sequences/s written on one core by the shard writer's own work (image fitting to 320x320 JPEG,
      tokenizing, windows, φ, npy + tar encoding), without Beam;
  (b) sequences/s through the whole `m3w shard` Beam job on one core (in-memory runner: Parquet read,
      BPE training, shuffle, shard + manifest writes);
  (c) samples/s read back through a plain `webdataset.WebDataset` loader, with images decoded to uint8
      arrays (what a trainer needs) and without, and through `schemas.shards.iter_samples`.
`--tiny`: 6 documents (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/shards.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import io
import os
import random
import tempfile
import time
from pathlib import Path

from tests.test_shards_helpers import PHOTOS, WORDS, drawn_bytes, write_documents


class Timer:
    """Wall time and this process's CPU time: on a shared machine CPU time gives the per-core rate."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, count: int) -> str:
        return f"{count / self.wall:8.1f}/s wall, {count / self.cpu:8.1f}/s per CPU-second"


def photo_variant(index: int) -> bytes:
    import numpy as np
    import skimage.data
    from PIL import Image as PILImage

    rng = random.Random(index)
    pixels = getattr(skimage.data, PHOTOS[index % len(PHOTOS)])()
    height, width = pixels.shape[:2]
    top, left = rng.randrange(height // 4), rng.randrange(width // 4)
    crop = pixels[top:top + 3 * height // 4, left:left + 3 * width // 4]
    if rng.random() < 0.5:
        crop = np.ascontiguousarray(crop[:, ::-1])
    image = PILImage.fromarray(crop).resize((640, 480))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def synthetic_documents(count: int, seed: int = 0):
    from schemas.document import Document, Image, Node, make_doc_id

    rng = random.Random(seed)
    docs = []
    for index in range(count):
        url = f"https://news{index % 17}.example.test/{index}.html"
        nodes = []
        n_images = rng.randint(1, 6)
        words = rng.randint(150, 900)
        per_chunk = max(1, words // (n_images + 1))
        for k in range(n_images + 1):
            text = " ".join(rng.choice(WORDS) for _ in range(per_chunk))
            nodes.append(Node(text=text[0].upper() + text[1:] + "."))
            if k < n_images:
                data = photo_variant(index * 7 + k) if k % 2 == 0 else drawn_bytes(index * 7 + k, (640, 480), "JPEG")
                nodes.append(Node(image=Image(url=f"https://img.example.test/{index}/{k}.jpg", data=data)))
        docs.append(Document(doc_id=make_doc_id(url, "bench.warc.gz", index), url=url, nodes=nodes,
                             metadata={"language": "en"}))
    return docs


def writer_one_core(docs, config, store_dir: Path) -> tuple[int, float]:
    """The shard writer's work per document, timed in this process (one core), Beam left out: fitted images go
    through the image store (`store_dir`) and are read back for the tar, as in the job."""
    from pipeline.core.failures import BreakerSettings
    from pipeline.images.store import ImageStore
    from pipeline.shards.settings import ShardSettings
    from pipeline.shards.tokenizer import train_bpe
    from pipeline.shards.writer import BuildSamplesDoFn, StoredMember
    from schemas.shards import tar_bytes

    shards = config["shards"]
    info = train_bpe((d.text for d in docs), int(shards["bpe_vocab_size"]), int(shards["bpe_min_frequency"]))
    store = ImageStore(str(store_dir))
    breaker = BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker")
    fn = BuildSamplesDoFn(ShardSettings.from_config(shards, "shards"), breaker, store)
    fn.setup()
    with Timer() as timer:
        records = [item for doc in docs for item in fn.process(doc, info) if isinstance(item, tuple)]
        tar_bytes([(key, {suffix: store.get(data.sha256) if isinstance(data, StoredMember) else data
                          for suffix, data in members.items()}) for key, members in records])
    return len(records), timer


def beam_one_core(docs_dir: Path, out: Path, config) -> tuple[dict, float]:
    from pipeline.jobs.stages import run_shard

    with Timer() as timer:
        report = run_shard([str(docs_dir)], str(out), config)
    return report, timer


def read_webdataset(shards: list[str], decode: bool) -> tuple[int, float]:
    import webdataset as wds

    dataset = wds.WebDataset(shards, shardshuffle=False)
    if decode:
        dataset = dataset.decode("rgb8")
    with Timer() as timer:
        count = sum(1 for _ in dataset)
    return count, timer


def read_iter_samples(source: str) -> tuple[int, float]:
    from schemas.shards import iter_samples

    with Timer() as timer:
        count = sum(1 for sample in iter_samples(source, decode_images=True))
    return count, timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="6 documents: seconds")
    args = parser.parse_args()
    if args.tiny:
        args.documents = 6

    from pipeline.settings import load_config
    from schemas.shards import shard_paths

    config = load_config(overrides=["runner.direct_running_mode=in_memory", f"shards.seq_len={args.seq_len}",
                                    "shards.bpe_vocab_size=4096", "shards.target_shard_bytes=50000000"])
    docs = synthetic_documents(args.documents)
    n_images = sum(len(d.images) for d in docs)
    with tempfile.TemporaryDirectory() as tmp:
        docs_dir = Path(tmp) / "docs"
        write_documents(docs, docs_dir, files=4)
        sequences, t_writer = writer_one_core(docs, config, Path(tmp) / "store")
        report, t_beam = beam_one_core(docs_dir, Path(tmp) / "out", config)
        shards = shard_paths(str(Path(tmp) / "out"))
        size = sum(os.path.getsize(p) for p in shards)
        read_webdataset(shards, decode=False)  # warm the page cache and imports
        n_raw, t_raw = read_webdataset(shards, decode=False)
        n_dec, t_dec = read_webdataset(shards, decode=True)
        n_own, t_own = read_iter_samples(str(Path(tmp) / "out"))
    written = report["shards"]["samples"]
    print(f"command: python -m benchmarks.shards --documents {args.documents} --seq-len {args.seq_len}")
    print(f"input: {len(docs)} documents, {n_images} images (~640x480 JPEG); output: {written} sequences of "
          f"{args.seq_len} tokens, {len(shards)} shard(s), {size / 1e6:.1f} MB, images 320x320 JPEG q90")
    print(f"(a) shard writer work, 1 core, no Beam, sequences:  {t_writer.rates(sequences)} "
          f"(images: {n_images / t_writer.cpu:.1f}/s per CPU-second)")
    print(f"(b) `m3w shard` Beam job, in-memory, sequences:     {t_beam.rates(written)} "
          f"({t_beam.wall:.1f} s incl. start-up, Parquet, BPE training)")
    print(f"(c) read, webdataset, images decoded (rgb8):        {t_dec.rates(n_dec)}")
    print(f"    read, webdataset, raw bytes:                    {t_raw.rates(n_raw)}")
    print(f"    read, schemas.shards.iter_samples + decode:     {t_own.rates(n_own)}")
    print(f"    one decoding loader process feeds {n_dec / t_dec.cpu * args.seq_len:,.0f} tokens per CPU-second")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
