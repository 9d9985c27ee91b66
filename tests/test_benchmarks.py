"""Every benchmark runs as written: `python -m benchmarks.<name> --tiny` from the repository root exits 0 and
prints its table, the header and data rows whose figures are there.

A benchmark nobody runs breaks silently when the code it measures moves (issue 17: `python benchmarks/extract.py`
failed because a script shadowed the `filters` package). `--tiny` is the benchmark's own code on a tiny input.
Run alone, the selected benchmarks start side by side, a few at a time, so the file's wall time is about the CPU
time of all of them over the cores; each test waits for its own. Under pytest-xdist (`make test`) the workers
share the tests out, and each test runs its own benchmark.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
PARALLEL = min(4, 2 * (os.cpu_count() or 1))

NUM = r"-?[\d,]+(?:\.\d+)?"  # a printed figure (a rate per wall second may round to 0 on a busy machine)
POS = r"(?:[1-9][\d,]*(?:\.\d+)?|0\.\d*[1-9]\d*)"  # a figure above zero

# Per benchmark, longest first (started first): regular expressions each of which must match a whole line of its
# output (table headers, data rows with their figures), and text that must not appear (the benchmark's alarms).
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "build": ([
        r"command: python -m benchmarks\.build --repeat 1 --workers 2 --tiny .*",
        r"\| input pages \| stage \| wall s \| CPU s \| rate per CPU-second \|",
        rf"\| 6 \| documents \| {POS} \| {POS} \| {POS} input pages \(6\) \|",
        rf"\| 6 \| images \| {POS} \| {POS} \| {POS} images fetched \({POS}\) \|",
        rf"\| 6 \| shards \| {POS} \| {POS} \| {POS} sequences written \({POS}\) \|",
        rf"\| 6 \| \*\*all\*\* \| {POS} \| {POS} \| {POS} input pages end to end \|",
        r"\| input pages \| documents after filters \| images fetched / kept \| sequences \| peak RSS per worker "
        r"\| peak RSS driver side \| peak RSS tree \|",
        rf"\| 6 \| {POS} \| {POS} / {POS} \| {POS} \| {NUM} MiB \| {POS} MiB \| {POS} MiB \|",
    ], ["DO NOT BALANCE", "LOST"]),
    "scale": ([
        r"command: python -m benchmarks\.scale --pages \d+ --images-per-page 1 --tiny .*",
        r"\| input pages \| pictures \| canary pages \| wall s \| CPU s \| input pages per CPU-second \| peak RSS tree "
        r"\| images fetched / kept \| sequences \| image store \| nothing lost \|",
        rf"\| {POS} \| download \| 0 \| {POS} \| {POS} \| {POS} \| {POS} MiB \| {POS} / {POS} \| {POS} "
        rf"\| {POS} files, {NUM} MiB \| yes \|",
        rf"  peak RSS tree per stage run: documents {POS} MiB, images {POS} MiB, shards {POS} MiB",
    ], ["LOST OR UNBALANCED", "PEAK MEMORY ABOVE"]),
    "images": ([
        r"run +wall s +img/s +cpu s +img/cpu-s",
        *(rf"{re.escape(run)} +{POS} +{NUM} +{POS} +{POS}"
          for run in ("bare img2dataset.download (fetch, resize)", "m3w download + image filters, NSFW off")),
        *(rf"wrapper cost vs bare img2dataset \({measure}\): [+-]{NUM}% \(goal: <= \+10%\)"
          for measure in ("wall", "cpu")),
        r"command: python -m benchmarks\.images --tiny",
    ], []),
    "dedup": ([
        r"\| documents \| seconds \| documents/s \| µs/document \| peak RSS \(tree\) \| peak RSS per worker "
        r"\| dropped: url / exact / near \| boilerplate paragraphs \| frequent image URLs \| image dups \|",
        # every planted kind of duplicate found
        rf"\| 200 \| {POS} \| {NUM} \| {POS} \| {POS} MiB \| {POS} MiB \| {POS} / {POS} / {POS} \| {POS} \| {POS} "
        rf"\| {POS} \|",
    ], ["DO NOT BALANCE", "LOST"]),
    "extract": ([
        r"command: python -m benchmarks\.extract .*",
        rf"bare trafilatura\.extract\(include_images, xml\) +: +{POS}",
        rf"m3w extract stage \(default config, timeout on\) +: +{POS} += {POS}x bare .*",
        r" +image pairs +text/image +pages >=0\.99 +recall +precision",
        *(rf"{re.escape(system)} +{NUM} +{NUM} +\d+/\d+ +{NUM} +{NUM}" for system in ("bare trafilatura.extract",
                                                                                   "m3w extract")),
    ], []),
    "readability": ([
        r"command: python -m benchmarks\.readability --tiny +\(6 labelled pages\)",
        r"\| \| content-picture recall \| precision \(all kept pictures\) \| precision on pages with pictures "
        r"\| image order \| pages kept \| text precision \| text recall \| CPU s \|",
        *(rf"\| {re.escape(system)} \| {POS} \| {POS} \| {POS} \| {POS} \| [1-6] \| {POS} \| {POS} \| {NUM} \|"
          for system in ("bare trafilatura.extract(include_images=True)", "m3w extract")),
        rf"m3w's content-picture recall - bare's: [+-]{NUM}",
    ], []),
    "filter_rules": ([
        r"command: python -m benchmarks\.filter_rules --repeat 1 --rounds 1 --tiny +\(CPU time, 1 core\)",
        rf"\(a\) 12 real pages -> {POS} documents \(mean {POS} words\), \d+ kept by all rules .*",
        rf" +extraction \(trafilatura \+ images\) +: +{POS} ms per page",
        rf" +gate \(blocklist \+ language on text\) +: +{POS} ms per page = {NUM}% of extraction",
        rf" +document filters, all rules +: +{POS} ms per document = {NUM}% of one page's extraction",
        r"\(b\) m3w extract, 12 pages of a mixed-language WARC, English-only config:",
        rf" +gate off: +{POS} s, 12 pages extracted, {POS} documents",
        rf" +gate on : +{POS} s, \d+ pages extracted, {POS} documents; gate dropped .*",
    ], []),
    "filter_languages": ([
        r"command: python -m benchmarks\.filter_languages --tiny",
        rf"20 real pages \(article-benchmark, trafilatura-cache\) -> {POS} documents; by language: en {POS}, "
        rf"de {POS}.*",
        r"\| language \| cut-offs \| half \| documents judged \| obelics_stopwords \| obelics_common_words "
        r"\| gopher_mean_word_length \| gopher_stop_words \| word-share rules \| every quality rule \|",
        *(rf"\| {lang} \| {cutoffs} \| {half} \| {POS}( \| {NUM}%){{6}} \|" for lang, cutoffs, half in (
            ("en", "en's own", "evaluation"), ("de", "de's own", "evaluation"), ("de", "en's", "evaluation"))),
        r"\| language \| cut-offs \| half \| paragraphs judged \| obelics_par_stopwords \| obelics_par_common_words "
        r"\| word-share rules \| every paragraph rule \|",
        rf"\| de \| de's own \| calibration \| {POS}( \| {NUM}%){{4}} \|",
        rf"word-share rules, paragraphs, evaluation half: de {NUM}% vs en {NUM}%: {NUM} points apart \(within 10\)",
    ], []),
    "decontaminate": ([
        r"command: python -m benchmarks\.decontaminate --tiny",
        r"\| method \| resize 90% \| JPEG q70 \| crop 3% \| crop 5% \| crop 10% \| mirror \| 90% \+ q70 \+ crop 3% "
        r"\| crop 5% at a corner \| benchmark cropped 3% \| false positives: photo tiles "
        r"\| false positives: colour fields \| CPU ms per training picture \|",
        *(rf"\| {re.escape(method)}( \| \d/\d){{9}}( \| \d/\d \({NUM}%\)){{2}} \| {POS} \|" for method in (
            "pHash, whole picture (<= 4 bits, as image dedup)", "pHash, whole picture (<= 8 bits)",
            "imagehash crop_resistant_hash (1 segment, 25% bits)")),
        # m3w's windows find every planted copy and no unrelated picture
        rf"\| m3w windows: pHash <= 8 and dHash <= 12 over 41 crops( \| 5/5){{9}}( \| 0/\d \(0\.0%\)){{2}} \| {POS} \|",
        rf"\| 300 \| {POS} \| {POS} \| {NUM} \| {POS} MB \| {POS} \| 5/5 \| 0/\d \(0\.00%\) \|",
    ], []),
    "runner_bundles": ([
        r"\| mode \| N × value \| payload \| keys arrived \| seconds \| data-plane warning \| exit \|",
        *(rf"\| {mode} \| 50 × 1 KB \| 0\.0 GB \| 50 of 50 \| {NUM} \| no \| ok \|"
          for mode in ("in_memory", "multi_processing")),
    ], ["LOST"]),
    "packing": ([
        r"command: python -m benchmarks\.packing --tiny",
        r"\| layout \| sequences \| windows \| images \| padding \| image-slot fill \| real tokens/s \| "
        r"real tokens per CPU-s \| ms/step \| writer: windows per CPU-s \| writer wall s \|",
        *(rf"\| {layout} \| {POS} \| 10 \| {POS} \| {POS}% \| {POS}% \| {POS} \| {POS} \| {POS} \| {POS} \| {POS} \|"
          for layout in ("chunked", "packed")),
        rf"real tokens/s packed / chunked: {POS}x per wall second, {POS}x per CPU-second \(goal: >= 1\.8x\)",
        r"every window and image of the chunked layout in the packed one: yes",
    ], []),
    "shards": ([
        r"command: python -m benchmarks\.shards --documents 6 --seq-len 256",
        rf"input: 6 documents, {POS} images \(~640x480 JPEG\); output: {POS} sequences of 256 tokens, .*",
        rf"\(a\) shard writer work, 1 core, no Beam, sequences: +{NUM}/s wall, +{POS}/s per CPU-second .*",
        rf"\(b\) `m3w shard` Beam job, in-memory, sequences: +{NUM}/s wall, +{POS}/s per CPU-second .*",
        rf"\(c\) read, webdataset, images decoded \(rgb8\): +{NUM}/s wall, +{POS}/s per CPU-second",
        rf" +read, schemas\.shards\.iter_samples \+ decode: +{NUM}/s wall, +{POS}/s per CPU-second",
    ], []),
    "smoke": ([
        r"command: python -m benchmarks\.smoke --tiny",
        rf"steps: 3 in {POS} s \({POS} ms/step\)",
        rf"tokens/s: {POS} +real tokens/s: {POS}",
        rf"MFU: {POS}% of {POS} GFLOP/s \((measured matmul|vendor dense bf16) peak\)",
        rf"waiting on data: {NUM}% of step time",
    ], []),
    "warc": ([
        r"file +MB reader +records +records/s +MB/s +vs warcio",
        *(rf"warcfile\.warc\.gz +{POS} {reader} +50 +{POS} +{POS} +{POS}x"
          for reader in ("warcio", "fastwarc", "m3w reader", "m3w read stage")),
        rf"damaged-2x64B-warcfile\.warc\.gz +{POS} m3w reader +[1-9]\d*/50 +{POS} +{POS} +{POS}x",
    ], []),
}


def _selected(session: pytest.Session) -> list[str]:
    """The benchmarks this session will test, longest first; none under xdist (a worker does not know its share)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return []
    names = {item.callspec.params["name"] for item in session.items
             if item.originalname == test_benchmark_runs_as_written.__name__}
    return [name for name in EXPECTED if name in names]


