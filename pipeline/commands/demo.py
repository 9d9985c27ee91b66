"""`m3w demo`: sample crawl → local image host → build → inspect validate → CPU smoke → run report."""

from __future__ import annotations

import argparse

from pipeline.commands import add_config_flags
from pipeline.jobs.demo import DEMO_CANARY_CLASSES, DEMO_CANARY_PAGES
from pipeline.sampledata.crawl.canaries import CANARY_CLASSES

NAME = "demo"
ORDER = 1
HELP = "the whole journey on the bundled sample crawl (a few minutes on a laptop)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-out", help="output directory (default: demo-out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated sample crawl")
    parser.add_argument("--smoke-profile", default="tiny", help="smoke-trainer profile (tiny runs on CPU)")
    parser.add_argument("--canary-pages", type=int, default=DEMO_CANARY_PAGES,
                        help="alignment-canary pages in the sample crawl (more give the smoke verdict more evidence)")
    parser.add_argument("--canary-classes", nargs="+", default=list(DEMO_CANARY_CLASSES), choices=CANARY_CLASSES,
                        metavar="CLASS", help="canary shapes (default: four; all eight pass with a 3x longer "
                                              "smoke run: --set smoke.train.steps=900)")
    parser.add_argument("--strict-verdict", action=argparse.BooleanOptionalAction, default=True,
                        help="exit 1 unless the smoke verdict is PASS (default); --no-strict-verdict: only a broken "
                             "pipeline or broken shards fail the demo (e.g. when trying a smoke config of your own)")
    add_config_flags(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.demo import run_demo

    if args.canary_pages < 0:
        raise SystemExit("m3w demo: --canary-pages must be >= 0")
    return run_demo(args.output, args.seed, args.config, args.set, beam_args, args.smoke_profile,
                    args.canary_pages, tuple(args.canary_classes), args.strict_verdict)
