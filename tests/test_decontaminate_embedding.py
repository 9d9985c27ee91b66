"""Decontamination's optional open_clip embedding on the real open_clip (issue 26): a local checkpoint, as a
weights file with its architecture or as an OpenCLIP folder, finds copies of benchmark pictures in the stage,
and a checkpoint the workers could not load is refused before anything runs.

open_clip needs torchvision, which has no build for m3w's CPU torch 2.13.0 on PyPI, so the real path runs in
the interop venv (tests/interop/make_venv.sh: torch, torchvision and open_clip_torch for OpenFlamingo), through
tests/interop/decontaminate_embedding_check.py; the assertions are here. m3w's own venv has no open_clip: its
refusals are tested directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.decontaminate.transforms import DecontaminateSettings, check_benchmarks
from pipeline.settings import load_config

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "tests" / "interop"
MIN_SIMILARITY = 0.999  # as the check script sets it


def settings_with(tmp_path: Path, checkpoint: str) -> DecontaminateSettings:
    (tmp_path / "bench.jpg").write_bytes(b"a benchmark picture: only its name is read before the run")
    config = load_config(overrides=[f"decontaminate.images=['{tmp_path}/*.jpg']",
                                    f"decontaminate.embedding.checkpoint={checkpoint}"])
    return DecontaminateSettings.from_config(config["decontaminate"], "decontaminate")


def test_an_embedding_without_open_clip_is_refused_before_anything_runs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # importing it raises ImportError
    with pytest.raises(ConfigError, match=r"checkpoint needs the open_clip_torch package \(pip install"):
        check_benchmarks(settings_with(tmp_path, f"{tmp_path}/clip.pt"))


def test_an_open_clip_that_does_not_import_is_refused_with_the_reason(monkeypatch, tmp_path):
    """What PyPI's torchvision does beside a CPU torch: `import open_clip` raises a RuntimeError."""
    (tmp_path / "site" / "open_clip").mkdir(parents=True)
    (tmp_path / "site" / "open_clip" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.delitem(sys.modules, "open_clip", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    import torch

    with pytest.raises(ConfigError) as refused:
        check_benchmarks(settings_with(tmp_path, f"{tmp_path}/clip.pt"))
    assert str(refused.value) == (
        "decontaminate.embedding.checkpoint: open_clip_torch is installed but does not import (RuntimeError: "
        "operator torchvision::nms does not exist); torchvision must be the build made for this torch "
        f"({torch.__version__}): docs/decontaminate.md")


# ------------------------------------------------------------------------------------- the real open_clip


@pytest.fixture(scope="module")
def real_open_clip(tmp_path_factory) -> tuple[Path, dict]:
    """(work folder, result.json) of the check script, run once by the interop venv's interpreter."""
    made = subprocess.run(["bash", str(INTEROP / "make_venv.sh")], check=True, stdout=subprocess.PIPE, text=True)
    python = Path(made.stdout.strip().splitlines()[-1]) / "bin" / "python"
    work = tmp_path_factory.mktemp("embedding")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run([str(python), str(INTEROP / "decontaminate_embedding_check.py"), str(work),
                    sysconfig.get_paths()["purelib"]], check=True, env=env, cwd=ROOT, timeout=300)
    return work, json.loads((work / "result.json").read_text())


@pytest.mark.slow
def test_copies_are_found_by_their_embedding_and_unrelated_photographs_are_not(real_open_clip):
    _, result = real_open_clip
    assert result["dimensions"] == [3, 32] and result["unit_length"]
    assert result["forms_agree"] < 1e-6  # the weights file with its architecture = the folder with its config
    benchmark = ("astronaut", "coffee", "chelsea")
    for item, name in enumerate(benchmark):
        assert result["matches"][f"{name} exact"] == [item, 1.0]
        assert result["matches"][f"{name} resized 90% q70"][0] == item
        assert result["best"][f"{name} resized 90% q70"] >= MIN_SIMILARITY
    unrelated = {query: best for query, best in result["best"].items() if query.endswith("unrelated")}
    assert len(unrelated) == 7 and all(result["matches"][query] is None for query in unrelated)
    assert max(unrelated.values()) < MIN_SIMILARITY  # random weights: close (0.99) but below the threshold


@pytest.mark.slow
def test_a_checkpoint_the_workers_could_not_load_is_refused_in_one_line(real_open_clip):
    work, result = real_open_clip
    key = "decontaminate.embedding"
    assert result["refusals"] == {
        "missing file": f"FileNotFoundError: {key}.checkpoint: no file or folder {work}/missing.bin",
        "no architecture": f"ConfigError: {key}.checkpoint needs {key}.open_clip_arch (the checkpoint's "
                           "architecture, e.g. ViT-B-32), or a checkpoint folder with its open_clip_config.json",
        "unknown architecture": f"ConfigError: {key}.open_clip_arch: open_clip has no architecture 'ViT-Q-99' "
                                "(open_clip.list_models() lists them)",
        "weights that do not fit": result["refusals"]["weights that do not fit"],
        "folder and architecture": f"ConfigError: {key}.open_clip_arch: set it to null for a checkpoint folder: "
                                   "its open_clip_config.json names the architecture",
        "folder without config": f"FileNotFoundError: {key}.checkpoint: the folder {work}/not-a-checkpoint has "
                                 "no open_clip_config.json (an open_clip checkpoint folder holds it beside the "
                                 "weights)"}
    assert result["refusals"]["weights that do not fit"].startswith(
        f"ConfigError: {key}: open_clip cannot load {work}/tiny-clip/open_clip_pytorch_model.bin as "
        "m3w-tiny-ViT-wider: RuntimeError: Error(s) in loading state_dict for CLIP: size mismatch for visual.")
    assert result["refused_code"] == 2 and not result["refused_output_written"]
    assert result["refused_stderr"] == "m3w: " + result["refusals"]["no architecture"].removeprefix("ConfigError: ")


@pytest.mark.slow
def test_the_stage_removes_a_copy_only_the_embedding_finds_and_audits_its_similarity(real_open_clip):
    """The hashes are made exact (distance 0, no crops): the resized copy of the astronaut is left to the
    embedding, the exact coffee is the hashes'; the clock and the retina (0.99 from the coffee) stay."""
    work, result = real_open_clip
    assert result["code"] == 0
    stage = json.loads((work / "out" / "report.json").read_text())["stages"]["decontaminate"]
    assert stage["images"]["dropped"] == {"contaminated": 2} and stage["images"]["out"] == 2
    assert stage["documents"]["dropped"] == {"no_images": 2}
    assert stage["benchmark_pictures"]["info"] == {"indexed": 3}
    lines = [json.loads(line) for line in (work / "out" / "contamination.jsonl").read_text().splitlines()]
    found = sorted((r["doc_id"][-1], Path(r["file"]).name, r["view"], r.get("similarity")) for r in lines)
    assert found == [("0", "astronaut.jpg", "embedding", 1.0), ("1", "coffee.jpg", "as shown", None)]


@pytest.mark.slow
def test_the_benchmark_runs_the_embedding_method_on_a_checkpoint_folder(real_open_clip):
    work, result = real_open_clip
    assert result["benchmark_found"] == [2, None]  # chelsea's resized copy; the clock is no copy
    assert result["benchmark_name"] == f"open_clip tiny-clip embedding (cosine >= {MIN_SIMILARITY})"
    load, search = result["benchmark_note"].split("\n")
    assert load.startswith("open_clip tiny-clip: checkpoint loaded in ") and "(batches of 32)" in load
    assert search.startswith("open_clip embedding search against 1,000 benchmark pictures (32 floats each, 0 MB): ")
