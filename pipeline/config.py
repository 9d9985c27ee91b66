"""One config for every threshold: packaged defaults, deep-merged with a user YAML and `key=value` overrides."""

from __future__ import annotations

import copy
import dataclasses
import io
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Self

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


@dataclasses.dataclass(frozen=True)
class Section:
    """A typed config section: a frozen dataclass whose fields are the section's keys, documented in
    defaults.yaml. Each unit (DoFn, PTransform, rule) takes only its own section, so what it depends on
    is visible in its signature; the jobs build the sections at the edge with `from_config`."""

    @classmethod
    def from_config(cls, section: Mapping[str, Any], where: str = "") -> Self:
        """The section's dict → this dataclass; a missing or unknown key is a ConfigError naming it.
        Fields typed as another Section are converted from their nested dicts the same way."""
        where = where or cls.__name__
        if not isinstance(section, Mapping):
            raise ConfigError(f"config section '{where}' must be a mapping, got {section!r}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown, missing = sorted(set(section) - set(fields)), sorted(set(fields) - set(section))
        if unknown or missing:
            raise ConfigError(f"config section '{where}': unknown keys {unknown}, missing keys {missing}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in section.items():
            kind = hints.get(name)
            if isinstance(kind, type) and issubclass(kind, Section):
                value = kind.from_config(value, f"{where}.{name}")
            values[name] = value
        return cls(**values)
