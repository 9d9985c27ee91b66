"""`m3w download`: OBELICS Parquet documents → the same documents with their image bytes, resized and checked.

Fetches every image of the documents with img2dataset inside Beam workers (URL shards, retries, timeout,
X-Robots-Tag opt-out), never requests the images of pages that opted out (`noai`/`noimageai`), refuses
private/loopback/metadata addresses, checks each image (decodes, size, aspect ratio, format, pixel cap,
NSFW) and writes OBELICS Parquet with an `image_bytes` column. Finished URL shards are kept under
`--workdir` (default OUTPUT/work/download): running the command again fetches only what is missing.
Against the local image host: `--set download.rewrite_to=http://127.0.0.1:PORT --set download.allow_loopback=true`.
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

NAME = "download"
ORDER = 40
HELP = "documents (Parquet) → documents with image bytes (img2dataset, opt-outs, image filters, NSFW)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="Parquet documents: glob, file or directory (e.g. `m3w extract` output); repeatable")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--workdir", help="where finished URL shards are kept (default OUTPUT/work/download)")
    add_config_flags(parser)
    add_allow_empty_flag(parser)
    add_overwrite_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.stages import run_download

    config = checked_config(args, beam_args, args.workdir)
    report = run_download(args.input, args.output, config, beam_args, args.workdir, overwrite=args.overwrite)
    print_report_summary(report)
    print(f"documents with image bytes, report.json and config.yaml written to {args.output}")
    return exit_status(report, args.allow_empty)
