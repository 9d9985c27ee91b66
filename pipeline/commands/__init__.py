"""One module per `m3w` subcommand, discovered here; each defines NAME, HELP, add_arguments() and run().

Command modules stay light at import (heavy imports go inside `run`), so `m3w --help` is instant.
`run(args, beam_args)` returns the exit code; unknown flags (`beam_args`) are Beam pipeline options.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType


def discover() -> list[ModuleType]:
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
    modules = [m for m in modules if hasattr(m, "NAME") and hasattr(m, "run")]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file overriding the defaults (any Beam filesystem path)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set filters.language.threshold=0.8 (repeatable)")


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    """`--overwrite` for the stage commands (pipeline/core/outputs.py: a re-run clears its own output)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="clear OUTPUT first even when it holds something other than this command's earlier "
                             "output (without it such a folder is refused; `m3w download` keeps its --workdir)")


def print_report_summary(report: dict) -> None:
    import sys

    for stage, units in report["stages"].items():
        for unit, entry in units.items():
            drops = ", ".join(f"{reason}={n}" for reason, n in entry["dropped"].items())
            print(f"{stage:>14} {unit:<11} in={entry['in']:<7} out={entry['out']:<7} {drops}")
    if report.get("unbalanced"):
        print(f"COUNTS DO NOT BALANCE: {report['unbalanced']}", file=sys.stderr)
    if report.get("broken_links"):
        print(f"ITEMS LOST BETWEEN STAGES: {'; '.join(report['broken_links'])}", file=sys.stderr)


def exit_status(report: dict) -> int:
    """1 when anything vanished (a stage that does not balance, or items lost between stages), else 0."""
    return 1 if report.get("unbalanced") or report.get("broken_links") else 0
