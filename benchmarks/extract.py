"""Extraction fidelity and speed: m3w vs bare `trafilatura.extract` on the same real pages, in one run.

    python -m benchmarks.extract [--rounds 2] [--profile] [--pipeline] [--tiny]

Pages: every fixture page (article-benchmark and trafilatura-cache, read in place); `--tiny` runs the same code
on the first few of them, one round, in seconds (the suite's check that the benchmark runs).

Fidelity, per page, for bare `trafilatura.extract(include_images=True, output_format="xml")` (its defaults
keep reader comments; a second row without them, m3w's choice of content), for m3w in trafilatura's order
(`extract.dom_order=false`) and for m3w (defaults; the gates that drop pages are off so every page is judged):
  - image pairs: of all pairs of extracted images, the share in the order of the page's DOM;
  - text/image pairs: the same over pairs of one paragraph and one image;
  - main-text recall and precision: word multisets against article-benchmark's ground truth.
The oracle is independent of m3w's repair: images are found in the page by URL (m3w's resolved URL and every
raw source attribute), paragraphs by their first 40 letters/digits (lower-cased, at least 8) in the page's
text stream. Items not found, or found more than once (a heading repeated in the menu, a thumbnail of the lead
image), have no sure place and are left out of the pairs.

Speed, one core (this process pinned to one CPU; the timeout child inherits the pin), steady state (after a
warm-up pass; the two sides alternate every 10 pages): pages per CPU-second of the extract stage
(`ExtractDoFn` with the default config: per-page timeout child on) against bare `trafilatura.extract`.
`--pipeline` adds the whole `m3w extract` command (in-memory runner) in steady state: the difference between
a run on the pages once and on the pages three times. `--profile` prints the top entries of a cProfile of
m3w's extraction (in-process).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/extract.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import cProfile
import json
import os
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks._fixture_warc import FIXTURES, fixture_pages, write_fixture_warc

_WORDS = re.compile(r"\w+")
_PREFIX = 40
_TICK = os.sysconf("SC_CLK_TCK")
TINY_PAGES = 10


# ---------------------------------------------------------------- the DOM oracle
class DomOracle:
    """Where each image URL and each paragraph prefix stands in the page's DOM."""

    def __init__(self, url: str, body: bytes):
        from pipeline.extract.html_images import absolutize, base_url, dom_text, mark_images, parse_html
        from pipeline.read.decode import decode_html

        tree = parse_html(decode_html(body)[0])
        raw_urls = []
        base = base_url(tree, url)
        for img in tree.iter("img"):
            values = {v.strip() for k, v in img.attrib.items()
                      if (k in ("src", "srcset") or k.startswith("data-")) and v}
            found = set(values) | {absolutize(v, base) for v in values}
            found |= {absolutize(part.split()[0], base) for v in values for part in v.split(",") if part.split()}
            raw_urls.append(found)
        images = mark_images(tree, url)
        dom = dom_text(images)
        self.text = dom.text
        self.url_at: dict[str, list[int]] = {}
        for index in sorted(dom.image_at, key=dom.image_at.get):
            for name in raw_urls[index] | {images[index].url}:
                self.url_at.setdefault(name, []).append(dom.image_at[index])

    def positions(self, items: list[tuple[str, str]]) -> list[tuple[str, int]]:
        """(kind, DOM offset) of each item found exactly once in the page (a repeated one has no sure place)."""
        from pipeline.extract.html_images import normalise

        out = []
        for kind, value in items:
            if kind == "image":
                places = self.url_at.get(value, [])
            else:
                key = normalise(value)[:_PREFIX]
                places = _all(self.text, key) if len(key) >= 8 else []
            if len(places) == 1:
                out.append((kind, places[0]))
        return out


def _all(text: str, key: str) -> list[int]:
    found, start = [], text.find(key)
    while start >= 0:
        found.append(start)
        start = text.find(key, start + 1)
    return found


def agreement(located: list[tuple[str, int]], kinds: tuple[str, str]) -> float | None:
    """Share of item pairs of the given kinds (in output order) whose DOM offsets are in the same order."""
    agree = total = 0
    for i, (kind_a, pos_a) in enumerate(located):
        for kind_b, pos_b in located[i + 1:]:
            if {kind_a, kind_b} != set(kinds) and not (kinds[0] == kinds[1] == kind_a == kind_b):
                continue
            if pos_a == pos_b:
                continue
            total += 1
            agree += pos_a < pos_b
    return agree / total if total else None


