"""One config for every threshold: packaged defaults, deep-merged with a user YAML and `key=value` overrides."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import yaml

Config = dict[str, Any]


class ConfigError(ValueError):
    """A user config names a key the defaults do not have, or has the wrong shape."""


def load_defaults() -> Config:
    text = resources.files("pipeline").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _merge(base: Config, override: Mapping[str, Any], path: str = "") -> Config:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in out:
            raise ConfigError(f"unknown config key '{where}' (known here: {', '.join(sorted(out))})")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{where}' is a section; got {value!r}")
            out[key] = _merge(out[key], value, where + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> Config:
    """`a.b.c=value` → {'a': {'b': {'c': value}}}, the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    dotted, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    out: Config = {}
    cursor = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def load_config(
    user_yaml: str | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults ← user YAML file (any Beam filesystem path) ← `extra` dict ← `key=value` overrides."""
    config = load_defaults()
    if user_yaml:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(user_yaml) as handle:
            user = yaml.safe_load(io.TextIOWrapper(handle, encoding="utf-8")) or {}
        config = _merge(config, user)
    if extra:
        config = _merge(config, extra)
    for item in overrides:
        config = _merge(config, parse_override(item))
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config, sort_keys=True, allow_unicode=True)
