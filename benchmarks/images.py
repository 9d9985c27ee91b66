"""Images/s through m3w's download + image filters, against bare img2dataset on the same URL list.

Both fetch the same N image URLs from the local image host (run as a separate process, serving
pre-generated JPEGs from disk), resize them to 320 px (center_crop) and write Parquet, on the same
number of worker processes:

- bare:  `img2dataset.download(...)` with processes_count=W, the same threads and shard size;
- m3w:   `DownloadImages` on the multi-process Beam runner with W workers (documents of 4 images,
         planning, URL sharding, img2dataset per shard, decode/size/format/pixel checks, resize,
         resumable shard files, both joins back into the documents), NSFW off — the wrapper's cost;
- m3w + NSFW: the same with the open_nsfw classifier on every image (the filter's own cost).

Prints the figures and the command. `python -m benchmarks.images --images 4000 --workers 2`
`--tiny`: 8 images, 4 per shard, one worker, no start-up run, no NSFW run (a check that the benchmark runs, not
a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/images.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import contextlib
import io
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
HOST = "img.bench.test"


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (worker processes are children)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def measured(into: dict[str, float]):
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield
    into["wall"], into["cpu"] = time.perf_counter() - wall, cpu_seconds() - cpu


def make_images(root: Path, count: int, distinct: int) -> list[str]:
    """`count` JPEG files under root/HOST/ (cycling through `distinct` generated pictures) → their URLs."""
    from pipeline.sampledata.imagehost import encode_picture, generated_picture

    folder = root / HOST
    folder.mkdir(parents=True, exist_ok=True)
    bodies = [encode_picture(generated_picture(f"/bench/{i}.jpg"), "x.jpg")[0] for i in range(distinct)]
    urls = []
    for i in range(count):
        (folder / f"{i}.jpg").write_bytes(bodies[i % distinct])
        urls.append(f"https://{HOST}/{i}.jpg")
    return urls


@contextlib.contextmanager
def image_host(root: Path):
    """`m3w imagehost` in its own process, so serving does not compete for the benchmark's GIL."""
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "imagehost", "--root", str(root)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        if not match:
            raise RuntimeError(f"image host did not start: {line!r}")
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)


def bare_img2dataset(urls: list[str], base: str, work: Path, workers: int, threads: int,
                     shard: int) -> dict[str, float]:
    import img2dataset

    url_list = work / "urls.txt"
    url_list.write_text("\n".join(f"{base}/{u.split('://', 1)[1]}" for u in urls) + "\n")
    out = work / "bare"
    cost: dict[str, float] = {}
    with measured(cost), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        img2dataset.download(url_list=str(url_list), output_folder=str(out), processes_count=workers,
                             thread_count=threads, image_size=320, resize_mode="center_crop",
                             output_format="parquet", number_sample_per_shard=shard, timeout=10, retries=0,
                             enable_wandb=False, user_agent_token="m3w")
    import pyarrow.parquet as pq

    ok = sum(pq.read_table(p, columns=["status"]).column("status").to_pylist().count("success")
             for p in out.glob("*.parquet"))
    if ok != len(urls):
        raise RuntimeError(f"bare img2dataset fetched {ok} of {len(urls)}")
    return cost


