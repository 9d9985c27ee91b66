"""The `m3w` command line: one subcommand per stage (see `pipeline/commands/`).

Flags a subcommand does not know are passed to Beam as pipeline options, so
`m3w build ... --runner DataflowRunner --project P --region R --setup_file ./setup.py` just works.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.commands import discover
from pipeline.config import ConfigError
from pipeline.core.failures import SystematicFailure
from pipeline.core.outputs import OutputInUse
from pipeline.core.packages import PackageCollision, check_top_level_packages

QUIET_LOGGERS = ("apache_beam", "trafilatura", "htmldate", "root", "courlan", "justext", "img2dataset")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(prog="m3w", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="show Beam's and the libraries' logs too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}
    for module in discover():
        commands[module.NAME] = module
        module.add_arguments(sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__))
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        check_top_level_packages()
        return int(commands[args.command].run(args, beam_args) or 0)
    except (ConfigError, FileNotFoundError, OutputInUse, PackageCollision) as err:
        print(f"m3w: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a systematic failure is named in one line; anything else re-raised
        cause = systematic_cause(err)
        if cause is None:
            raise
        print(f"m3w: stopped, {cause}", file=sys.stderr)
        return 1


def systematic_cause(error: BaseException) -> str | None:
    """The `SystematicFailure` message in `error`, also when a Beam runner re-raised it as its own exception."""
    if isinstance(error, SystematicFailure):
        return str(error)
    marker = f"{SystematicFailure.__name__}: "
    lines = [line for line in str(error).splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1].strip() if lines else None


if __name__ == "__main__":
    sys.exit(main())
