"""Typed config sections at the edge: each section class has exactly its defaults.yaml keys, and the stage
units take their sections, never the whole config dict."""

from __future__ import annotations

import ast
import copy
import dataclasses
from pathlib import Path

import pytest

from pipeline.config import ConfigError, Section, load_defaults
from pipeline.core.failures import BreakerSettings
from pipeline.dedup import DedupSettings
from pipeline.export.writer import ExportSettings
from pipeline.extract.settings import ExtractSettings
from pipeline.images.download import DownloadSettings
from pipeline.io.documents import OutputSettings
from pipeline.jobs.runner import RunnerSettings
from pipeline.read.crawl import ReadSettings
from pipeline.shards.settings import ShardSettings

ROOT = Path(__file__).resolve().parents[1]
SECTIONS: list[tuple[type[Section], str]] = [
    (ReadSettings, "read"),
    (DedupSettings, "dedup"),
    (DownloadSettings, "download"),
    (ShardSettings, "shards"),
    (OutputSettings, "output"),
    (ExportSettings, "export"),
    (RunnerSettings, "runner"),
    (BreakerSettings, "runner.circuit_breaker"),
    (ExtractSettings, "extract"),
]
# Stage folders whose DoFns, PTransforms and rules take typed sections, never the whole config.
TYPED_FOLDERS = ("read", "extract", "filter", "dedup", "images", "shards", "io", "export")


def section_of(config: dict, path: str) -> dict:
    for key in path.split("."):
        config = config[key]
    return config


@pytest.mark.parametrize(("kind", "path"), SECTIONS, ids=[path for _, path in SECTIONS])
def test_each_section_class_has_exactly_the_keys_of_its_section(kind, path):
    section = section_of(load_defaults(), path)
    assert dataclasses.asdict(kind.from_config(section, path)) == section


def test_a_renamed_key_in_a_nested_section_names_both_sides():
    dedup = copy.deepcopy(load_defaults()["dedup"])
    dedup["near"]["row"] = dedup["near"].pop("rows")
    with pytest.raises(ConfigError, match=r"'dedup.near': unknown keys \['row'\], missing keys \['rows'\]"):
        DedupSettings.from_config(dedup, "dedup")


def test_stage_units_never_take_the_whole_config():
    """No function or method in the typed stage folders has a `config` or `cfg` parameter."""
    offenders = []
    for folder in TYPED_FOLDERS:
        for path in sorted((ROOT / "pipeline" / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names = {arg.arg for arg in [*node.args.args, *node.args.kwonlyargs]}
                    if names & {"config", "cfg"}:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert offenders == []
