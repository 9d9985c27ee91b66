"""Choosing the Beam runner: the in-process/multi-process Python runner locally, any Beam runner by flag.

Beam >= 2.68 tries its Prism runner first when none is named, and Prism downloads a binary: offline
that fails. So when the user names no `--runner`, m3w builds the portable FnApiRunner itself, in
multi-process mode so every core works. `--runner DataflowRunner` (Flink, Spark...) with the
standard Beam options takes over unchanged.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions


def pipeline_options(beam_args: list[str] | None, config: dict[str, Any]) -> PipelineOptions:
    args = list(beam_args or [])
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # workers' INFO chatter hides real warnings
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = False
    if options.view_as(StandardOptions).runner is None:
        direct = options.view_as(DirectOptions)
        direct.direct_running_mode = config["runner"]["direct_running_mode"]
        # One worker is all the in-memory mode can use (Beam warns otherwise).
        in_memory = direct.direct_running_mode == "in_memory"
        direct.direct_num_workers = 1 if in_memory else int(config["runner"]["direct_num_workers"])
    return options


def make_pipeline(beam_args: list[str] | None, config: dict[str, Any]) -> beam.Pipeline:
    options = pipeline_options(beam_args, config)
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)
