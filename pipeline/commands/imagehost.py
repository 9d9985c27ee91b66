"""`m3w imagehost`: serve images on 127.0.0.1 for the demo and manual runs (no request leaves the machine).

Serves `GET /<host>/<path>` from `--root` (the sample crawl's `images/` folder), a deterministic generated
picture for any other path, and failure routes for paths with `/fail/<kind>/` (404, 500, timeout, corrupt,
bomb, wrong_type, noai...). Point the downloader at it with
`--set download.rewrite_to=http://127.0.0.1:PORT --set download.allow_loopback=true`.
"""

from __future__ import annotations

import argparse

NAME = "imagehost"
ORDER = 90
HELP = "serve test images on 127.0.0.1 (for the demo and `m3w download` without the live web)"
PIPELINE_OPTIONS = False  # no Beam pipeline: every flag it does not know is refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="directory laid out as <host>/<path> (e.g. the sample crawl's images/)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--timeout-sleep", type=float, default=5.0,
                        help="seconds the /fail/timeout/ route waits before answering")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.sampledata.imagehost import serve_forever

    serve_forever(args.root, args.port, args.timeout_sleep)
    return 0
