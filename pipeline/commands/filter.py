"""`m3w filter`: OBELICS Parquet documents (from `m3w extract`) → documents that pass the language, safety
and text-quality filters, with report.json (per-filter drop counts) and config.yaml."""

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

NAME = "filter"
ORDER = 20
HELP = "documents → language / safety / quality filtered documents + report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="Parquet documents: an `m3w extract` output directory, a directory of .parquet files "
                             "or a glob, local or any Beam filesystem (repeatable)")
    parser.add_argument("--output", required=True, help="output directory")
    add_config_flags(parser)
    add_allow_empty_flag(parser)
    add_overwrite_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.stages import run_filter

    config = checked_config(args, beam_args)
    report = run_filter(args.input, args.output, config, beam_args, overwrite=args.overwrite)
    print_report_summary(report)
    print(f"documents, report.json and config.yaml written to {args.output}")
    return exit_status(report, args.allow_empty)
