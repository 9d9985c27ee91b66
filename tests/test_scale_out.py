"""Dataflow's model, checked as far as it can be here: graphs build under DataflowRunner, DoFns pickle."""

from __future__ import annotations

import pytest
from apache_beam.internal import pickler

from pipeline.jobs.build import STAGES, BuildContext
from pipeline.settings import load_config

DATAFLOW_ARGS = [
    "--runner=DataflowRunner", "--project=m3w-test", "--region=us-central1", "--temp_location=gs://m3w-test/tmp",
    "--staging_location=gs://m3w-test/staging", "--no_auth", "--dry_run=True", "--sdk_location=container",
    "--job_name=m3w-graph-test",
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "build_stage"), STAGES, ids=[name for name, _ in STAGES])
def test_stage_graph_builds_under_dataflow_runner(name, build_stage, fixtures_dir, tmp_path):
    """The runner validates options, serialises every transform and stages nothing (dry run: no submission)."""
    config = load_config()
    # A local output: listing a gs:// folder while building the graph would reach for the network.
    ctx = BuildContext([str(fixtures_dir / "warc" / "warcfile.warc.gz")], str(tmp_path), config, DATAFLOW_ARGS)
    pipeline = build_stage(ctx, ctx.stage_dir(name))
    result = pipeline.run()
    proto = result.job.proto_pipeline
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert any(n.split("/")[-1] in ("Read crawl", "Read documents") for n in names), sorted(names)[:20]
    assert result.job.options.get_all_options()["runner"] == "DataflowRunner"


@pytest.mark.parametrize(("name", "build_stage"), STAGES, ids=[name for name, _ in STAGES])
def test_every_dofn_unpickles_as_a_remote_worker_would(name, build_stage, fixtures_dir, tmp_path):
    """Serialise each stage's graph to its portable proto and unpickle every DoFn payload from it."""
    from apache_beam.portability import common_urns, python_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    config = load_config()
    ctx = BuildContext([str(fixtures_dir / "warc" / "warcfile.warc.gz")], str(tmp_path), config, [])
    proto = build_stage(ctx, ctx.stage_dir(name)).to_runner_api()
    dofns = []
    for transform in proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if payload.do_fn.urn == python_urns.PICKLED_DOFN_INFO:
                dofns.append(pickler.loads(payload.do_fn.payload))
    ours = [d for d in dofns
            if type(d[0] if isinstance(d, tuple) else d).__module__.startswith(("pipeline", "filters"))]
    assert dofns and ours, f"no m3w DoFn found in stage {name}"
