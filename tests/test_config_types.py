"""Typed config: every value is checked against its key's type, range and choices when the config loads, by every
command, before anything runs (pipeline/config.py, pipeline/settings.py). Nothing is coerced: a quoted '"false"'
is no boolean, '"256"' no integer; only an integer is taken where a float is expected."""

from __future__ import annotations

import argparse
import copy
import types
import typing
from typing import Annotated, Any, Literal, Union

import pytest

from pipeline.cli import build_parser, main
from pipeline.config import ConfigError, load_defaults, load_yaml
from pipeline.filter.transforms import FilterSettings
from pipeline.settings import M3wSettings, check_config, load_config
from train_smoke.config import resolve_config, smoke_settings

DEFAULTS = load_defaults()
# Every command that takes `--set`: each must refuse a mistyped value before it runs.
CONFIGURED_COMMANDS = {"build", "extract", "filter", "calibrate", "dedup", "decontaminate", "download", "shard",
                       "export", "smoke", "demo"}


def leaves(tree: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf key of a config mapping (a list or a scalar is a leaf), the smoke profiles' keys included."""
    out = []
    for key, value in tree.items():
        out += leaves(value, (*path, key)) if isinstance(value, dict) else [(*path, key)]
    return out


def declared_type(path: tuple[str, ...]) -> Any:
    """The annotation of a leaf key in the typed config; a smoke profile's key has the smoke section's type."""
    if path[:2] == ("smoke", "profiles"):
        path = ("smoke", *path[3:])
    section: Any = M3wSettings
    for key in path[:-1]:
        # A table (`dict[str, <a section>]`, e.g. cut-offs by language): any key, each entry that section.
        section = typing.get_args(section)[1] if typing.get_origin(section) is dict else \
            typing.get_type_hints(section)[key]
    return typing.get_type_hints(section, include_extras=True)[path[-1]]


def accepted_types(annotation: Any) -> set[type]:
    """The plain types an annotation takes: Annotated, Optional and unions unwrapped, a Literal as its values'."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return accepted_types(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(accepted_types(member) for member in typing.get_args(annotation)))
    if origin is Literal:
        return {type(choice) for choice in typing.get_args(annotation)}
    return {origin or annotation}


def wrong_value(annotation: Any) -> Any:
    """A YAML value of the wrong type for `annotation`: a quoted string where a boolean or number belongs, a
    number where a string (or a choice of strings) belongs, a string where a list or mapping belongs."""
    accepted = accepted_types(annotation)
    if bool in accepted:
        return "false"
    if int in accepted:
        return "256"
    if float in accepted:
        return "0.5"
    if str in accepted:
        return 256
    assert accepted & {list, dict}, annotation
    return "x"


def with_value(path: tuple[str, ...] | str, value: Any) -> dict:
    """The defaults with one key set to `value` (as a YAML file or `--set` would set it)."""
    path = tuple(path.split(".")) if isinstance(path, str) else path
    config = copy.deepcopy(DEFAULTS)
    section = config
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    return config


def refusal(path: str, value: Any) -> str:
    with pytest.raises(ConfigError) as error:
        check_config(with_value(path, value))
    return str(error.value)


LEAVES = leaves(DEFAULTS)


def test_the_defaults_themselves_are_valid():
    assert check_config(copy.deepcopy(DEFAULTS)) == DEFAULTS
    assert len(LEAVES) > 300 and {path[0] for path in LEAVES} == set(DEFAULTS)


@pytest.mark.parametrize("path", LEAVES, ids=[".".join(path) for path in LEAVES])
def test_a_wrong_type_is_refused_naming_the_key_and_the_value(path):
    value = wrong_value(declared_type(path))
    message = refusal(".".join(path), value)
    assert f"config key '{'.'.join(path)}': expected " in message
    assert f"got {value!r}" in message


@pytest.mark.parametrize("name", sorted(CONFIGURED_COMMANDS))
@pytest.mark.parametrize(("override", "key", "expected"), [
    ('download.allow_loopback="false"', "download.allow_loopback", "expected a boolean (true or false); got 'false'"),
    ('shards.seq_len="256"', "shards.seq_len", "expected an integer; got '256'"),
], ids=["bool", "int"])
def test_every_command_refuses_a_quoted_value_before_it_runs(name, override, key, expected, tmp_path, capsys):
    parser = subcommand_parsers()[name]
    code = main([*required_arguments(name, parser, tmp_path), "--set", override])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"config key '{key}': {expected}" in err
    assert "without quotes" in err
    assert list(tmp_path.iterdir()) == []  # nothing ran: no output, no work folder, no sample crawl


def test_every_command_that_takes_set_is_covered():
    assert {name for name, parser in subcommand_parsers().items() if "--set" in parser._option_string_actions} \
        == CONFIGURED_COMMANDS


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()[0]
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def required_arguments(name: str, parser: argparse.ArgumentParser, tmp_path) -> list[str]:
    """`name` with every argument it requires: a choice's first value, else a path under `tmp_path` that does not
    exist (nothing may read or create it: the config is refused first); `--output` always, also where optional."""
    argv = [name]
    for action in parser._actions:
        positional = not action.option_strings and action.nargs not in ("?", "*")
        if not (action.required or positional or "--output" in action.option_strings):
            continue
        value = next(iter(action.choices)) if action.choices else str(tmp_path / f"missing-{action.dest}")
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("filters.language.threshold", 1.5, "at most 1.0"),
    ("filters.language.threshold", -0.1, "at least 0.0"),
    ("shards.max_images", 0, "at least 1"),
    ("shards.max_images", 256, "at most 255"),
    ("shards.seq_len", 1, "at least 2"),
    ("download.encode_quality", 101, "at most 100"),
    ("download.urls_per_shard", 0, "more than 0"),
    ("download.retries", -1, "at least 0"),
    ("runner.circuit_breaker.max_failure_share", 0, "more than 0.0"),
    ("dedup.images.hash_size", 9, "at most 8"),
    ("dedup.near.ngram", 65, "at most 64"),
    ("smoke.data.eval_fraction", 1.0, "less than 1.0"),
    ("smoke.verdict.confidence", 0.4, "at least 0.5"),
    ("shards.image_size", [320, 320, 3], "an integer or a list of at most 2 items"),
])
def test_a_number_out_of_its_range_is_refused(path, value, expected):
    assert refusal(path, value) == f"config key '{path}': expected {expected}; got {value!r}"


def test_a_list_item_out_of_range_is_named_by_its_position():
    assert refusal("filters.document.gopher_repetition.top_n_grams", [[2, 0.2], [3, 1.2]]) == \
        "config key 'filters.document.gopher_repetition.top_n_grams[1][1]': expected at most 1.0; got 1.2"


@pytest.mark.parametrize(("path", "inside"), [
    ("filters.language.threshold", [0.0, 1.0]),
    ("shards.max_images", [1, 255]),
    ("shards.seq_len", [2]),
    ("download.encode_quality", [0, 100]),
    ("download.retries", [0]),
    ("runner.circuit_breaker.max_failure_share", [1.0]),
    ("dedup.images.hash_size", [2, 8]),
    ("smoke.verdict.confidence", [0.5, 0.99]),
    ("shards.image_size", [224, [224, 320]]),
])
def test_the_ends_of_each_range_are_accepted(path, inside):
    for value in inside:
        check_config(with_value(path, value))


@pytest.mark.parametrize(("path", "value", "choices"), [
    ("download.resize_mode", "squash", "'no', 'keep_ratio', 'keep_ratio_largest', 'center_crop' or 'border'"),
    ("download.encode_format", "gif", "'jpg', 'png' or 'webp'"),
    ("shards.resize_mode", "squash", "'center_crop', 'pad' or 'stretch'"),
    ("shards.image_format", "gif", "'jpeg' or 'webp'"),
    ("shards.docs_parquet_images", "maybe", "'bytes', 'references' or 'none'"),
    ("runner.direct_running_mode", "multi_processes", "'in_memory', 'multi_processing' or 'multi_threading'"),
    ("filters.document.tokenizer", "spacy", "'fast' or 'datatrove'"),
    ("output.parquet_compression", "lzma", "'none', 'snappy', 'gzip', 'brotli', 'lz4' or 'zstd'"),
    ("smoke.device", "gpu", "'auto', 'cpu' or 'cuda'"),
    ("smoke.model.vision.kind", "resnet", "'conv', 'vit' or 'open_clip'"),
])
def test_an_unknown_choice_is_refused_with_the_choices(path, value, choices):
    assert refusal(path, value) == f"config key '{path}': expected one of {choices}; got {value!r}"


def test_a_list_of_choices_names_the_bad_item():
    assert refusal("export.pairs.sources", ["caption", "title"]) == \
        "config key 'export.pairs.sources[1]': expected one of 'caption', 'alt' or 'adjacent'; got 'title'"


def test_an_integer_is_a_float_but_no_float_or_boolean_is_an_integer():
    config = load_config(overrides=["filters.language.threshold=1"])
    threshold = FilterSettings.from_config(config["filters"], "filters").language.threshold
    assert threshold == 1.0 and isinstance(threshold, float)
    assert "expected an integer; got 256.0" in refusal("shards.seq_len", 256.0)
    assert "expected an integer; got True" in refusal("shards.seq_len", True)
    assert "expected a number; got True" in refusal("filters.language.threshold", True)
    assert "expected a boolean (true or false); got 1" in refusal("download.allow_loopback", 1)


def test_numbers_are_read_as_yaml_1_2_writes_them_and_a_quoted_one_stays_a_string():
    for spelling, value in [("1e-3", 0.001), ("5E+2", 500.0), ("2.5e-1", 0.25), ("1.0e-3", 0.001), (".5", 0.5)]:
        lr = load_config(overrides=[f"smoke.train.lr={spelling}"])["smoke"]["train"]["lr"]
        assert lr == value and isinstance(lr, float), spelling
    assert load_config(overrides=["shards.seq_len=256"])["shards"]["seq_len"] == 256  # integers stay integers
    with pytest.raises(ConfigError, match=r"'smoke.train.lr': expected a number; got '1e-3' \(a string is never"):
        load_config(overrides=["smoke.train.lr='1e-3'"])
    assert load_yaml("version: 1.2.3\nname: 1e3x")["version"] == "1.2.3"  # not numbers at all: strings


def test_every_bad_key_is_named_at_once():
    config = with_value("shards.seq_len", "256")
    config["download"]["allow_loopback"] = "false"
    with pytest.raises(ConfigError) as error:
        check_config(config)
    assert str(error.value).splitlines() == [
        "config key 'download.allow_loopback': expected a boolean (true or false); got 'false' (a string is never "
        "read as a boolean or a number: write the value without quotes)",
        "config key 'shards.seq_len': expected an integer; got '256' (a string is never read as a boolean or a "
        "number: write the value without quotes)"]


def test_smoke_profiles_are_checked_laid_over_the_base():
    assert "config key 'smoke.profiles.gpu.train.steps': expected an integer; got '5'" in \
        refusal("smoke.profiles.gpu.train.steps", "5")
    assert "config key 'smoke.profiles.tiny.model.lm_heads': expected more than 0; got 0" in \
        refusal("smoke.profiles.tiny.model.lm_heads", 0)
    assert refusal("smoke.profile", "huge") == \
        "config key 'smoke.profile': expected one of the profiles ['gpu', 'tiny']; got 'huge'"
    assert "smoke.model: d_model 100 must split into 4 lm heads of even size" in refusal("smoke.model.d_model", 100)


def test_the_standalone_trainer_checks_its_section_with_the_profile_and_the_user_on_top():
    with pytest.raises(ConfigError, match=r"config key 'smoke.data.cache': expected a boolean \(true or false\); "
                                          r"got 'false'"):
        resolve_config(None, ['smoke.data.cache="false"'], profile="tiny")
    with pytest.raises(ConfigError, match="freeze_lm needs lm_pretrain_steps > 0"):
        resolve_config(None, ["smoke.train.freeze_lm=true"], profile="gpu")
    settings = smoke_settings(resolve_config(None, ["smoke.train.steps=7"], profile="tiny"))
    assert settings.train.steps == 7 and settings.device == "cpu" and settings.model.d_model == 64
    assert settings.train.riding_canary_steps is None  # the steps a user asks for, riding canaries or not
    assert smoke_settings(resolve_config(None, [], profile="tiny")).train.riding_canary_steps == 1000
    both = smoke_settings(resolve_config(None, ["smoke.train.steps=7", "smoke.train.riding_canary_steps=9"], "tiny"))
    assert (both.train.steps, both.train.riding_canary_steps) == (7, 9)
