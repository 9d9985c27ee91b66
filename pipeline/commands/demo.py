"""`m3w demo`: sample crawl → local image host → build → inspect validate → CPU smoke → run report."""

from __future__ import annotations

import argparse

from pipeline.commands import add_config_flags

NAME = "demo"
ORDER = 1
HELP = "the whole journey on the bundled sample crawl (a few minutes on a laptop)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-out", help="output directory (default: demo-out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated sample crawl")
    parser.add_argument("--smoke-profile", default="tiny", help="smoke-trainer profile (tiny runs on CPU)")
    parser.add_argument("--canary-pages", type=int, default=48,
                        help="alignment-canary pages in the sample crawl (more give the smoke verdict more evidence)")
    add_config_flags(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.demo import run_demo

    return run_demo(args.output, args.seed, args.config, args.set, beam_args, args.smoke_profile,
                    args.canary_pages)
