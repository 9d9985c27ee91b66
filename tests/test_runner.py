"""The local runner m3w chooses: safe at scale, a data-plane overflow fails the run, a killed worker never
shrinks a run (issue 14, part 3; docs/runner.md)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions

from pipeline.config import ConfigError
from pipeline.jobs.runner import DataPlaneOverflow, RunnerSettings, keyed_payload_probe, make_pipeline, pipeline_options
from pipeline.settings import load_config

REPO = Path(__file__).resolve().parents[1]
DATA_PLANE_WARN_BYTES = 512 << 20  # apache_beam.runners.worker.data_plane's large_buffer_warn_threshold_bytes


def runner(*overrides: str) -> RunnerSettings:
    return RunnerSettings.from_config(load_config(overrides=list(overrides))["runner"], "runner")


def test_default_local_runner_is_in_memory_with_one_worker():
    options = pipeline_options([], runner())
    direct = options.get_all_options()
    assert direct["direct_running_mode"] == "in_memory" and direct["direct_num_workers"] == 1
    with pytest.raises(ConfigError, match="runner.direct_running_mode': expected one of 'in_memory'"):
        pipeline_options([], runner("runner.direct_running_mode=multi_processes"))


class _WarnLikeTheDataPlane(beam.DoFn):
    """Logs Beam's overflow warning as the driver's data plane does, or as the runner re-logs a worker's."""

    def __init__(self, forwarded: bool):
        self.forwarded = forwarded

    def process(self, element):
        message = "Data output stream buffer size 913837995 exceeds 536870912 bytes. This is likely due to ..."
        if self.forwarded:
            logging.log(logging.WARNING, f"log_location: data_plane.py:175 message: {message}")
        else:
            logging.getLogger("apache_beam.runners.worker.data_plane").warning(message)
        yield element


@pytest.mark.parametrize("forwarded", [False, True])
def test_a_data_plane_overflow_warning_fails_the_run_even_with_beam_quieted(tmp_path, forwarded, capsys):
    root, beam_logger = logging.getLogger(), logging.getLogger("apache_beam")
    levels = root.level, beam_logger.level
    root.setLevel(logging.ERROR)  # as the m3w CLI quiets them without --verbose
    beam_logger.setLevel(logging.ERROR)
    try:
        out = tmp_path / "count"
        pipeline = make_pipeline([], runner())
        (pipeline | beam.Create([1, 2, 3]) | beam.ParDo(_WarnLikeTheDataPlane(forwarded))
         | beam.combiners.Count.Globally() | beam.Map(lambda n: out.write_text(str(n))))
        with pytest.raises(DataPlaneOverflow, match="913837995 exceeds 536870912"):
            pipeline.run()
        assert (root.level, beam_logger.level) == (logging.ERROR, logging.ERROR), "levels restored after the run"
    finally:
        root.setLevel(levels[0])
        beam_logger.setLevel(levels[1])
    assert out.read_text() == "3", "the run itself completed: only the check after it refused it"
    assert not any(type(h).__name__ == "_DataPlaneWatch" for h in root.handlers), "the watch is removed"


@pytest.mark.slow
def test_the_chosen_runner_carries_bundles_past_the_data_plane_limit_whole(tmp_path):
    """The issue's reproduction (keyed 100 KB values through a CoGroupByKey), sized to put 15% more than the
    data plane's 512 MiB warning threshold into every worker's bundle of the configured runner: 620 MB for
    the one in-memory worker; a default switched to the multi-process runner with 2 workers would get 1.2 GB,
    the size at which it lost keys, and fails here (keys missing, or `DataPlaneOverflow`)."""
    settings = runner()
    workers = pipeline_options([], settings).view_as(DirectOptions).direct_num_workers
    value_bytes = 100_000
    n = math.ceil(1.15 * DATA_PLANE_WARN_BYTES * workers / value_bytes)
    out = tmp_path / "arrived"
    pipeline = make_pipeline([], settings)
    keyed_payload_probe(pipeline, n, value_bytes) | beam.Map(lambda count: out.write_text(str(count)))
    pipeline.run()
    assert int(out.read_text()) == n


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import apache_beam as beam
    from pipeline.settings import load_config
    from pipeline.jobs.runner import RunnerSettings, make_pipeline

    class KillOnSeven(beam.DoFn):
        def process(self, x):
            if x == 7:
                os.kill(os.getpid(), signal.SIGKILL)  # a worker killed mid-bundle (out of memory, an operator)
            yield x

    config = load_config(overrides=sys.argv[2:])
    pipeline = make_pipeline([], RunnerSettings.from_config(config["runner"], "runner"))
    (pipeline | beam.Create(range(100)) | beam.Reshuffle() | beam.ParDo(KillOnSeven())
     | beam.combiners.Count.Globally() | beam.Map(lambda n: open(sys.argv[1], "w").write(str(n))))
    pipeline.run()
    print("run returned")
""")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_a_killed_worker_fails_the_run_and_never_shrinks_it(tmp_path, mode):
    out = tmp_path / "count"
    process = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(out), f"runner.direct_running_mode={mode}",
                              "runner.direct_num_workers=2"], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.returncode != 0
    assert "run returned" not in process.stdout
    assert not out.exists(), "no count of a shrunken run may be written"
