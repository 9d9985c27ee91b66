"""End to end: `m3w build` on a WARC built from the real fixture pages, every stage, local Beam runner.

    python -m benchmarks.build [--repeat 1 4] [--workers 2] [--set KEY=VALUE ...] [--tiny]

For each `--repeat` R, the 291 real fixture pages (article benchmark + trafilatura cache) are written R
times under distinct URLs into one WARC (temp dir), next to the two real Common Crawl / ClueWeb WARCs of
the fixtures, and one fresh process runs `run_build` on them with the default config (plus any `--set`,
e.g. `extract.fast=true`). Images are fetched
from the local image host on 127.0.0.1 (`download.rewrite_to`), which serves a distinct generated photo
for every URL, so no traffic leaves the machine; the host runs in this (parent) process, outside what is
measured.

The parent samples the build's process tree (driver, Beam's SDK workers and their children) from /proc
every 0.1 s and prints, per stage: wall seconds, CPU seconds of the tree, and the stage's rate per
CPU-second (= per core when the cores are busy): input pages for the documents stage, images fetched for
the images stage, sequences written for the shards stage; then peak resident memory per worker and on
the driver side. Running two sizes shows what grows with the input (the driver, which holds the local
runner's data between steps) and what does not (a worker), and gives the steady-state page rate (the
difference of the two runs, where start-up and model loading cancel out). `--tiny`: one run on the first 6
fixture pages only, no real WARCs (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/build.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._fixture_warc import FIXTURES, write_fixture_warc
from benchmarks._proctree import ProcessTreeSampler

REAL_WARCS = ("warcfile.warc.gz", "clueweb-quirk.warc.gz")
TINY_PAGES = 6  # fixture pages of a `--tiny` run


def run_one(repeat: int, workers: int, rewrite_to: str, workdir: str, overrides: list[str], tiny: bool) -> dict:
    """The measured build (in this process); returns its report's figures."""
    from pipeline.jobs.build import run_build
    from pipeline.settings import load_config

    warc = Path(workdir) / "fixtures.warc.gz"
    pages = write_fixture_warc(warc, repeat, limit=TINY_PAGES if tiny else None)
    inputs = [str(warc)] + ([] if tiny else [str(FIXTURES / "warc" / name) for name in REAL_WARCS])
    # The crawl's own pages per CPU-second: the canaries a build adds (a fixed cost) only with --set canaries.pages=N.
    config = load_config(overrides=[f"runner.direct_num_workers={workers}", "download.allow_loopback=true",
                                    f"download.rewrite_to={rewrite_to}", "canaries.pages=0", *overrides])
    started = time.time()
    report = run_build(inputs, str(Path(workdir) / "out"), config)
    return {"started": started, "fixture_pages": pages, "timings_s": report["timings_s"], "stages": report["stages"],
            "unbalanced": report["unbalanced"], "broken_links": report["broken_links"]}


def _count(stages: dict, stage: str, unit: str, kind: str) -> int:
    return int(stages.get(stage, {}).get(unit, {}).get(kind, 0))


