"""Choosing the Beam runner: the in-process portable runner locally, any Beam runner by flag.

Beam >= 2.68 tries its Prism runner first when none is named, and Prism downloads a binary: offline
that fails. So when the user names no `--runner`, m3w builds the portable FnApiRunner itself.
`--runner DataflowRunner` (Flink, Spark...) with the standard Beam options takes over unchanged.

The local default is `in_memory` (one process, no gRPC data plane), not `multi_processing`: the
multi-process mode feeds each stage to a worker as one bundle over gRPC, and past about 512 MB-1 GB per
bundle that data plane loses elements or stalls while the run still exits 0 (docs/runner.md, reproduced
by `benchmarks/runner_bundles.py`). Whatever the mode, an m3w run treats the data plane's "buffer size
exceeds" warning as an error (`DataPlaneOverflow`): a run that may have lost data never counts as done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions
from pydantic import NonNegativeInt, PositiveFloat

from pipeline.config import Section
from pipeline.core.failures import BreakerSettings

RunningMode = Literal["in_memory", "multi_processing", "multi_threading"]  # Beam's local runner modes
# What Beam's data plane logs (apache_beam.runners.worker.data_plane) just before the multi-process runner
# drops or stalls a bundle; workers' copies reach the driver through the Fn API logging service.
DATA_PLANE_WARNINGS = ("Data output stream buffer size", "exceeds GRPC limit")


class DataPlaneOverflow(RuntimeError):
    """The local runner's data plane carried a bundle past the size at which it is known to lose elements."""


def _is_data_plane_warning(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return any(marker in message for marker in DATA_PLANE_WARNINGS)


class _DataPlaneWatch(logging.Handler):
    """Remembers the first data-plane overflow warning logged anywhere in this process while a run lasts."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: str | None = None
        self._lock_seen = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if _is_data_plane_warning(record):
            with self._lock_seen:
                self.seen = self.seen or record.getMessage()[:300]


class _ShowOnlyFrom(logging.Filter):
    """Keeps a console handler as quiet as it was (`level`) while the watch needs warnings logged at all."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or _is_data_plane_warning(record)


@contextmanager
def watching_the_data_plane() -> Iterator[_DataPlaneWatch]:
    """Let Beam's data-plane warnings reach the watch even where the CLI quiets Beam (root and `apache_beam`
    at ERROR): the driver's own and the workers' (the runner re-logs those on the root logger)."""
    root = logging.getLogger()
    plane = logging.getLogger("apache_beam.runners.worker.data_plane")
    shown = root.getEffectiveLevel()
    levels = (root.level, plane.level)
    quiet = _ShowOnlyFrom(shown)
    watch = _DataPlaneWatch()
    consoles = list(root.handlers)
    for handler in consoles:
        handler.addFilter(quiet)
    root.addHandler(watch)
    root.setLevel(min(shown, logging.WARNING))
    plane.setLevel(logging.WARNING)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(levels[0])
        plane.setLevel(levels[1])
        for handler in consoles:
            handler.removeFilter(quiet)


class M3wPipeline(beam.Pipeline):
    """A Beam pipeline whose `run()` fails (rather than returns) when the data plane overflowed."""

    def run(self, test_runner_api: Any = "AUTO"):
        with watching_the_data_plane() as watch:
            result = super().run(test_runner_api)
            result.wait_until_finish()
        if watch.seen:
            raise DataPlaneOverflow(
                f"the local runner's data plane overflowed ({watch.seen}); the multi-process runner loses "
                "elements past this size, so the run is not trusted. Use runner.direct_running_mode=in_memory "
                "(the default) or a distributed runner (docs/runner.md).")
        return result


def keyed_payload_probe(pipeline: beam.Pipeline, n: int, value_bytes: int) -> beam.PCollection:
    """The runner bug's minimal reproduction, no m3w transform in it: `n` keyed random values of `value_bytes`
    each, a `Map` to (key, length) labels, `{"doc": values, "label": labels} | CoGroupByKey()`; yields the one
    count of keys that arrived with both. A sound runner gives exactly `n` (benchmarks/runner_bundles.py)."""
    import os

    values = (pipeline | "Keys" >> beam.Create(range(n)) | "Reshuffle keys" >> beam.Reshuffle()
              | "Values" >> beam.Map(lambda key: (key, os.urandom(value_bytes))))
    labels = values | "Labels" >> beam.Map(lambda item: (item[0], len(item[1])))
    return (
        {"doc": values, "label": labels}
        | "Join" >> beam.CoGroupByKey()
        | "Both" >> beam.Filter(lambda item: bool(item[1]["doc"]) and bool(item[1]["label"]))
        | "Count" >> beam.combiners.Count.Globally()
    )


@dataclass(frozen=True)
class RunnerSettings(Section):
    """The `runner` section: the local runner's mode and workers, and when item failures stop a run."""

    direct_running_mode: RunningMode
    direct_num_workers: NonNegativeInt  # 0: one per core
    path_check_timeout_s: PositiveFloat  # the up-front check of a remote --input/--output waits this long
    circuit_breaker: BreakerSettings


def pipeline_options(beam_args: list[str] | None, runner: RunnerSettings) -> PipelineOptions:
    """Beam's options from `beam_args`; without a `--runner`, the local runner as the `runner` section says."""
    args = list(beam_args or [])
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # workers' INFO chatter hides real warnings
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = False
    if options.view_as(StandardOptions).runner is None:
        direct = options.view_as(DirectOptions)
        mode = runner.direct_running_mode
        direct.direct_running_mode = mode
        # One worker is all the in-memory mode can use (Beam warns otherwise).
        direct.direct_num_workers = 1 if mode == "in_memory" else runner.direct_num_workers
    return options


def make_pipeline(beam_args: list[str] | None, runner: RunnerSettings) -> beam.Pipeline:
    """The m3w pipeline on the runner `beam_args` name, else the local one the `runner` section configures."""
    options = pipeline_options(beam_args, runner)
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return M3wPipeline(runner=FnApiRunner(), options=options)
    return M3wPipeline(options=options)