def recall_precision(text: str, truth: str) -> tuple[float, float | None]:
    got, want = Counter(_WORDS.findall(text.lower())), Counter(_WORDS.findall(truth.lower()))
    common = sum((got & want).values())
    return common / max(1, sum(want.values())), (common / sum(got.values()) if got else None)


# ---------------------------------------------------------------- the three extractors
def bare_items(url: str, body: bytes, include_comments: bool = True) -> tuple[list[tuple[str, str]], str]:
    import trafilatura
    from lxml import etree

    from pipeline.extract.pages import Collector

    xml = trafilatura.extract(body.decode("utf-8", "replace"), url=url, include_images=True, output_format="xml",
                              include_comments=include_comments)
    if not xml:
        return [], ""
    root = etree.fromstring(xml.encode("utf-8"))
    main = root.find(".//main")
    collector = Collector(image_key=lambda src: src or None)
    collector.walk(main if main is not None else root)
    items = collector.finish()
    return items, "\n".join(v for k, v in items if k == "text")


def m3w_items(url: str, body: bytes, config) -> tuple[list[tuple[str, str]], str]:
    from pipeline.jobs.stages import extract_page
    from pipeline.read.crawl import Page

    doc = extract_page(Page(url=url, body=body, charset=None, source="bench"), config).document
    if doc is None:
        return [], ""
    items: list[tuple[str, str]] = []
    for node in doc.nodes:
        if node.image is not None:
            items.append(("image", node.image.url))
        else:
            items.extend(("text", p) for p in node.text.split("\n\n"))
    return items, doc.text


def fidelity(pages, truth_by_url) -> dict[str, dict[str, float]]:
    from pipeline.settings import load_config

    relaxed = ["extract.timeout_s=0", "extract.require_img_tag=false", "extract.require_images=false"]
    systems = {
        "bare trafilatura.extract": lambda u, b: bare_items(u, b),
        "bare, comments off (as m3w)": lambda u, b: bare_items(u, b, include_comments=False),
        "m3w, trafilatura's order": (lambda c: lambda u, b: m3w_items(u, b, c))(
            load_config(overrides=relaxed + ["extract.dom_order=false"])),
        "m3w extract": (lambda c: lambda u, b: m3w_items(u, b, c))(load_config(overrides=relaxed)),
    }
    scores = {name: {"image": [], "mixed": [], "recall": [], "precision": [], "both_ok": []} for name in systems}
    for url, body in pages:
        oracle = DomOracle(url, body)
        for name, run in systems.items():
            items, text = run(url, body)
            located = oracle.positions(items)
            s = scores[name]
            image, mixed = agreement(located, ("image", "image")), agreement(located, ("text", "image"))
            if image is not None:
                s["image"].append(image)
            if mixed is not None:
                s["mixed"].append(mixed)
            if image is not None or mixed is not None:
                s["both_ok"].append(min(x for x in (image, mixed) if x is not None) >= 0.99)
            if url in truth_by_url:
                recall, precision = recall_precision(text, truth_by_url[url])
                s["recall"].append(recall)
                if precision is not None:
                    s["precision"].append(precision)
    return scores


def print_fidelity(scores, n_pages: int, n_truth: int) -> None:
    print(f"\nfidelity on {n_pages} fixture pages (recall/precision on the {n_truth} with ground truth); "
          "per-page means")
    print(f"{'':28} {'image pairs':>12} {'text/image':>11} {'pages >=0.99':>13} {'recall':>7} {'precision':>10}")
    for name, s in scores.items():
        ok = sum(s["both_ok"])
        print(f"{name:28} {statistics.fmean(s['image']):12.4f} {statistics.fmean(s['mixed']):11.4f} "
              f"{ok:6d}/{len(s['both_ok']):<6d} {statistics.fmean(s['recall']):7.4f} "
              f"{statistics.fmean(s['precision']):10.4f}")
    print(f"{'(pages judged)':28} {len(s['image']):12d} {len(s['mixed']):11d}")