def m3w_download(urls: list[str], base: str, work: Path, workers: int, threads: int, shard: int,
                 nsfw: bool) -> dict[str, float]:
    import apache_beam as beam

    from pipeline.core.accounting import query_counts, stage_table
    from pipeline.images.store import ImageStore
    from pipeline.images.transforms import STAGES
    from pipeline.io.documents import OutputSettings, WriteDocuments
    from pipeline.jobs.runner import RunnerSettings, make_pipeline
    from pipeline.jobs.stages import download_images
    from pipeline.settings import load_config
    from schemas.document import Document, Image, Node, make_doc_id

    config = load_config(overrides=[
        "runner.direct_running_mode=multi_processing", f"runner.direct_num_workers={workers}",
        f"download.rewrite_to={base}", "download.allow_loopback=true", f"download.thread_count={threads}",
        f"download.urls_per_shard={shard}", "download.retries=0", f"image_filters.nsfw.enabled={str(nsfw).lower()}"])
    docs = []
    for start in range(0, len(urls), 4):
        page = f"https://www.bench.test/{start}.html"
        nodes = [Node(text="Some text before the pictures.")]
        for url in urls[start:start + 4]:
            nodes += [Node(image=Image(url=url)), Node(text="A caption-like paragraph.")]
        docs.append(Document(make_doc_id(page, "bench", start), page, nodes))
    tag = "nsfw" if nsfw else "plain"
    pipeline = make_pipeline([], RunnerSettings.from_config(config["runner"], "runner"))
    workdir = str(work / f"work-{tag}")
    output = OutputSettings.from_config(config["output"], "output")
    (pipeline | beam.Create(docs) | download_images(config, workdir)
     | WriteDocuments(str(work / f"out-{tag}"), output, with_bytes=True, image_store=ImageStore.in_workdir(workdir)))
    cost: dict[str, float] = {}
    with measured(cost):
        result = pipeline.run()
        result.wait_until_finish()
    table = stage_table(query_counts(result), STAGES)
    if table["download"]["urls"]["out"] != len(urls):
        raise RuntimeError(f"m3w fetched {table['download']['urls']['out']} of {len(urls)}: {table['download']}")
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2, help="processes for both (the '2 cores')")
    parser.add_argument("--threads", type=int, default=16, help="download threads per process")
    parser.add_argument("--shard", type=int, default=500, help="URLs per img2dataset shard, for both")
    parser.add_argument("--distinct", type=int, default=200, help="distinct pictures among the served files")
    parser.add_argument("--baseline", type=int, default=16,
                        help="images of a tiny run measuring each tool's fixed start-up cost (0: skip)")
    parser.add_argument("--skip-nsfw", action="store_true", help="do not measure the NSFW run")
    parser.add_argument("--tiny", action="store_true", help="8 images on one worker, NSFW off: seconds")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.workers, args.threads, args.shard, args.distinct, args.baseline = 8, 1, 4, 4, 4, 0
        args.skip_nsfw = True
    logging.getLogger("apache_beam").setLevel(logging.ERROR)

    work = Path(tempfile.mkdtemp(prefix="m3w-bench-images-"))
    runs: dict[str, dict[int, dict[str, float]]] = {}
    try:
        urls = make_images(work / "root", args.images, args.distinct)
        sizes = [args.images] + ([args.baseline] if args.baseline else [])
        with image_host(work / "root") as base:
            for n in sizes:
                subset, folder = urls[:n], work / f"run-{n}"
                folder.mkdir()
                runs.setdefault("bare img2dataset.download (fetch, resize)", {})[n] = bare_img2dataset(
                    subset, base, folder, args.workers, args.threads, args.shard)
                runs.setdefault("m3w download + image filters, NSFW off", {})[n] = m3w_download(
                    subset, base, folder, args.workers, args.threads, args.shard, nsfw=False)
                if not args.skip_nsfw:
                    runs.setdefault("m3w download + image filters + NSFW", {})[n] = m3w_download(
                        subset, base, folder, args.workers, args.threads, args.shard, nsfw=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n, cores, small = args.images, args.workers, args.baseline
    print(f"images: {n} URLs (JPEG, {args.distinct} distinct pictures, 240-640 px) from the local image host; "
          f"{cores} worker processes, {args.threads} threads each, {args.shard} URLs per shard; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("wall: elapsed; cpu: CPU seconds of the run's processes (robust to other load on the machine);"
          + (f" steady: the {n}-image run minus a {small}-image run (start-up excluded)" if small else ""))
    header = f"{'run':<44}{'wall s':>8}{'img/s':>8}{'cpu s':>8}{'img/cpu-s':>11}"
    if small:
        header += f"{'steady img/s':>14}{'steady img/cpu-s':>18}"
    print(header)
    for label, times in runs.items():
        big = times[n]
        line = f"{label:<44}{big['wall']:>8.2f}{n / big['wall']:>8.1f}{big['cpu']:>8.2f}{n / big['cpu']:>11.1f}"
        if small:
            line += (f"{(n - small) / max(big['wall'] - times[small]['wall'], 1e-9):>14.1f}"
                     f"{(n - small) / max(big['cpu'] - times[small]['cpu'], 1e-9):>18.1f}")
        print(line)
    bare, ours = list(runs.values())[0], list(runs.values())[1]
    for measure in ("wall", "cpu"):
        text = f"wrapper cost vs bare img2dataset ({measure}): {100 * (ours[n][measure] / bare[n][measure] - 1):+.1f}%"
        if small:
            steady = (ours[n][measure] - ours[small][measure]) / (bare[n][measure] - bare[small][measure])
            text += f" end to end, {100 * (steady - 1):+.1f}% steady"
        print(text + " (goal: <= +10%)")
    print("command: python -m benchmarks.images " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
