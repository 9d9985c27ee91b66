"""`m3w demo`: the whole journey on the bundled sample crawl, for a newcomer, in a few minutes.

generate the sample crawl → start the local image host on 127.0.0.1 → `m3w build` (every stage, with the
alignment canaries every build carries: `canaries.*`, `--canaries N`) → `m3w inspect validate` → CPU `m3w smoke`
on the build's shards (PASS or FAIL from the canaries) → the run report's path.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)

# What the demo changes from the defaults: it fetches the sample crawl's pictures from the local image host only.
DEMO_OVERRIDES = ["download.allow_loopback=true"]


def _step(message: str) -> float:
    print(f"\n==> {message}", flush=True)
    return time.time()


def _done(started: float, detail: str = "") -> None:
    print(f"    done in {time.time() - started:.1f}s {detail}", flush=True)


def run_demo(output: str, seed: int, user_config: str | None, overrides: list[str], beam_args: list[str],
             smoke_profile: str = "tiny", strict_verdict: bool = True) -> int:
    """The journey; the canaries are the build's own (`canaries.*` in `overrides`), as in any `m3w build`."""
    from pipeline.inspect.validate import validate
    from pipeline.io.documents import stage_dir
    from pipeline.jobs.build import run_build
    from pipeline.report.run_report import add_smoke_verdict
    from pipeline.sampledata.crawl import generate_sample_crawl
    from pipeline.sampledata.imagehost import ImageHost
    from pipeline.settings import load_config
    from train_smoke.config import resolve_config

    # The whole config and the smoke profile, typed, before anything runs (the image host's URL joins later).
    load_config(user_config, [*DEMO_OVERRIDES, *overrides])
    resolve_config(user_config, overrides, profile=smoke_profile)
    sample_dir = os.path.join(output, "sample")
    build_dir = os.path.join(output, "build")

    started = _step(f"generating the sample crawl (seed {seed}) in {sample_dir}")
    truth = generate_sample_crawl(sample_dir, seed=seed, n_canary_pages=0)  # the build brings the canaries
    _done(started, f"({len(truth['pages'])} pages, {len(truth['images'])} image URLs)")

    with ImageHost(os.path.join(sample_dir, "images")) as host:
        config = load_config(user_config, [*DEMO_OVERRIDES, f"download.rewrite_to={host.base_url}", *overrides])
        started = _step(f"m3w build (image host on {host.base_url})")
        report = run_build([os.path.join(sample_dir, "crawl.warc.gz")], build_dir, config, beam_args)
        _done(started)
    from pipeline.commands import exit_status, print_report_summary

    print_report_summary(report)
    print(f"canaries: {report['canaries']['summary']}")

    shards = stage_dir(build_dir, "shards")
    started = _step(f"m3w inspect validate {shards}")
    result = validate(shards)
    _done(started, f"({result.samples} sequences in {result.shards} shards, {len(result.problems)} problems)")
    for problem in result.problems[:10]:
        print(f"    {problem}")

    started = _step(f"m3w smoke {shards} (profile {smoke_profile}, CPU)")
    verdict = run_smoke_for_demo(shards, os.path.join(output, "smoke"), smoke_profile, user_config, overrides)
    status = verdict["status"].upper()
    _done(started, f"smoke verdict: {status}: {verdict.get('summary', '')}")
    add_smoke_verdict(build_dir, verdict)

    # The demo fails on a broken pipeline, broken shards, or (with `strict_verdict`, the default) a smoke verdict
    # other than PASS: the build's canaries are there so that sound shards must pass.
    pipeline_ok = result.ok and exit_status(report) == 0  # balanced, nothing lost, verified, not empty
    ok = pipeline_ok and (status == "PASS" or not strict_verdict)
    print(f"\nreport: {os.path.abspath(os.path.join(build_dir, 'report.html'))}")
    print(f"pipeline and shards: {'OK' if pipeline_ok else 'BROKEN'}; smoke verdict: {status}")
    print("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1


def run_smoke_for_demo(shards: str, output: str, profile: str, user_config: str | None,
                       overrides: list[str]) -> dict[str, Any]:
    """The CPU smoke run, configured like `m3w smoke --profile P`: the user's `smoke.*` settings beat the profile's."""
    from train_smoke.config import resolve_config
    from train_smoke.run import run_smoke

    config = resolve_config(user_config, overrides, profile=profile)
    return run_smoke([shards], output=output, config=config)["verdict"]
