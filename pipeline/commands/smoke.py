"""`m3w smoke`: fit a small gated cross-attention VLM on shard sets and say, with evidence, whether the data
teaches it to use its images where the tokens say they are. Exits 1 when the verdict is not a pass, 2 when
the trainer refuses the shards: a checksum or φ the tokens contradict, or more undecodable samples than
`smoke.data.max_undecodable_share` (see `train_smoke.cli`, which `python -m train_smoke` runs without Beam).

Several shard sets are mixed with Flamingo's per-dataset weights (`--weights`, one λ per set). Outputs:
smoke_report.json (verdict, criteria, figures), smoke_timing.json (tokens/s, MFU, data-wait share) and
plots/*.png under --output.
"""

from __future__ import annotations

import argparse

from pipeline.commands import add_config_flags

NAME = "smoke"
ORDER = 60
HELP = "train a small Flamingo-style model on shards; verdict: do the images matter where φ says?"
PIPELINE_OPTIONS = False  # no Beam pipeline: every flag it does not know is refused


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from train_smoke.cli import add_arguments as add_smoke_arguments

    add_smoke_arguments(parser)
    add_config_flags(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from pipeline.settings import load_config
    from train_smoke.cli import run as run_smoke_command

    load_config(args.config, args.set)  # the whole config typed, as every m3w command checks it, before torch loads
    return run_smoke_command(args)
