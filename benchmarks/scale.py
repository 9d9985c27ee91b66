"""Scale rehearsal: `m3w build` on a generated crawl of N pages, every stage, the default local runner.

    python -m benchmarks.scale [--pages 10000 100000] [--images-per-page 1] [--nsfw] [--workdir DIR]
                               [--stages STAGE ...] [--set KEY=VALUE ...] [--modes download archive]
                               [--canaries 0 400] [--tiny]

For each size, the sample-crawl generator writes the bundled sample web plus enough bulk articles to
make N HTML pages (`generate_sample_crawl(bulk_pages=...)`, `--images-per-page` pictures each, drawn
by the local image host from their URLs) into a WARC, and one fresh process runs `run_build` on it
with the default config, except: images come from the local image host on 127.0.0.1
(`download.rewrite_to`), and the NSFW classifier is off unless `--nsfw` (it costs ~10x the rest of the
image stage: ~12 images per CPU-second with it, ~150 without). The generator and the image host run
in this (parent) process, outside what is measured, but on the same cores.

The parent samples the build's whole process tree from /proc every 0.1 s and prints, per size: wall
seconds, CPU seconds of the tree, input pages per CPU-second end to end, peak resident memory of the
tree, the image store's size, and "nothing lost": every stage balances (in = out + drops) and every
link between stages holds (what one stage wrote, the next read). With `--workdir`, the crawl and the
build output are kept there, and a re-run with the same sizes resumes the build (finished stages are
skipped, finished download shards reused): the figures then cover only the resumed part. `--tiny`: the
sample web alone with 2 of its own canary pages (~70 pages, no bulk; a check that the benchmark runs, not a
figure).

`--modes` says where the pictures come from, each mode a build of its own on the same crawl, one after the
other: `download` (the default) fetches them from the local image host; `archive` reads them from the crawl
itself: every picture the pages name is written beforehand, as a crawler with page requisites stores it
(`wget --page-requisites`: the host's answer as a response record, a redirect as its 3xx and the target's
answer), into `images.warc.gz` beside the pages' WARC, and the build reads both with `download.network=false`
and no image host at all (docs/read.md).

`--canaries` says how many alignment canary pages ride along (`m3w build --canaries N`, `canaries.pages`;
default 0: none), each count a build of its own on the same crawl: one invocation measures every (size, mode,
canaries) combination, one after the other, and each table row names its mode and its canary pages. Riding
canaries are a fixed cost a build adds (their WARC made and read, their documents and pictures through every
stage, their own shard files), not input: "input pages" and "input pages per CPU-second" count the crawl's own
pages only (the report counts canaries apart), while wall, CPU, memory and the image store include the
canaries' share. Where a table holds a size and mode both without and with canaries, a line below it gives
what the canaries added: CPU and wall seconds, CPU milliseconds per canary page, peak memory. (The sample
web's own canary pages, part of every generated crawl, are input pages like any other.)
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/scale.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._proctree import run_sampled

MAX_PEAK_RSS = 8 * 2**30  # the rehearsal's memory bound for the whole process tree
SAMPLE_WEB_CANARY_PAGES = 48  # the generated crawl's own canary pages (the sample web's default): input pages
TINY_SAMPLE_WEB_CANARY_PAGES = 2


def generate(crawl: Path, pages: int, images_per_page: int, canary_pages: int) -> tuple[int, float]:
    """The crawl for `pages` HTML pages (reused when already there); returns (HTML pages, generator seconds).
    `pages` 0 (or fewer than the sample web's own): the sample web alone."""
    from pipeline.sampledata.crawl import generate_sample_crawl

    wanted = {"pages": pages, "images_per_page": images_per_page, "canary_pages": canary_pages}
    marker = crawl / "scale.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return pages, 0.0
    started = time.time()
    base = len(generate_sample_crawl(crawl / "probe", n_canary_pages=canary_pages)["pages"]) if pages else 0
    truth = generate_sample_crawl(crawl, n_canary_pages=canary_pages, bulk_pages=max(0, pages - base),
                                  bulk_images_per_page=images_per_page)
    marker.write_text(json.dumps(wanted))
    return len(truth["pages"]), time.time() - started


def write_image_records(crawl: Path) -> int:
    """`images.warc.gz` beside the crawl: every picture its pages name, as the local image host answers it and
    a crawler with page requisites stores the answer (a redirect as its 3xx response, then the target's answer
    under the target's URL); returns the number of records."""
    from urllib.parse import urlsplit

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from pipeline.sampledata.imagehost import ImageHost

    truth = json.loads((crawl / "ground_truth.json").read_text())
    urls = set(truth["images"]) | {url for page in truth["pages"] for url in page["images"] + page["excluded_images"]}
    host = ImageHost(root=crawl / "images")  # never started: its answers are pure functions of the request target
    records = 0
    with open(crawl / "images.warc.gz.tmp", "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url in sorted(u for u in urls if u.startswith(("http://", "https://"))):
            parts, hops = urlsplit(url), 0
            target = f"/{parts.netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
            while True:
                response = host.response_for(target)
                http = StatusAndHeaders(f"{response.status} X", list(response.headers), protocol="HTTP/1.1")
                writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(response.body),
                                                              http_headers=http))
                records += 1
                location = dict(response.headers).get("Location", "")
                if response.status not in (301, 302) or not location.startswith("/") or hops == 5:
                    break
                target, url, hops = location, "https:/" + location, hops + 1
    os.replace(crawl / "images.warc.gz.tmp", crawl / "images.warc.gz")
    return records


