"""Typed config sections at the edge: each section class has exactly its defaults.yaml keys, and the stage
units take their sections, never the whole config dict."""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import typing
from pathlib import Path

import pytest

from pipeline.config import ConfigError, Section, load_defaults
from pipeline.dedup import DedupSettings
from pipeline.settings import M3wSettings

ROOT = Path(__file__).resolve().parents[1]
SECTIONS: dict[str, type[Section]] = typing.get_type_hints(M3wSettings)  # top-level key → its typed section
# Stage folders whose DoFns, PTransforms and rules take typed sections, never the whole config.
TYPED_FOLDERS = ("read", "extract", "filter", "dedup", "decontaminate", "images", "shards", "io", "export")


def as_yaml(values: dict) -> dict:
    """A section's values as YAML gives them (a typed [n, share] pair is a tuple, YAML's a list)."""
    return json.loads(json.dumps(values))


def test_the_typed_config_has_exactly_the_sections_of_the_defaults():
    assert sorted(SECTIONS) == sorted(load_defaults())


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_section_class_has_exactly_the_keys_of_its_section(name):
    section = load_defaults()[name]
    assert as_yaml(dataclasses.asdict(SECTIONS[name].from_config(section, name))) == section


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
