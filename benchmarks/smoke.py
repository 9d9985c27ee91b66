"""Smoke-trainer throughput: tokens/s, model FLOPs utilisation and the share of step time spent waiting on data.

    python -m benchmarks.smoke [--profile tiny|gpu] [--device cpu|cuda] [--shards DIR ...] [--steps N]
                               [--set smoke.KEY=VALUE ...] [--full] [--tiny]
    python -m benchmarks.smoke --mutations [--docs N] [--set smoke.KEY=VALUE ...]

Without --shards it builds a canary shard set (600 documents, written through the project's shard writer)
in a temporary directory. It trains the profile's main model for --steps steps and prints:
- tokens/s (every position of every batch) and real tokens/s (padding excluded), s/step;
- model FLOPs per step (torch's FlopCounterMode on one eager forward+backward), achieved TFLOP/s and MFU
  against the device's peak: the vendor's dense bf16 figure on a known GPU, else a measured matmul peak
  (fp32 on CPU), so the CPU figure says how far the small kernels are from what the cores can do;
- the share of wall time spent waiting for the next batch (timed around the loader; on CUDA the step end
  is synchronised at each log interval, so queued kernels are not mistaken for data waits).
With --full it also runs the whole `m3w smoke` (control run, ablations, verdict) and prints its run time.
With --tiny: 40 canary documents, 3 steps, a 256² matmul for the measured peak (a check that the benchmark
runs, not a figure).

With --mutations it prints the verdict table instead: correctly built canary shards with smoke seeds 0, 1 and 2,
then every partial corruption of `train_smoke.canary_shards.MUTATION_TABLE` (the φ ones judged by the verdict
alone, `smoke.data.check_phi=false`, and separately what the trainer's input check says), each with its verdict,
the criteria that failed and the figures behind them (wrong canary events with their bounds, class-word loss,
shuffle gap and its lower bound, for φ and φ_next). It is the same table tests/test_smoke_verdict.py asserts.
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/smoke.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import shlex
import sys
import tempfile
import time

MATMUL_SIZE = 2048  # of the square matrices that measure a device's achievable peak

def matmul_peak_tflops(device, dtype, size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """Measured dense matmul throughput: an achievable peak for devices without a vendor figure here."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def _figures(report: dict, mode: str) -> str:
    figures = next(iter(report["evaluation"].values()))["modes"][mode]
    canary = figures["canary"]
    wrong = canary["wrong_events"]
    gap = canary["paired"]["shuffled"]
    return (f"{wrong['share']:.2%} [{wrong['lower']:.2%}, {wrong['upper']:.2%}] of {wrong['events']}  "
            f"loss {canary['class_word_loss']['true']:.3f}  gap≥{gap['lower']:.2f}")


