"""Dedup scaling: time and peak memory of document dedup on synthetic documents, local Beam runner.

    python -m benchmarks.dedup [--sizes 10000 100000 1000000] [--workers 2] [--images] [--tiny]

For each size, one fresh process builds the documents inside the pipeline (no driver-side list)
and runs `DedupDocuments` (URL → exact → MinHash near → paragraphs) and `DropFrequentImageUrls`
with the default config on the local multi-process runner; `--images` also gives every document a
small downloaded picture (some re-encoded copies) and runs `DedupImages`. The parent samples the
resident memory of the whole process tree (runner + workers) from /proc every 0.1 s. Prints the
table (seconds, documents/s, µs per document, peak RSS) and checks the planted duplicates were found.

Synthetic web: 50 documents per domain, ~150 words each from a 30,000-word vocabulary, a cookie
notice on every page of a domain, a domain logo image on every page; planted: 4% older crawls of
the same URL, 4% exact copies, 4% near copies (2 words changed) on other domains, and 4% pages that
show another page's photo re-encoded and resized under a new URL (found by `--images`).
`--tiny`: 200 documents with images, one worker (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/dedup.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import random
import string
import subprocess
import sys
import time

from benchmarks._proctree import ProcessTreeSampler

DOCS_PER_SHARD = 2000
DOCS_PER_DOMAIN = 50
WORDS_PER_DOC = 150
PLANTED = 0.04  # of each kind


_VOCABULARY: list[str] = []  # filled once per worker (a plain list: this module is pickled by value)


def _vocabulary(size: int = 30000) -> list[str]:
    if not _VOCABULARY:
        rng = random.Random(12345)
        _VOCABULARY.extend("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(size))
    return _VOCABULARY


def _picture(seed: int, size: int, fmt: str) -> bytes:
    import io

    import numpy as np
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    image = PILImage.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).resize((size, size),
                                                                                           PILImage.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=80)
    return buffer.getvalue()


def generate_shard(shard: int, total: int, with_images: bool):
    """Documents [shard * DOCS_PER_SHARD, ...) of a deterministic synthetic crawl of `total` documents."""
    from schemas.document import Document, Image, Node

    vocabulary = _vocabulary()
    start, stop = shard * DOCS_PER_SHARD, min(total, (shard + 1) * DOCS_PER_SHARD)
    for index in range(start, stop):
        rng = random.Random(index)
        kind = rng.random()
        source = rng.randrange(total)  # the document a planted copy copies
        base = index
        if kind < 3 * PLANTED:
            base = source
        words = random.Random(base).choices(vocabulary, k=WORDS_PER_DOC)
        domain = base // DOCS_PER_DOMAIN
        url = f"https://site{domain}.test/article/{base}"
        date = f"2024-{1 + base % 12:02d}-{1 + base % 28:02d}T00:00:00Z"
        if kind < PLANTED:  # the same URL crawled again, later
            date = f"2025-{1 + index % 12:02d}-01T00:00:00Z"
        elif kind < 3 * PLANTED:  # an exact or a near copy on a mirror, crawled later
            url = f"https://mirror{index % 97}.test/copy/{index}"
            date = f"2025-{1 + index % 12:02d}-02T00:00:00Z"
            if kind >= 2 * PLANTED:
                for position in rng.sample(range(WORDS_PER_DOC), 2):
                    words[position] = "changed"
        text = " ".join(words[:60]) + "\n\n" + " ".join(words[60:])
        photo = Image(url=f"https://img.test/{base}.jpg")
        if 3 * PLANTED <= kind < 4 * PLANTED:  # another page's photo, re-encoded and resized at a new URL
            photo = Image(url=f"https://img.test/reused/{index}.png")
        if with_images:
            photo.data = (_picture(source, 80, "PNG") if 3 * PLANTED <= kind < 4 * PLANTED
                          else _picture(base, 96, "JPEG"))
        nodes = [Node(text=text), Node(image=photo),
                 Node(text=f"We use cookies on site {domain} to count our readers and remember your choices."),
                 Node(image=Image(url=f"https://site{domain}.test/static/brand.png",
                                  data=_picture(10**9 + domain, 64, "PNG") if with_images else None))]
        yield Document(doc_id=f"{index:020x}", url=url, nodes=nodes, warc_date=date)


def run_one(size: int, workers: int, with_images: bool, mode: str) -> dict:
    """One measured pipeline (in this process); returns its counts."""
    import apache_beam as beam

    from pipeline.core.accounting import StageCounters, broken_links, query_counts, stage_table, unbalanced
    from pipeline.dedup import DedupDocuments, DedupImages, DedupSettings, DropFrequentImageUrls
    from pipeline.jobs.runner import RunnerSettings, make_pipeline
    from pipeline.settings import load_config

    config = load_config(overrides=[f"runner.direct_num_workers={workers}", f"runner.direct_running_mode={mode}"])
    shards = (size + DOCS_PER_SHARD - 1) // DOCS_PER_SHARD
    runner = RunnerSettings.from_config(config["runner"], "runner")
    dedup = DedupSettings.from_config(config["dedup"], "dedup")
    pipeline = make_pipeline([], runner)
    docs = (
        pipeline
        | "Shards" >> beam.Create(list(range(shards)))
        | "Spread" >> beam.Reshuffle()
        | "Generate" >> beam.FlatMap(generate_shard, size, with_images)
        | "Dedup documents" >> DedupDocuments(dedup)
        | "Frequent image URLs" >> DropFrequentImageUrls(dedup.image_urls, dedup.url)
    )
    if with_images:
        docs = docs | "Dedup images" >> DedupImages(dedup.images, runner.circuit_breaker)
    output = StageCounters("bench_output")

    def count(doc) -> tuple:
        output.seen("documents")
        output.kept("documents")
        return ()

    docs | "Count output" >> beam.FlatMap(count)
    result = pipeline.run()
    result.wait_until_finish()
    table = stage_table(query_counts(result))
    return {"stages": table, "unbalanced": unbalanced(table),
            "broken_links": broken_links(table, _flow(with_images))}


def _flow(with_images: bool) -> list[tuple[str, str]]:
    """The dedup links the run has (image dedup only with images), then the output counter."""
    from pipeline.core.accounting import flow_of
    from pipeline.dedup import STAGES
    from pipeline.dedup.images import STAGE as IMAGE_DEDUP

    return [*flow_of([name for name in STAGES if with_images or name != IMAGE_DEDUP]), ("bench_output", "documents")]


def measure(size: int, workers: int, with_images: bool, mode: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.dedup", "--run-one", str(size), "--workers", str(workers),
               "--mode", mode]
    if with_images:
        command.append("--images")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sampler = ProcessTreeSampler(process.pid).start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    sampler.stop()
    if process.returncode:
        raise SystemExit(f"size {size} failed with exit code {process.returncode}")
    report = json.loads(output.strip().splitlines()[-1])
    return {"size": size, "seconds": seconds, "peak_rss": sampler.peak_rss,
            "peak_worker_rss": sampler.peak_worker_rss, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000],
                        help="document counts (add 1000000 for the million-document run)")
    parser.add_argument("--workers", type=int, default=2, help="local runner worker processes")
    parser.add_argument("--images", action="store_true", help="also run DedupImages on small downloaded pictures")
    parser.add_argument("--mode", default="multi_processing", choices=["multi_processing", "in_memory"],
                        help="local runner mode (in_memory: one process)")
    parser.add_argument("--tiny", action="store_true", help="200 documents with images, one worker: seconds")
    parser.add_argument("--run-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.images, args.workers = [200], True, 1
    if args.run_one:
        print(json.dumps(run_one(args.run_one, args.workers, args.images, args.mode)))
        return
    rows = [measure(size, args.workers, args.images, args.mode) for size in args.sizes]
    command = " ".join(["python -m benchmarks.dedup", "--sizes", *map(str, args.sizes), "--workers",
                        str(args.workers), *(["--images"] if args.images else []),
                        *(["--mode", args.mode] if args.mode != "multi_processing" else [])])
    print(f"command: {command}   (local runner, {args.mode}, {args.workers} workers, {os.cpu_count()} cores)")
    print("| documents | seconds | documents/s | µs/document | peak RSS (tree) | peak RSS per worker "
          "| dropped: url / exact / near | boilerplate paragraphs | frequent image URLs |"
          + (" image dups |" if args.images else ""))
    print("|---:|---:|---:|---:|---:|---:|---|---:|---:|" + ("---:|" if args.images else ""))
    for row in rows:
        def dropped(stage: str, unit: str = "documents", stages: dict = row["stages"]) -> int:
            return sum(stages.get(stage, {}).get(unit, {}).get("dropped", {}).values())

        line = (f"| {row['size']:,} | {row['seconds']:.1f} | {row['size'] / row['seconds']:,.0f} "
                f"| {1e6 * row['seconds'] / row['size']:,.0f} | {row['peak_rss'] / 2**20:,.0f} MiB "
                f"| {row['peak_worker_rss'] / 2**20:,.0f} MiB "
                f"| {dropped('dedup_url')} / {dropped('dedup_exact')} / {dropped('dedup_near')} "
                f"| {dropped('dedup_paragraphs', 'paragraphs')} | {dropped('dedup_image_urls', 'images')} |")
        if args.images:
            line += f" {dropped('dedup_images', 'images')} |"
        print(line)
        if row["unbalanced"]:
            print(f"  COUNTS DO NOT BALANCE: {row['unbalanced']}")
        if row["broken_links"]:
            print(f"  DOCUMENTS LOST BETWEEN STAGES (runner): {'; '.join(row['broken_links'])}")
    base = rows[0]
    for row in rows[1:]:
        scale = row["size"] / base["size"]
        print(f"{row['size']:,} vs {base['size']:,} documents ({scale:.0f}x): "
              f"time x{row['seconds'] / base['seconds']:.1f}, peak memory x{row['peak_rss'] / base['peak_rss']:.1f}")


if __name__ == "__main__":
    main()
