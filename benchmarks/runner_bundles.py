"""The local runner's data-plane loss, reproduced: N keyed random values → CoGroupByKey, per runner mode.

    python -m benchmarks.runner_bundles [--sizes 5000 12000 20000] [--value-kb 100]
                                        [--modes in_memory multi_processing] [--workers 2] [--timeout 900] [--tiny]

Each (mode, size) runs in a fresh process: `pipeline.jobs.runner.keyed_payload_probe` (no m3w transform:
`os.urandom` values, a `Map` to (key, length) labels, `CoGroupByKey`, count the keys that have both) on
the FnApiRunner that m3w builds, with m3w's overflow check switched off so the raw runner behaviour shows.
Prints, per run: keys that arrived of N, seconds, whether Beam logged the data-plane overflow warning
(`Data output stream buffer size ... exceeds 536870912 bytes`, in the driver's log or on a worker's
stderr), and the exit (ok / error / hang: killed
after `--timeout`). The multi-process mode feeds each stage to a worker as one bundle over gRPC; past
about 1 GB per bundle it loses or stalls (docs/runner.md). m3w's default, in_memory, has no data plane.
`--tiny`: 50 values of 1 KB in each mode, one worker (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/runner_bundles.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path


def run_one(mode: str, n: int, value_bytes: int, workers: int) -> dict:
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipeline.jobs.runner import DATA_PLANE_WARNINGS, RunnerSettings, keyed_payload_probe, pipeline_options
    from pipeline.settings import load_config

    warnings: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if any(marker in record.getMessage() for marker in DATA_PLANE_WARNINGS):
                warnings.append(record.getMessage()[:120])

    logging.getLogger().addHandler(Watch(logging.WARNING))
    config = load_config(overrides=[f"runner.direct_running_mode={mode}", f"runner.direct_num_workers={workers}"])
    runner = RunnerSettings.from_config(config["runner"], "runner")
    pipeline = beam.Pipeline(runner=FnApiRunner(), options=pipeline_options([], runner))  # the raw runner
    out = Path(os.environ["PROBE_OUT"])
    keyed_payload_probe(pipeline, n, value_bytes) | beam.Map(lambda count: out.write_text(str(count)))
    started = time.time()
    pipeline.run().wait_until_finish()
    arrived = int(out.read_text()) if out.exists() else 0
    return {"arrived": arrived, "seconds": time.time() - started, "warning": bool(warnings)}


def measure(mode: str, n: int, value_kb: int, workers: int, timeout: float, workdir: Path) -> dict:
    out, result = workdir / f"count-{mode}-{n}", workdir / f"result-{mode}-{n}.json"
    command = [sys.executable, "-m", "benchmarks.runner_bundles", "--run-one", mode, "--sizes", str(n),
               "--value-kb", str(value_kb), "--workers", str(workers), "--result", str(result)]
    started = time.time()
    try:
        process = subprocess.run(command, env={**os.environ, "PROBE_OUT": str(out)}, timeout=timeout,
                                 capture_output=True, text=True)
    except subprocess.TimeoutExpired as expired:
        warned = "exceeds" in (expired.stderr or b"").decode(errors="replace") if expired.stderr else False
        return {"arrived": None, "seconds": time.time() - started, "warning": warned, "exit": "hang (killed)"}
    if process.returncode or not result.exists():
        arrived = int(out.read_text()) if out.exists() else None
        last_line = process.stderr.strip().splitlines()[-1][:100] if process.stderr.strip() else process.returncode
        return {"arrived": arrived, "seconds": time.time() - started, "warning": "exceeds" in process.stderr,
                "exit": f"error ({last_line})"}
    figures = json.loads(result.read_text())
    figures["warning"] = figures["warning"] or "exceeds" in process.stderr  # also a worker's own stderr
    return {**figures, "exit": "ok"}


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 12000, 20000], help="keyed values per run")
    parser.add_argument("--value-kb", type=int, default=100, help="kilobytes per value")
    parser.add_argument("--modes", nargs="+", default=["in_memory", "multi_processing"])
    parser.add_argument("--workers", type=int, default=2, help="workers of the multi-process mode")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run counts as hung")
    parser.add_argument("--tiny", action="store_true", help="50 values of 1 KB per mode, one worker: seconds")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        figures = run_one(args.run_one, args.sizes[0], args.value_kb * 1000, args.workers)
        Path(args.result).write_text(json.dumps(figures))
        return
    if args.tiny:
        args.sizes, args.value_kb, args.workers = [50], 1, 1
    print(f"command: python -m benchmarks.runner_bundles --sizes {' '.join(map(str, args.sizes))} "
          f"--value-kb {args.value_kb} --modes {' '.join(args.modes)} --workers {args.workers}"
          f"   ({os.cpu_count()} cores)")
    print("| mode | N × value | payload | keys arrived | seconds | data-plane warning | exit |")
    print("|---|---:|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory(prefix="m3w-bundles-") as workdir:
        for mode in args.modes:
            for n in args.sizes:
                row = measure(mode, n, args.value_kb, args.workers, args.timeout, Path(workdir))
                arrived = "-" if row["arrived"] is None else f"{row['arrived']:,}"
                lost = "" if row["arrived"] in (None, n) else " **LOST**"
                print(f"| {mode} | {n:,} × {args.value_kb} KB | {n * args.value_kb / 1e6:,.1f} GB "
                      f"| {arrived} of {n:,}{lost} | {row['seconds']:,.0f} | {'yes' if row['warning'] else 'no'} "
                      f"| {row['exit']} |", flush=True)


if __name__ == "__main__":
    main()
