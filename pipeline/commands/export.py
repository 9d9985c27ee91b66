"""`m3w export {mmc4,pairs}`: documents with downloaded images → the layouts other trainers read.

  mmc4   one JSON per document in MMC4's layout (text_list, image_info with base64 images, similarity_matrix),
         as OpenFlamingo's get_mmc4_dataset / preprocess_interleaved read it
  pairs  image-text pairs in img2dataset's / LAION's webdataset layout (jpg, txt, json), the text from the
         image's caption, alt text or adjacent sentence under the rules of `export.pairs`

Both write `00000.tar ...`, sizes.json, manifest.json (with the brace pattern), report.json and config.yaml.
Consumer recipes: README ("Using the output elsewhere") and docs/export.md.
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

NAME = "export"
ORDER = 65
HELP = "documents with images → MMC4 (OpenFlamingo) or image-text pair (img2dataset/LAION) webdataset shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("mmc4", "pairs"), help="mmc4: interleaved documents; pairs: image-text pairs")
    parser.add_argument("--input", action="append", required=True,
                        help="Parquet documents with image bytes: file, glob or directory (e.g. a build's "
                             "stages/shards), any Beam filesystem (repeatable)")
    parser.add_argument("--output", required=True, help="output directory (NNNNN.tar, sizes.json, manifest.json)")
    add_config_flags(parser)
    add_allow_empty_flag(parser)
    add_overwrite_flag(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.jobs.stages import run_export

    config = checked_config(args, beam_args)
    report = run_export(args.kind, args.input, args.output, config, beam_args, overwrite=args.overwrite)
    print_report_summary(report)
    summary = report["export"]
    print(f"{summary['samples']} {args.kind} samples in {summary['shards']} shard(s): "
          f"{args.output.rstrip('/')}/{summary['shard_pattern']}")
    return exit_status(report, args.allow_empty)