def run_one(crawl: str, output: str, rewrite_to: str, nsfw: bool, overrides: list[str], result_path: str,
            only: list[str] | None = None, archive: bool = False, canaries: int = 0) -> None:
    """The measured build (in this process); writes its report's figures to `result_path`. `archive`: the
    pictures from `images.warc.gz`, no request at all. `canaries`: the canary pages riding along."""
    from pipeline.jobs.build import run_build
    from pipeline.settings import load_config

    source = ["download.network=false"] if archive else ["download.allow_loopback=true",
                                                          f"download.rewrite_to={rewrite_to}"]
    config = load_config(overrides=[*source, f"image_filters.nsfw.enabled={'true' if nsfw else 'false'}",
                                    *overrides, f"canaries.pages={canaries}"])
    inputs = [str(Path(crawl) / name) for name in ("crawl.warc.gz", "images.warc.gz")[:2 if archive else 1]]
    started = time.time()
    report = run_build(inputs, output, config, only=only)
    Path(result_path).write_text(json.dumps({
        "started": started, "stages": report["stages"], "timings_s": report["timings_s"],
        "images": report.get("images", {}), "canaries": report.get("canaries", {}),
        "stage_started": report["stage_started"], "unbalanced": report["unbalanced"],
        "broken_links": report["broken_links"], "resumed_stages": report["resumed_stages"]}))


def _count(stages: dict, stage: str, unit: str, kind: str) -> int:
    return int(stages.get(stage, {}).get(unit, {}).get(kind, 0))


def _store_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.path.getsize(os.path.join(folder, name))
    return files, size


