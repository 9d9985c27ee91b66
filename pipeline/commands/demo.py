"""`m3w demo`: sample crawl → local image host → build → inspect validate → CPU smoke → run report."""

from __future__ import annotations

import argparse

from pipeline.canaries.shapes import CANARY_CLASSES
from pipeline.commands import add_canaries_flag, add_config_flags, with_canaries

NAME = "demo"
ORDER = 1
HELP = "the whole journey on the bundled sample crawl (a few minutes on a laptop)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-out", help="output directory (default: demo-out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated sample crawl")
    parser.add_argument("--smoke-profile", default="tiny", help="smoke-trainer profile (tiny runs on CPU)")
    add_canaries_flag(parser)
    parser.add_argument("--canary-classes", nargs="+", default=None, choices=CANARY_CLASSES, metavar="CLASS",
                        help="canary shapes (default: canaries.classes, four; all eight pass with a 3x longer "
                             "smoke run: --set smoke.train.steps=900)")
    parser.add_argument("--strict-verdict", action=argparse.BooleanOptionalAction, default=True,
                        help="exit 1 unless the smoke verdict is PASS (default); --no-strict-verdict: only a broken "
                             "pipeline or broken shards fail the demo (e.g. when trying a smoke config of your own)")
    add_config_flags(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.demo import run_demo

    with_canaries(args)
    if args.canary_classes:
        args.set = [*args.set, f"canaries.classes=[{', '.join(args.canary_classes)}]"]
    return run_demo(args.output, args.seed, args.config, args.set, beam_args, args.smoke_profile, args.strict_verdict)
