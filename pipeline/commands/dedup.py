"""`m3w dedup`: OBELICS Parquet documents → documents without duplicates (URLs, texts, paragraphs, images)."""

from __future__ import annotations

import argparse

from pipeline.commands import (
    add_allow_empty_flag,
    add_config_flags,
    add_overwrite_flag,
    checked_config,
    exit_status,
    print_report_summary,
)

NAME = "dedup"
ORDER = 30
HELP = "Parquet documents → deduplicated documents (URL, exact, near, paragraphs, images) + report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="OBELICS Parquet file, glob or directory (e.g. an `m3w extract` output), "
                             "local or any Beam filesystem (repeatable)")
    parser.add_argument("--output", required=True, help="output directory")
    add_config_flags(parser)
    add_allow_empty_flag(parser)
    add_overwrite_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.stages import run_dedup

    config = checked_config(args, beam_args)
    report = run_dedup(args.input, args.output, config, beam_args, overwrite=args.overwrite)
    print_report_summary(report)
    images = "with image content dedup" if report["image_dedup"] else "no image bytes: image content dedup skipped"
    print(f"documents ({images}), report.json and config.yaml written to {args.output}")
    return exit_status(report, args.allow_empty)