def measure(pages: int, args: argparse.Namespace, workdir: Path, mode: str = "download", canaries: int = 0) -> dict:
    from pipeline.sampledata.imagehost import ImageHost

    archive = mode == "archive"
    crawl = workdir / f"crawl-{pages}"
    name = f"{pages}{'-archive' if archive else ''}{f'-canaries-{canaries}' if canaries else ''}"
    output = workdir / f"build-{name}"
    own_canaries = TINY_SAMPLE_WEB_CANARY_PAGES if args.tiny else SAMPLE_WEB_CANARY_PAGES
    html_pages, generator_s = generate(crawl, pages, args.images_per_page, own_canaries)
    if archive and (generator_s or not (crawl / "images.warc.gz").exists()):
        started = time.time()
        write_image_records(crawl)
        generator_s += time.time() - started
    result_path = workdir / f"result-{name}.json"
    with ImageHost(root=crawl / "images") as host:
        command = [sys.executable, "-m", "benchmarks.scale", "--run-one", str(crawl), "--output", str(output),
                   "--rewrite-to", host.base_url, "--result", str(result_path),
                   *(["--nsfw"] if args.nsfw else []), *(f"--set={item}" for item in args.set),
                   *(["--stages", *args.stages] if args.stages else []), *(["--archive"] if archive else []),
                   "--canaries", str(canaries)]
        # One sample a second: an hour-long run needs no finer grain, and /proc scans cost CPU on the same cores.
        returncode, clock, wall, sampler = run_sampled(command, interval=1.0)
        requests = len(host.requests)
    if returncode:
        raise SystemExit(f"{pages:,} pages ({mode}, {canaries} canary pages): the build failed with exit code "
                         f"{returncode}")
    result = json.loads(result_path.read_text())
    stages = result["stages"]
    files, store_bytes = _store_size(output / "work" / "download" / "images")
    return {
        "requested": pages, "pages": _count(stages, "read", "records", "out") or html_pages,
        "generator_s": generator_s,
        "wall": wall, "cpu": sampler.samples[-1].cpu_seconds if sampler.samples else 0.0,
        "peak_tree": sampler.peak_rss, "stage_peaks": stage_peaks(sampler, clock, result),
        "timings_s": result["timings_s"], "resumed": result["resumed_stages"],
        "documents": _count(stages, "filter", "documents", "in"),
        "images_fetched": _count(stages, "download", "urls", "in"),
        "images_kept": _count(stages, "dedup_images", "images", "out"),
        "sequences": _count(stages, "shard", "sequences", "out"),
        "store_files": files, "store_bytes": store_bytes,
        "unbalanced": result["unbalanced"], "broken_links": result["broken_links"],
        "mode": mode, "from_archive": result["images"].get("from_archive", 0), "host_requests": requests,
        "canaries": canaries, "canary_sequences": result["canaries"].get("sequences", 0),
        "canary_summary": result["canaries"].get("summary", ""),
    }


