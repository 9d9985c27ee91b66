"""The smoke trainer runs where only torch and a few common packages are installed (the GPU machine: torch,
numpy, pyarrow, pillow, tokenizers, matplotlib, pyyaml, pydantic, tqdm, scipy): `python -m train_smoke` in a process
that cannot import Apache Beam, webdataset or any pipeline module beyond the config file's loader, the atomic
file writer (Beam only for remote paths) and the alignment canaries' definitions (`pipeline.canaries.shapes`: pure
Python, shared by the builds that carry canaries, the sample crawl and the verdict)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from train_smoke.canary_shards import build_canary_shards

ROOT = Path(__file__).resolve().parents[1]
EXACT_PIPELINE = ("pipeline", "pipeline.config", "pipeline.core", "pipeline.core.files", "pipeline.canaries")
ALLOWED_PIPELINE = (*EXACT_PIPELINE, "pipeline.canaries")  # the last one with its submodules

RUNNER = textwrap.dedent("""
    import importlib.abc, runpy, sys

    BLOCKED = ("apache_beam", "webdataset")
    ALLOWED = {allowed!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            pipeline_ok = name.startswith(ALLOWED[-1] + ".") or name in ALLOWED
            if top in BLOCKED or (top == "pipeline" and not pipeline_ok):
                raise ImportError(f"{{name}} is not installed on the GPU machine")
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = ["train_smoke", *{argv!r}]
    try:
        runpy.run_module("train_smoke", run_name="__main__")
    finally:
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "apache_beam", "webdataset"))
        print("LOADED", ",".join(loaded), file=sys.stderr)
""")


def test_python_m_train_smoke_needs_neither_beam_nor_the_pipeline(tmp_path):
    shards = build_canary_shards(str(tmp_path / "shards"), n_docs=40, classes=("circle", "ring"),
                                 image_size=32, seq_len=48)
    out = tmp_path / "out"
    argv = [shards, "--output", str(out), "--profile", "tiny", "--quiet", "--set", "smoke.train.steps=3",
            "--set", "smoke.train.control_run=false", "--set", "smoke.verdict.bootstrap_samples=50"]
    code = RUNNER.format(allowed=ALLOWED_PIPELINE, argv=argv)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    loaded = result.stderr.rsplit("LOADED", 1)[-1].strip().split(",")
    assert not [m for m in loaded if m.startswith(("apache_beam", "webdataset"))], loaded
    canaries = {m for m in loaded if m.startswith("pipeline.canaries.")}
    assert canaries == {"pipeline.canaries.shapes"} and set(loaded) <= {*EXACT_PIPELINE, *canaries}
    # Three steps teach nothing: the canary events are wrong, so the verdict fails (exit 1), with a full report.
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads((out / "smoke_report.json").read_text())
    assert report["verdict"]["status"] == "fail"
    assert report["verdict"]["undecodable_samples"] == 0 and "0 of " in report["verdict"]["summary"]
    assert "canary_wrong_events[phi]" in report["verdict"]["failed"]
    assert (out / "plots" / "overview.png").exists() and (out / "smoke_timing.json").exists()
