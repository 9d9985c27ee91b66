"""`m3w decontaminate`: OBELICS Parquet documents → the same documents without the pictures and passages of the
user's evaluation benchmarks (local copies named by `decontaminate.images` and `decontaminate.texts`), with
contamination.jsonl (every match: training document, benchmark file and item, evidence), report.json and
config.yaml. Pictures are compared where the documents carry their bytes (`m3w download` output); `m3w build`
runs the same stage after its image filters. How to point it at local benchmark copies: docs/decontaminate.md.
"""

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

NAME = "decontaminate"
ORDER = 45
HELP = "documents → documents without your benchmarks' pictures and passages + contamination.jsonl + report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="Parquet documents: glob, file or directory (e.g. `m3w download` output); repeatable")
    parser.add_argument("--output", required=True, help="output directory")
    add_config_flags(parser)
    add_allow_empty_flag(parser)
    add_overwrite_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.stages import run_decontaminate

    config = checked_config(args, beam_args)
    report = run_decontaminate(args.input, args.output, config, beam_args, overwrite=args.overwrite)
    print_report_summary(report)
    found = report["contamination"]
    if found is None:
        print("no benchmark configured (decontaminate.images, decontaminate.texts): every document passed")
    else:
        print(f"{found['matches']} matches with {len(found['by_benchmark'])} benchmark files: {found['audit']}")
        if config["decontaminate"]["images"] and not report["pictures_compared"]:
            print("the documents carry no image bytes: pictures were not compared (run it on `m3w download` output)")
    print(f"documents, contamination.jsonl, report.json and config.yaml written to {args.output}")
    return exit_status(report, args.allow_empty)
