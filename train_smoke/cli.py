"""The smoke trainer's command line, shared by `m3w smoke` and `python -m train_smoke` (the latter needs neither
Apache Beam nor the rest of the pipeline: what a bare GPU machine with torch can run).

Exit status: 0 PASS, 1 FAIL or "inconclusive", 2 shards the trainer refuses (no manifest, a checksum that does
not match, an unreadable shard, stored φ/φ_next that the tokens contradict, more undecodable samples than
`smoke.data.max_undecodable_share`).
"""

from __future__ import annotations

import argparse
import sys

MARKS = {"pass": "PASS", "fail": "FAIL", "inconclusive": "????", "not_applicable": "----"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", metavar="SHARDS",
                        help="shard set: an `m3w shard` output directory, its manifest.json or a .tar in it; or an "
                             "image-text pair set (`m3w export pairs` output), mixed in as Flamingo mixes pairs")
    parser.add_argument("--weights", type=float, nargs="+", metavar="λ",
                        help="mixing weight λ of each dataset, in order (default: 1 each)")
    parser.add_argument("--output", default="smoke-out", help="directory for the report and plots")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the profile's smoke.device")
    parser.add_argument("--profile", help="config profile: tiny (CPU, CI) or gpu; default: smoke.profile")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Resolve the config (profile under the user's `--config`/`--set`), train, judge, print the verdict."""
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
        print(f"m3w smoke: {refusal_text(error)}", file=sys.stderr)
        return 2
    print_summary(report)
    print(f"report, timings and plots written to {args.output}")
    return 0 if report["verdict"]["passed"] else 1


def refusal_text(error: Exception) -> str:
    """The refusal's own message: one raised in a DataLoader worker process arrives wrapped, as "Caught X in
    DataLoader worker process N. Original Traceback ...", with the message on the last line after the type."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        return text.splitlines()[-1].split(": ", 1)[-1]
    return text


def print_summary(report: dict) -> None:
    verdict = report["verdict"]
    for name, c in verdict["checks"].items():
        bounds = c.get("bounds") or {}
        interval = f" bound=[{bounds['lower']}, {bounds['upper']}]" if bounds.get("lower") is not None else ""
        print(f"  {MARKS[c['status']]} {name:<30} {c['level']:<9} value={c['value']} "
              f"threshold={c['threshold']}{interval}")
    for name, entry in report.get("dataset_losses", {}).items():
        print(f"  loss {name} ({entry['kind']}, λ={entry['weight']}): train {entry['train_loss']}, "
              f"held-out {entry['heldout_loss']}")
    timing = report.get("timing", {}).get("main", {})
    if timing:
        print(f"  main run: {timing['steps']} steps in {timing['seconds']} s, {timing['tokens_per_s']} tokens/s, "
              f"data wait {timing['data_wait_share']:.1%}, MFU {timing.get('mfu')}")
    print(f"verdict: {verdict['status'].upper()}: {verdict['summary']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train_smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--config", help="YAML file overriding the defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set smoke.train.steps=50 (repeatable)")
    return run(parser.parse_args(argv))