# ---------------------------------------------------------------- speed
def _cpu_seconds(pid: int | None) -> float:
    """CPU seconds of this process plus, if given, the (live) child `pid`."""
    total = time.process_time()
    if pid is not None:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def speed(pages, rounds: int, chunk: int = 10) -> tuple[float, float, float]:
    """(bare, m3w) pages per CPU-second over `rounds` passes after a warm-up pass, and the median over the
    chunks of bare's CPU seconds / m3w's on the same pages (robust to bursts of other work).

    The two sides alternate every `chunk` pages, so both see the same machine (other work on a shared machine
    slows CPU seconds too, through caches and clock speed, and drifts over minutes)."""
    import trafilatura

    from pipeline.jobs.stages import extract_dofn
    from pipeline.read.crawl import Page
    from pipeline.settings import load_config

    raw = [Page(url=url, body=body, charset=None, source="bench") for url, body in pages]
    dofn = extract_dofn(load_config())
    dofn.setup()

    def bare(batch) -> float:
        started = time.process_time()
        for url, body in batch:
            trafilatura.extract(body.decode("utf-8", "replace"), url=url, include_images=True, output_format="xml")
        return time.process_time() - started

    def m3w(batch) -> float:
        started = _cpu_seconds(dofn.worker.pid)
        for page in batch:
            for _ in dofn.process(page):
                pass
        return _cpu_seconds(dofn.worker.pid) - started

    try:
        bare(pages), m3w(raw)  # warm-up: imports, caches, the child's start
        pairs = []
        for _ in range(rounds):
            for start in range(0, len(pages), chunk):
                pairs.append((bare(pages[start:start + chunk]), m3w(raw[start:start + chunk])))
    finally:
        dofn.teardown()
    t_bare, t_m3w = sum(b for b, _ in pairs), sum(m for _, m in pairs)
    return rounds * len(pages) / t_bare, rounds * len(pages) / t_m3w, statistics.median(b / m for b, m in pairs)


def pipeline_rate(pages_once: int) -> float:
    """Input pages per second of the whole `m3w extract` (in-memory runner): the 3x run minus the 1x run."""
    from pipeline.jobs.stages import run_extract
    from pipeline.settings import load_config

    config = load_config(overrides=["runner.direct_running_mode=in_memory"])
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in (1, 3):
            warc = Path(tmp) / f"pages{repeat}.warc.gz"
            write_fixture_warc(warc, repeat)
            started = time.perf_counter()
            run_extract([str(warc)], str(Path(tmp) / f"out{repeat}"), config)
            seconds[repeat] = time.perf_counter() - started
    return 2 * pages_once / (seconds[3] - seconds[1])


def profile(pages, top: int) -> None:
    from pipeline.jobs.stages import extract_page
    from pipeline.read.crawl import Page
    from pipeline.settings import load_config

    config = load_config(overrides=["extract.timeout_s=0"])
    raw = [Page(url=url, body=body, charset=None, source="bench") for url, body in pages]
    extract_page(raw[0], config)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [extract_page(page, config) for page in raw])
    print(f"\nprofile of m3w extraction on {len(raw)} pages (in-process), top {top} by cumulative time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed passes over the pages, per side")
    parser.add_argument("--cpu", type=int, default=None, help="the one CPU to pin to (default: the last allowed)")
    parser.add_argument("--profile", action="store_true", help="print the top entries of a profile of m3w's extraction")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pipeline", action="store_true", help="also time the whole `m3w extract` command")
    parser.add_argument("--tiny", action="store_true", help=f"the first {TINY_PAGES} pages, one round: seconds")
    args = parser.parse_args()
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    pages = fixture_pages()
    if args.tiny:
        pages, args.rounds = pages[:TINY_PAGES], 1
    truth = json.loads((FIXTURES / "article-benchmark" / "ground-truth.json").read_text())
    truth_by_url = {entry["url"]: entry["articleBody"] for entry in truth.values()}
    flags = "".join(f" --{flag}" for flag in ("profile", "pipeline", "tiny") if getattr(args, flag))
    print(f"command: python -m benchmarks.extract --rounds {args.rounds}{flags}   "
          f"({len(pages)} real pages, pinned to CPU {cpu})")
    if args.profile:
        profile(pages, args.top)
    bare_rate, m3w_rate, paired = speed(pages, args.rounds)
    print(f"\nspeed, one core, steady state (pages per CPU-second over {args.rounds} passes, the two sides "
          "alternating every 10 pages):")
    print(f"bare trafilatura.extract(include_images, xml)   : {bare_rate:7.1f}")
    print(f"m3w extract stage (default config, timeout on)  : {m3w_rate:7.1f}   = {m3w_rate / bare_rate:.2f}x bare "
          f"(median of the 10-page pairs: {paired:.2f}x)")
    if args.pipeline:
        rate = pipeline_rate(len(pages))
        print(f"whole `m3w extract` command, in-memory runner   : {rate:7.1f} pages/s wall "
              "(steady state: 3x run - 1x run)")
    scores = fidelity(pages, truth_by_url)
    print_fidelity(scores, len(pages), sum(1 for url, _ in pages if url in truth_by_url))


if __name__ == "__main__":
    main()
