"""`m3w shard`: OBELICS Parquet documents with image bytes → webdataset training shards with `<image>`/`<EOC>`
tokens and φ arrays, a manifest, the tokenizer and the documents' Parquet (layout: schemas/shards.py)."""

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

NAME = "shard"
ORDER = 60
HELP = "documents with image bytes (Parquet) → training shards + manifest + tokenizer + report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="Parquet documents with image bytes: file, glob or directory, any Beam filesystem "
                             "(repeatable)")
    parser.add_argument("--output", required=True,
                        help="output directory (shards/, manifest.json, tokenizer.json, docs/)")
    add_config_flags(parser)
    add_allow_empty_flag(parser)
    add_overwrite_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.stages import run_shard

    config = checked_config(args, beam_args)
    report = run_shard(args.input, args.output, config, beam_args, overwrite=args.overwrite)
    print_report_summary(report)
    summary = report["shards"]
    print(f"{summary['samples']} sequences from {summary['documents']} documents in {summary['shards']} shard(s); "
          f"manifest: {summary['manifest']}")
    print(f"check them with: m3w inspect validate {args.output}")
    return exit_status(report, args.allow_empty)
