"""Extraction throughput: the m3w pipeline vs bare `trafilatura.extract` on the same real pages.

    python benchmarks/extract.py [--repeat 2]

Prints pages/s per core for (a) bare trafilatura.extract(include_images=True) in one process,
(b) `m3w extract` on one core (in-memory runner) without and with the cheap gates, and
(c) on two worker processes; and the pipeline's overhead over bare extraction.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fixture_warc import fixture_pages, write_fixture_warc  # noqa: E402


def bare(pages) -> float:
    import trafilatura

    started = time.perf_counter()
    for url, body in pages:
        trafilatura.extract(body.decode("utf-8", "replace"), url=url, include_images=True, output_format="xml",
                            deduplicate=False, with_metadata=False)
    return time.perf_counter() - started


def pipeline(warc: Path, out: Path, overrides: list[str]) -> tuple[float, dict]:
    from pipeline.config import load_config
    from pipeline.jobs import run_extract

    config = load_config(overrides=overrides)
    started = time.perf_counter()
    report = run_extract([str(warc)], str(out), config)
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2, help="times each fixture page appears in the WARC")
    args = parser.parse_args()
    pages = fixture_pages() * args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        warc = Path(tmp) / "fixtures.warc.gz"
        n = write_fixture_warc(warc, args.repeat)
        bare(pages[:10])  # warm imports
        t_bare = bare(pages)
        one = ["runner.direct_running_mode=in_memory"]
        no_gate = ["extract.require_img_tag=false", "extract.require_images=false"]
        t_plain, _ = pipeline(warc, Path(tmp) / "a", one + no_gate)
        t_gated, report = pipeline(warc, Path(tmp) / "b", one)
        t_inproc, _ = pipeline(warc, Path(tmp) / "c", one + no_gate + ["extract.timeout_s=0"])
        t_two, _ = pipeline(warc, Path(tmp) / "d", ["runner.direct_running_mode=multi_processing",
                                                    "runner.direct_num_workers=2"])
    print(f"command: python benchmarks/extract.py --repeat {args.repeat}   ({n} real pages)")
    print(f"bare trafilatura.extract, 1 process        : {n / t_bare:7.1f} pages/s per core")
    print(f"m3w extract, 1 core, no gates, timeout on  : {n / t_plain:7.1f} pages/s per core "
          f"(overhead {100 * (t_plain / t_bare - 1):+.0f}% vs bare)")
    print(f"m3w extract, 1 core, no gates, in-process  : {n / t_inproc:7.1f} pages/s per core "
          f"(overhead {100 * (t_inproc / t_bare - 1):+.0f}% vs bare)")
    print(f"m3w extract, 1 core, cheap gates on        : {n / t_gated:7.1f} pages/s per core "
          f"({report['stages']['extract']['pages']['out']} documents)")
    print(f"m3w extract, 2 worker processes, gates on  : {n / t_two / 2:7.1f} pages/s per core "
          f"({n / t_two:.1f} pages/s total)")


if __name__ == "__main__":
    main()