def stage_peaks(sampler, clock: float, result: dict) -> dict[str, int]:
    """Peak resident memory of the tree while each stage that ran (not resumed) was running."""
    peaks = {}
    for name, started in result.get("stage_started", {}).items():
        start = started - clock
        stop = start + result["timings_s"][name]
        peaks[name] = max((s.rss for s in sampler.samples if start <= s.seconds <= stop), default=0)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, nargs="+", default=[10000, 100000], help="HTML pages per run")
    parser.add_argument("--images-per-page", type=int, default=1, help="pictures per bulk page")
    parser.add_argument("--nsfw", action="store_true", help="keep the NSFW classifier on (about 10x the image cost)")
    parser.add_argument("--workdir", help="keep crawls and builds here (resumable); default: a temporary folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--tiny", action="store_true", help="the sample web alone, 2 canary pages: seconds")
    parser.add_argument("--stages", nargs="+", metavar="STAGE",
                        help="run only these build stages (documents, images, shards; earlier finished ones resume)")
    parser.add_argument("--modes", nargs="+", choices=("download", "archive"), default=["download"],
                        help="where the pictures come from: the local image host, the crawl's own image records")
    parser.add_argument("--canaries", type=int, nargs="+", default=[0], metavar="N",
                        help="canary pages riding along each build (m3w build --canaries N), each count a build of "
                             "its own; not input pages (default: 0)")
    parser.add_argument("--archive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--rewrite-to", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.canaries) < 0:
        parser.error("--canaries: a number of pages, 0 or more")
    if any(item.split("=", 1)[0].strip() == "canaries.pages" for item in args.set):
        parser.error("--set canaries.pages: use --canaries N (each row names its canary pages)")
    if args.run_one:
        run_one(args.run_one, args.output, args.rewrite_to, args.nsfw, args.set, args.result, args.stages,
                args.archive, args.canaries[0])
        return
    if args.tiny:
        args.pages = [0]
    with tempfile.TemporaryDirectory(prefix="m3w-scale-") as temporary:
        workdir = Path(args.workdir or temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        runs = []
        for pages in args.pages:
            for mode in args.modes:
                for canaries in args.canaries:
                    runs.append(measure(pages, args, workdir, mode, canaries))
                    report(runs[-1:], args)  # each build as soon as it is done: the large one takes long
    if len(runs) > 1:
        report(runs, args)


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def report(runs: list[dict], args: argparse.Namespace) -> None:
    """The table of `runs`, after the command that measures exactly them (their sizes, modes, canary counts)."""
    sizes, modes = _unique(str(run["requested"]) for run in runs), _unique(run["mode"] for run in runs)
    canaries = _unique(run["canaries"] for run in runs)
    extra = "".join(f" --set {item}" for item in args.set) + (" --tiny" if args.tiny else "")
    extra += f" --stages {' '.join(args.stages)}" if args.stages else ""
    extra += f" --modes {' '.join(modes)}" if modes != ["download"] else ""
    extra += f" --canaries {' '.join(str(n) for n in canaries)}" if canaries != [0] else ""
    print(f"command: python -m benchmarks.scale --pages {' '.join(sizes)} "
          f"--images-per-page {args.images_per_page}{' --nsfw' if args.nsfw else ''}{extra}   "
          f"({os.cpu_count()} cores; NSFW {'on' if args.nsfw else 'off'}; CPU = the build's whole process tree; "
          f"input pages: the crawl's own, canaries not counted)")
    print("| input pages | pictures | canary pages | wall s | CPU s | input pages per CPU-second | peak RSS tree "
          "| images fetched / kept | sequences | image store | nothing lost |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for run in runs:
        lost = run["unbalanced"] + run["broken_links"]
        rate = f"{run['pages'] / run['cpu']:,.1f}" if run["cpu"] else "-"
        resumed = f" (resumed: {', '.join(run['resumed'])} skipped)" if run["resumed"] else ""
        print(f"| {run['pages']:,} | {run['mode']} | {run['canaries']:,} | {run['wall']:,.0f} | {run['cpu']:,.0f} "
              f"| {rate} | {run['peak_tree'] / 2**20:,.0f} MiB | {run['images_fetched']:,} / {run['images_kept']:,} "
              f"| {run['sequences']:,} | {run['store_files']:,} files, {run['store_bytes'] / 2**20:,.0f} MiB "
              f"| {'yes' if not lost else 'NO'}{resumed} |")
        print(f"  stages (wall s): {', '.join(f'{k} {v:,.0f}' for k, v in run['timings_s'].items())}; "
              f"generator {run['generator_s']:,.0f} s (not in the figures)")
        print(f"  pictures: {run['mode']}, {run['from_archive']:,} image URLs from the crawl archive, "
              f"{run['host_requests']:,} requests to the image host")
        if run["canaries"]:
            print(f"  canaries: {run['canary_summary']}")
        if run["stage_peaks"]:
            print(f"  peak RSS tree per stage run: "
                  f"{', '.join(f'{k} {v / 2**20:,.0f} MiB' for k, v in run['stage_peaks'].items())}")
        for problem in lost:
            print(f"  LOST OR UNBALANCED: {problem}")
        if run["peak_tree"] > MAX_PEAK_RSS:
            print(f"  PEAK MEMORY ABOVE {MAX_PEAK_RSS / 2**30:.0f} GiB")
    for line in canary_costs(runs):
        print(line)
    sys.stdout.flush()


def canary_costs(runs: list[dict]) -> list[str]:
    """What riding canaries added to a build: each run with canaries against the run of the same size and mode
    without them (same crawl, same table)."""
    without = {(run["requested"], run["mode"]): run for run in runs if not run["canaries"]}
    lines = []
    for run in runs:
        base = without.get((run["requested"], run["mode"]))
        if not run["canaries"] or base is None or run["resumed"] or base["resumed"]:
            continue
        extra_cpu = run["cpu"] - base["cpu"]
        lines.append(f"{run['canaries']:,} canary pages on {run['pages']:,} input pages ({run['mode']}): "
                     f"{extra_cpu:+,.0f} CPU s ({extra_cpu / run['canaries'] * 1000:+,.0f} CPU ms per canary page), "
                     f"{run['wall'] - base['wall']:+,.0f} s wall, peak RSS tree "
                     f"{(run['peak_tree'] - base['peak_tree']) / 2**20:+,.0f} MiB, "
                     f"{run['canary_sequences']:,} canary sequences")
    return lines


if __name__ == "__main__":
    main()