def _run_tiny(name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--tiny"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def tiny_runs(request) -> Iterator[dict[str, Future]]:
    """The selected benchmarks' `--tiny` runs, started together (PARALLEL at a time) on first use."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        yield {name: pool.submit(_run_tiny, name) for name in _selected(request.session)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_benchmark_runs_as_written(name: str, tiny_runs: dict[str, Future]) -> None:
    run = tiny_runs[name].result() if name in tiny_runs else _run_tiny(name)
    assert run.returncode == 0, f"python -m benchmarks.{name} --tiny: exit {run.returncode}\n{run.stderr[-4000:]}"
    lines = run.stdout.splitlines()
    patterns, alarms = EXPECTED[name]
    missing = [pattern for pattern in patterns if not any(re.fullmatch(pattern, line) for line in lines)]
    assert not missing, f"python -m benchmarks.{name} --tiny printed no line matching {missing}:\n{run.stdout}"
    assert not [alarm for alarm in alarms if alarm in run.stdout], run.stdout


def test_every_benchmark_also_runs_by_its_file_path() -> None:
    """`python benchmarks/scale.py ...` (the form issues quote) works as well as `python -m benchmarks.scale`."""
    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, f"benchmarks/{name}.py", "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        runs = dict(zip(EXPECTED, pool.map(run, EXPECTED)))
    assert set(runs) == {path.stem for path in (REPO / "benchmarks").glob("[!_]*.py")}
    for name, result in runs.items():
        assert result.returncode == 0 and f"usage: {name}.py" in result.stdout, f"{name}: {result.stderr[-2000:]}"
