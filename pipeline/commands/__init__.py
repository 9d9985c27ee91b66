"""One module per `m3w` subcommand, discovered here; each defines NAME, HELP, add_arguments() and run().

Command modules stay light at import (heavy imports go inside `run`), so `m3w --help` is instant.
`run(args, beam_args)` returns the exit code; `beam_args` are the Beam pipeline options among the flags (the
CLI refuses any other flag it does not know). A command that runs no Beam pipeline sets
`PIPELINE_OPTIONS = False`: every flag it does not know is refused.
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


def add_allow_empty_flag(parser: argparse.ArgumentParser) -> None:
    """`--allow-empty`: a run that reads items and writes none exits 0 (without it: 1, naming why)."""
    parser.add_argument("--allow-empty", action="store_true",
                        help="exit 0 even when the input has items and the output none (e.g. a filter you "
                             "expect to drop everything); without it such a run exits 1 naming the stage")


def add_canaries_flag(parser: argparse.ArgumentParser) -> None:
    """`--canaries N`: the alignment canary pages that ride along the build (`canaries.pages`; 0: none)."""
    parser.add_argument("--canaries", type=int, default=None, metavar="N",
                        help="alignment canary pages to carry through every stage into shard files of their own, "
                             "for the verdict of `m3w smoke` (default: canaries.pages, 400; 0: none)")


def with_canaries(args: argparse.Namespace) -> None:
    """`--canaries N` as the config override it stands for (`--set canaries.pages=N`, checked with the rest)."""
    if args.canaries is not None:
        args.set = [*args.set, f"canaries.pages={args.canaries}"]


def checked_config(args: argparse.Namespace, beam_args: list[str], *outputs: str | None) -> dict:
    """The command's whole config, with `--input`, `--output` and `outputs` checked before anything runs: a path
    that cannot be used is one line naming it and the cause (exit 2, pipeline/core/paths.py)."""
    from pipeline.core.paths import check_paths
    from pipeline.jobs.runner import RunnerSettings
    from pipeline.settings import load_config

    config = load_config(args.config, args.set)
    timeout_s = RunnerSettings.from_config(config["runner"], "runner").path_check_timeout_s
    check_paths(args.input, [args.output, *outputs], beam_args, timeout_s)
    return config


def print_report_summary(report: dict) -> None:
    import sys

    for stage, units in report["stages"].items():
        for unit, entry in units.items():
            drops = ", ".join(f"{reason}={n}" for reason, n in entry["dropped"].items())
            print(f"{stage:>14} {unit:<11} in={entry['in']:<7} out={entry['out']:<7} {drops}")
            skipped = {name.removeprefix("skipped_"): n for name, n in entry.get("info", {}).items()
                       if name.startswith("skipped_")}  # rules without a cut-off for a language (docs/filters.md)
            if skipped:
                print(f"{'':>26} not judged, no cut-off for the language (rule_language): "
                      + ", ".join(f"{name}={n}" for name, n in sorted(skipped.items())))
    if report.get("unbalanced"):
        print(f"COUNTS DO NOT BALANCE: {report['unbalanced']}", file=sys.stderr)
    if report.get("broken_links"):
        print(f"ITEMS LOST BETWEEN STAGES: {'; '.join(report['broken_links'])}", file=sys.stderr)


def exit_status(report: dict, allow_empty: bool = False) -> int:
    """1 when anything vanished (a stage that does not balance, items lost between stages), when the runner
    returned no metrics to show that nothing did, or when non-empty input gave no output (unless
    `allow_empty`); else 0. The last two are told here in one line each."""
    import sys

    if report.get("unverified"):
        print(f"m3w: cannot verify the run: {report['unverified']}", file=sys.stderr)
    if report.get("empty"):
        hint = "allowed by --allow-empty" if allow_empty else "use --allow-empty if you expect an empty result"
        print(f"m3w: {report['empty']}; {hint}", file=sys.stderr)
    failed = report.get("unbalanced") or report.get("broken_links") or report.get("unverified")
    return 1 if failed or (report.get("empty") and not allow_empty) else 0
