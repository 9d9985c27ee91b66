"""`m3w build`: read → extract → filter → dedup → download → image filters → image dedup → shards, resumable."""

from __future__ import annotations

import argparse
import sys

from pipeline.commands import (
    add_allow_empty_flag,
    add_canaries_flag,
    add_config_flags,
    checked_config,
    exit_status,
    print_report_summary,
    with_canaries,
)

NAME = "build"
ORDER = 5
HELP = "run every stage from crawl files to training shards (resumable), with report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="WARC/ARC/HTML file glob or directory, local or any Beam filesystem (repeatable)")
    parser.add_argument("--output", required=True, help="output directory (local, gs://, s3://...)")
    add_config_flags(parser)
    add_canaries_flag(parser)
    add_allow_empty_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.build import run_build

    with_canaries(args)
    config = checked_config(args, beam_args)
    report = run_build(args.input, args.output, config, beam_args)
    print_report_summary(report)
    print(f"canaries: {report['canaries']['summary']}")
    if report.get("resumed_stages"):
        print(f"resumed: skipped completed stages {', '.join(report['resumed_stages'])}")
    print(f"report: {args.output}/report.html (and report.json); shards: {args.output}/stages/shards")
    images = report.get("images") or {}
    if images.get("retry_pending"):  # written, but not final: exit 3 above download.max_retry_pending_share
        reasons = ", ".join(f"{reason} {n}" for reason, n in images["retry_pending_by_reason"].items())
        print(f"images: {images['retry_pending']} of {images['urls']} image URLs failed transiently ({reasons}) and "
              "are pending: re-run the same command to fetch only them", file=sys.stderr)
    status = exit_status(report, args.allow_empty)
    return 3 if status == 0 and images.get("pending_over_limit") else status
