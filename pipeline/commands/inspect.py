"""`m3w inspect`: look inside training shards — a `.tar` shard, a directory of shards or a manifest.

  validate  every invariant of the M3W contract + manifest counts and checksums (non-zero exit on any problem)
  stats     sequences, tokens, images per sequence, φ coverage, languages, top domains
  show      one sample: decoded text with <image> markers, φ and φ_next under every token
  html      a static page showing samples as a person reads them, images inline
"""

from __future__ import annotations

import argparse
import sys

NAME = "inspect"
ORDER = 70
HELP = "validate / stats / show / html on training shards"
PIPELINE_OPTIONS = False  # no Beam pipeline: every flag it does not know is refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="inspect_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help="a shard (.tar), a directory of shards, or a manifest.json")
        p.add_argument("--tokenizer", help="tokenizer.json to decode with (default: the manifest's, or one beside)")

    validate = sub.add_parser("validate", help="check every contract invariant; exit 1 on any problem")
    common(validate)
    validate.add_argument("--no-images", action="store_true", help="skip decoding images (faster)")
    validate.add_argument("--max-problems", type=int, default=1000, help="stop after this many problems")

    stats = sub.add_parser("stats", help="summary tables")
    common(stats)
    stats.add_argument("--top", type=int, default=10, help="languages/domains listed")
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")

    show = sub.add_parser("show", help="one sample, text with <image> markers and φ under the tokens")
    common(show)
    show.add_argument("--key", help="sample key (default: the --index-th sample)")
    show.add_argument("--index", type=int, default=0, help="0-based sample number in stored order")
    show.add_argument("--width", type=int, default=100, help="terminal columns")

    page = sub.add_parser("html", help="static HTML page with images inline")
    common(page)
    page.add_argument("--output", "-o", default="shards.html", help="HTML file to write")
    page.add_argument("--limit", type=int, default=20, help="samples shown")
    page.add_argument("--key", help="show only this sample")
    page.add_argument("--image-files", action="store_true",
                      help="write images beside the page (NAME_files/) instead of embedding data URIs")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.inspect.common import InspectError

    try:
        return _run(args)
    except InspectError as error:
        print(f"m3w inspect: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    action = args.inspect_command
    if action == "validate":
        from pipeline.inspect.validate import validate

        result = validate(args.path, check_images=not args.no_images, tokenizer_path=args.tokenizer,
                          max_problems=args.max_problems)
        for problem in result.problems:
            print(problem)
        verdict = "OK" if result.ok else f"INVALID: {len(result.problems)} problem(s)"
        manifest = f", manifest {result.manifest}" if result.manifest else ", no manifest"
        print(f"{verdict} — {result.samples} sample(s) in {result.shards} shard(s){manifest}",
              file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    if action == "stats":
        import json

        from pipeline.inspect.stats import compute_stats, format_stats

        stats = compute_stats(args.path, top=args.top, tokenizer_path=args.tokenizer)
        print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else format_stats(stats))
        return 0
    if action == "show":
        from pipeline.inspect.show import show

        print(show(args.path, key=args.key, index=args.index, width=args.width, tokenizer_path=args.tokenizer))
        return 0
    from pipeline.inspect.html import write_html

    count = write_html(args.path, args.output, limit=args.limit, key=args.key, image_files=args.image_files,
                       tokenizer_path=args.tokenizer)
    print(f"{count} sample(s) written to {args.output}")
    return 0