def mutation_table(args: argparse.Namespace) -> int:
    """Correct canary shards (seeds 0, 1, 2) and each partial corruption: verdict and figures, one line each."""
    from train_smoke.canary_shards import MUTATION_TABLE, PHI_MUTATIONS, mutation_shard_sets
    from train_smoke.config import resolve_config
    from train_smoke.data import ShardSetError
    from train_smoke.run import run_smoke

    classes = ("circle", "ring", "stripes", "dots")
    rows: list[tuple[str, str, str, str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sets = mutation_shard_sets(tmp, n_docs=args.docs, classes=classes, image_size=64)
        print(f"canary shard sets built in {time.perf_counter() - started:.1f} s ({args.docs} documents each)",
              flush=True)
        runs = [("correct", "correct", 0, ()), ("correct", "correct", 1, ()), ("correct", "correct", 2, ())]
        runs += [(name, name, 0, ("smoke.data.check_phi=false",) if mutation in PHI_MUTATIONS else ())
                 for name, mutation, _ in MUTATION_TABLE]
        for label, name, seed, extra in runs:
            overrides = [*args.set, "smoke.train.control_run=false", f"smoke.seed={seed}", *extra]
            config = resolve_config(None, overrides, profile=args.profile)
            started = time.perf_counter()
            report = run_smoke([sets[name]], f"{tmp}/out-{label}-{seed}", config, progress=False)
            verdict = report["verdict"]
            rows.append((f"{label} (seed {seed})" + (" verdict alone" if extra else ""), verdict["status"].upper(),
                         ", ".join(verdict["failed"] + verdict["inconclusive"]) or "-", _figures(report, "phi"),
                         _figures(report, "phi_next"), time.perf_counter() - started))
            print(" | ".join(str(x) for x in rows[-1][:5]), flush=True)
        checks = []
        for name, mutation, _ in MUTATION_TABLE:
            if mutation in PHI_MUTATIONS:
                config = resolve_config(None, list(args.set), profile=args.profile)
                try:
                    run_smoke([sets[name]], f"{tmp}/check-{name}", config, progress=False)
                    checks.append((name, "not stopped"))
                except ShardSetError as error:
                    checks.append((name, f"stopped: {error}"))
    print(f"command: python -m benchmarks.smoke {shlex.join(sys.argv[1:])}")
    print("| shard set | verdict | failed / inconclusive criteria | φ: wrong canary events [bounds], class-word loss, "
          "shuffle gap lower bound | φ_next: same | seconds |")
    print("|---|---|---|---|---|---:|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]} | {row[5]:.0f} |")
    print("trainer's input check (smoke.data.check_phi=true, the default):")
    for name, outcome in checks:
        print(f"  {name}: {outcome}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--shards", nargs="+", help="shard sets (default: a generated canary set)")
    parser.add_argument("--docs", type=int, default=600, help="canary documents of the generated set")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--full", action="store_true", help="also run the whole smoke verdict")
    parser.add_argument("--mutations", action="store_true",
                        help="the verdict on correct canary shards (seeds 0-2) and on every partial corruption")
    parser.add_argument("--tiny", action="store_true", help="40 documents, 3 steps: seconds (not with --mutations)")
    args = parser.parse_args()
    if args.tiny and args.mutations:
        parser.error("--tiny runs the throughput table; tests/test_smoke_verdict.py checks the mutation table")
    if args.mutations:
        return mutation_table(args)
    matmul_size = MATMUL_SIZE
    if args.tiny:
        args.docs, args.steps, matmul_size = 40, 3, 256

    import torch

    from train_smoke.canary_shards import build_canary_shards
    from train_smoke.config import resolve_config
    from train_smoke.run import SmokeRun, run_smoke
    from train_smoke.train import peak_tflops

    overrides = list(args.set) + ([f"smoke.device={args.device}"] if args.device else [])
    config = resolve_config(None, overrides, profile=args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        sources = args.shards
        build_seconds = None
        if not sources:
            started = time.perf_counter()
            sources = [build_canary_shards(f"{tmp}/canary", n_docs=args.docs,
                                           classes=("circle", "ring", "stripes", "dots"))]
            build_seconds = time.perf_counter() - started
        started = time.perf_counter()
        run = SmokeRun(sources, config, progress=True)
        load_seconds = time.perf_counter() - started
        _, history = run.train_model("benchmark", False, args.steps, count_flops=True)
        device = run.device
        vendor = peak_tflops(device)
        measured = matmul_peak_tflops(device, torch.bfloat16 if device.type == "cuda" else torch.float32,
                                      matmul_size)
        summary = history.summary(vendor or measured)
        full_seconds = None
        if args.full:
            started = time.perf_counter()
            report = run_smoke(sources, f"{tmp}/out", config, progress=True)
            full_seconds = time.perf_counter() - started

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"command: python -m benchmarks.smoke {shlex.join(sys.argv[1:])}")
    print(f"device: {name}   profile: {config['smoke']['profile']}   bf16: "
          f"{device.type == 'cuda' and config['smoke']['train']['bf16']}   compile: "
          f"{device.type == 'cuda' and config['smoke']['train']['compile']}")
    if build_seconds is not None:
        print(f"canary shards built in {build_seconds:.1f} s ({args.docs} documents)")
    print(f"data loaded and decoded in {load_seconds:.1f} s")
    steps = summary["steps"]
    print(f"steps: {steps} in {summary['seconds']:.2f} s ({summary['seconds'] / max(1, steps) * 1000:.1f} ms/step)")
    print(f"tokens/s: {summary['tokens_per_s']:.0f}   real tokens/s: {summary['real_tokens_per_s']:.0f}")
    print(f"model FLOPs/step: {summary['model_tflops_per_step'] * 1e3:.2f} GFLOP   achieved: "
          f"{summary['achieved_tflops'] * 1e3:.2f} GFLOP/s")
    peak_kind = "vendor dense bf16 peak" if vendor else "measured matmul peak"
    print(f"MFU: {summary['mfu']:.2%} of {summary['peak_tflops'] * 1e3:.1f} GFLOP/s ({peak_kind})")
    print(f"waiting on data: {summary['data_wait_share']:.2%} of step time")
    if summary["peak_gpu_memory_gib"] is not None:
        print(f"peak GPU memory (training steps): {summary['peak_gpu_memory_gib']:.2f} GiB")
    if full_seconds is not None:
        print(f"full smoke run (main + control + verdict): {full_seconds:.1f} s, verdict "
              f"{report['verdict']['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