def measure(repeat: int, workers: int, overrides: list[str], tiny: bool) -> dict:
    from pipeline.sampledata.imagehost import ImageHost

    with ImageHost() as host, tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "benchmarks.build", "--run-one", str(repeat), "--workers", str(workers),
                   "--rewrite-to", host.base_url, "--workdir", workdir, *(f"--set={item}" for item in overrides),
                   *(["--tiny"] if tiny else [])]
        clock = time.time()
        process = subprocess.Popen(command)
        sampler = ProcessTreeSampler(process.pid).start()
        process.wait()
        sampler.stop()
        wall = time.time() - clock
        if process.returncode:
            raise SystemExit(f"repeat {repeat}: the build failed with exit code {process.returncode}")
        result = json.loads((Path(workdir) / "result.json").read_text())
    stages = result["stages"]
    offset = result["started"] - clock  # stage windows on the sampler's clock
    rows = {}
    for name, seconds in result["timings_s"].items():
        rows[name] = {"wall": seconds, "cpu": sampler.cpu_between(offset, offset + seconds)}
        offset += seconds
    return {
        "repeat": repeat, "wall": wall, "rows": rows, "cpu_total": sampler.samples[-1].cpu_seconds,
        "pages": _count(stages, "read", "records", "out"),
        "documents": _count(stages, "filter", "documents", "in"),
        "images": _count(stages, "download", "urls", "in"),
        "images_kept": _count(stages, "dedup_images", "images", "out"),
        "sequences": _count(stages, "shard", "sequences", "out"),
        "peak_worker": sampler.peak_worker_rss, "peak_driver": sampler.peak_other_rss, "peak_tree": sampler.peak_rss,
        "workers_seen": sampler.workers_seen, "unbalanced": result["unbalanced"],
        "broken_links": result["broken_links"],
    }


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.1f}" if seconds > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, nargs="+", default=[1, 4], help="copies of the fixture pages, per run")
    parser.add_argument("--workers", type=int, default=2, help="local runner worker processes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--tiny", action="store_true", help=f"one run on {TINY_PAGES} fixture pages: seconds")
    parser.add_argument("--run-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rewrite-to", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        result = run_one(args.run_one, args.workers, args.rewrite_to, args.workdir, args.set, args.tiny)
        (Path(args.workdir) / "result.json").write_text(json.dumps(result))
        return
    if args.tiny:
        args.repeat = [1]
    runs = [measure(repeat, args.workers, args.set, args.tiny) for repeat in args.repeat]
    extra = "".join(f" --set {item}" for item in args.set) + (" --tiny" if args.tiny else "")
    repeats = " ".join(map(str, args.repeat))
    print(f"command: python -m benchmarks.build --repeat {repeats} --workers {args.workers}{extra}"
          f"   (local multi-process runner, {os.cpu_count()} cores; rates per CPU-second of the whole process tree)")
    print("| input pages | stage | wall s | CPU s | rate per CPU-second |")
    print("|---:|---|---:|---:|---|")
    for run in runs:
        rows = run["rows"]
        what = {"documents": (run["pages"], "input pages"), "images": (run["images"], "images fetched"),
                "shards": (run["sequences"], "sequences written")}
        for name, row in rows.items():
            count, unit = what.get(name, (0, ""))
            print(f"| {run['pages']:,} | {name} | {row['wall']:.1f} | {row['cpu']:.1f} "
                  f"| {_rate(count, row['cpu'])} {unit} ({count:,}) |")
        print(f"| {run['pages']:,} | **all** | {run['wall']:.1f} | {run['cpu_total']:.1f} "
              f"| {_rate(run['pages'], run['cpu_total'])} input pages end to end |")
    print()
    print("| input pages | documents after filters | images fetched / kept | sequences | peak RSS per worker "
          "| peak RSS driver side | peak RSS tree |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run['pages']:,} | {run['documents']:,} | {run['images']:,} / {run['images_kept']:,} "
              f"| {run['sequences']:,} | {run['peak_worker'] / 2**20:,.0f} MiB | {run['peak_driver'] / 2**20:,.0f} MiB "
              f"| {run['peak_tree'] / 2**20:,.0f} MiB |")
        for problem in run["unbalanced"]:
            print(f"  COUNTS DO NOT BALANCE: {problem}")
        for problem in run["broken_links"]:
            print(f"  LOST BETWEEN STAGES: {problem}")
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        print(f"{last['pages']:,} vs {first['pages']:,} input pages: "
              f"CPU x{last['cpu_total'] / first['cpu_total']:.2f}, "
              f"peak per worker x{last['peak_worker'] / first['peak_worker']:.2f}, "
              f"driver side x{last['peak_driver'] / first['peak_driver']:.2f}")
        # Fixed costs (Beam start-up, loading fastText and the NSFW model once per worker) cancel out here.
        pages = last["pages"] - first["pages"]
        cpu = last["rows"]["documents"]["cpu"] - first["rows"]["documents"]["cpu"]
        print(f"steady state, documents stage: {_rate(pages, cpu)} input pages per CPU-second "
              f"({pages:,} more pages cost {cpu:.1f} more CPU-seconds)")


if __name__ == "__main__":
    main()
