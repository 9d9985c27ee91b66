"""`m3w smoke`: fit a small gated cross-attention VLM on shard sets and say, with evidence, whether the data
teaches it to use its images where the tokens say they are. Exits 1 when the verdict is not a pass.

Several shard sets are mixed with Flamingo's per-dataset weights (`--weights`, one λ per set). Outputs:
smoke_report.json (verdict, criteria, figures), smoke_timing.json (tokens/s, MFU, data-wait share) and
plots/*.png under --output.
"""

from __future__ import annotations

import argparse

from pipeline.commands import add_config_flags

NAME = "smoke"
ORDER = 60
HELP = "train a small Flamingo-style model on shards; verdict: do the images matter where φ says?"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", metavar="SHARDS",
                        help="shard set: an `m3w shard` output directory, its manifest.json or a .tar in it")
    parser.add_argument("--weights", type=float, nargs="+", metavar="λ",
                        help="mixing weight of each shard set, in order (default: 1 each)")
    parser.add_argument("--output", default="smoke-out", help="directory for the report and plots")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the profile's smoke.device")
    parser.add_argument("--profile", help="config profile: tiny (CPU, CI) or gpu; default: smoke.profile")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_flags(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    import sys

    if beam_args:
        print(f"m3w smoke: unknown arguments {' '.join(beam_args)}", file=sys.stderr)
        return 2
    from train_smoke.config import resolve_config
    from train_smoke.data import ShardSetError
    from train_smoke.run import run_smoke

    overrides = list(args.set)
    if args.device:
        overrides.append(f"smoke.device={args.device}")
    if args.weights:
        overrides.append(f"smoke.train.weights={list(args.weights)}")
    config = resolve_config(args.config, overrides, profile=args.profile)
    try:
        report = run_smoke(args.shards, args.output, config, progress=not args.quiet)
    except ShardSetError as error:
        print(f"m3w smoke: {error}", file=sys.stderr)
        return 2
    print_summary(report)
    print(f"report, timings and plots written to {args.output}")
    return 0 if report["verdict"]["passed"] else 1


def print_summary(report: dict) -> None:
    verdict = report["verdict"]
    for name, c in verdict["checks"].items():
        mark = "PASS" if c["evaluated"] and c["passed"] else ("----" if not c["evaluated"] else "FAIL")
        need = "required" if c["required"] else "reported"
        print(f"  {mark} {name:<22} {need:<9} value={c['value']} threshold={c['threshold']}")
    timing = report.get("timing", {}).get("main", {})
    if timing:
        print(f"  main run: {timing['steps']} steps in {timing['seconds']} s, {timing['tokens_per_s']} tokens/s, "
              f"data wait {timing['data_wait_share']:.1%}, MFU {timing.get('mfu')}")
    print(f"verdict: {verdict['status'].upper()}: {verdict['summary']}")
