"""The `m3w` command line: one subcommand per stage (see `pipeline/commands/`).

Beam's own pipeline options pass through to Beam, so
`m3w build ... --runner DataflowRunner --project P --region R --setup_file ./setup.py` just works; any other
flag m3w does not know is an error naming it (exit 2), never silently dropped.
Exit codes (docs/failures.md): 0 done; 1 a run that failed its checks (items lost, nothing written, stopped);
2 refused before anything ran (a flag, the config, a path) or an environment error, in one line (`--debug` adds
the traceback); 3 `m3w build` written with retries pending.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import traceback
from types import ModuleType

from pipeline.commands import discover
from pipeline.config import ConfigError
from pipeline.core.failures import SystematicFailure
from pipeline.core.outputs import OutputInUse
from pipeline.core.packages import PackageCollision, check_top_level_packages
from pipeline.core.paths import UnusablePath, innermost_cause

QUIET_LOGGERS = ("apache_beam", "trafilatura", "htmldate", "root", "courlan", "justext", "img2dataset")


class FlagError(ValueError):
    """A flag neither the command nor Beam knows (or a Beam option given wrongly): refused before anything runs."""


def add_global_flags(parser: argparse.ArgumentParser, default: object = False) -> None:
    """`--verbose` and `--debug`, before the command or after it (`default=SUPPRESS` there: no override)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show Beam's and the libraries' logs too")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="print the traceback of an error that is otherwise told in one line")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType], dict[str, argparse.ArgumentParser]]:
    """The `m3w` parser, the command modules and each one's own parser, by name."""
    parser = argparse.ArgumentParser(prog="m3w", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands, parsers = {}, {}
    for module in discover():
        commands[module.NAME] = module
        parsers[module.NAME] = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__)
        module.add_arguments(parsers[module.NAME])
        add_global_flags(parsers[module.NAME], default=argparse.SUPPRESS)
    return parser, commands, parsers


def main(argv: list[str] | None = None) -> int:
    parser, commands, parsers = build_parser()
    args, unknown = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    module = commands[args.command]
    try:
        known = [*flags_of(parser, nested=False), *flags_of(parsers[args.command])]
        beam_args = pipeline_options(unknown, known, takes_beam_options=getattr(module, "PIPELINE_OPTIONS", True))
        check_top_level_packages()
        return int(module.run(args, beam_args) or 0)
    except (ConfigError, FileNotFoundError, FlagError, OutputInUse, PackageCollision, UnusablePath) as err:
        return refuse(err, str(err), 2, args.debug)
    except OSError as err:  # the environment (a path, a filesystem, a disk): one line, --debug shows where
        return refuse(err, f"{innermost_cause(err)} (--debug shows the traceback)", 2, args.debug)
    except Exception as err:  # noqa: BLE001 - a systematic failure is named in one line; anything else re-raised
        cause = systematic_cause(err)
        if cause is None:
            raise
        return refuse(err, f"stopped, {cause}", 1, args.debug)


def refuse(error: BaseException, message: str, code: int, debug: bool) -> int:
    """Print `m3w: message` (after the traceback with `--debug`) and return the exit code."""
    if debug:
        traceback.print_exception(error)
    print(f"m3w: {message}", file=sys.stderr)
    return code


def flags_of(parser: argparse.ArgumentParser, nested: bool = True) -> list[str]:
    """Every option string `parser` knows, with those of its subcommands' parsers when `nested`."""
    flags = []
    for action in parser._actions:  # argparse has no public listing of its options
        flags.extend(action.option_strings)
        if nested and isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                flags.extend(flags_of(subparser))
    return flags


def beam_option_parser() -> argparse.ArgumentParser:
    """A parser of every Beam pipeline option, collected the way Beam's `PipelineOptions.get_all_options` does
    (each `PipelineOptions` subclass adds its own with `_add_argparse_args`), failing instead of exiting."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class OptionParser(_BeamArgumentParser):
        def error(self, message: str) -> None:
            if not message.startswith("ambiguous option: "):  # ignored by Beam's own parser as well
                raise FlagError(message)

    parser = OptionParser(allow_abbrev=False, add_help=False)
    for options in {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values():
        options._add_argparse_args(parser)
    return parser


def pipeline_options(unknown: list[str], known: list[str], takes_beam_options: bool = True) -> list[str]:
    """`unknown` (what the command's parser left) when all of it is Beam pipeline options, for Beam; else a
    `FlagError` naming the first flag that is not and the nearest flag m3w or Beam knows."""
    if not unknown:
        return []
    beam = beam_option_parser() if takes_beam_options else None
    leftover = beam.parse_known_args(unknown)[1] if beam else unknown
    if not leftover:
        return unknown
    flag = next((token.split("=", 1)[0] for token in leftover if token.startswith("-")), None)
    if flag is None:
        raise FlagError(f"unexpected argument {leftover[0]!r}")
    candidates = [*known, *(flags_of(beam) if beam else [])]
    nearest = difflib.get_close_matches(flag, candidates, n=1)
    raise FlagError(f"unknown flag {flag}" + (f" (did you mean {nearest[0]}?)" if nearest else ""))


def systematic_cause(error: BaseException) -> str | None:
    """The `SystematicFailure` message in `error`, also when a Beam runner re-raised it as its own exception."""
    if isinstance(error, SystematicFailure):
        return str(error)
    marker = f"{SystematicFailure.__name__}: "
    lines = [line for line in str(error).splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1].strip() if lines else None


if __name__ == "__main__":
    sys.exit(main())
