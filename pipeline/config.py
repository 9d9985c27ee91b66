"""One config for every threshold: packaged defaults, deep-merged with a user YAML and `key=value` overrides,
then checked whole against its typed sections before anything runs.

The check is pydantic v2 in strict mode on the sections' own frozen dataclasses: a value of the wrong type, a
number out of its range or an unknown choice is a ConfigError naming the key, the value and what is expected.
Nothing is coerced: a quoted '"false"' is no boolean and '"256"' no integer; only an integer is taken where a
float is expected. Numbers are read as YAML 1.2 writes them: `1e-3` is a float (PyYAML's YAML 1.1 reads it as
a string), while a quoted '"1e-3"' stays a string and is refused for a number.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import re
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from importlib import resources
from typing import Annotated, Any, Self

import yaml
from pydantic import ConfigDict, Field, GetCoreSchemaHandler, TypeAdapter, ValidationError
from pydantic_core import CoreSchema

Config = dict[str, Any]

# A share, fraction or probability: a float in [0, 1] (for counts and sizes the sections use pydantic's
# NonNegativeInt and PositiveInt, for other floats NonNegativeFloat and PositiveFloat).
Share = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax, so `1e-3` and `5E+2` are numbers as users expect."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
                 |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str | io.TextIOBase) -> Any:
    """YAML through `ConfigLoader` (safe, YAML 1.2 floats): every config text m3w reads goes through here."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


class ConfigError(ValueError):
    """A config names a key the defaults do not have, has the wrong shape, or a value of the wrong type or range."""


def load_defaults() -> Config:
    text = resources.files("pipeline").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return load_yaml(text)


def _merge(base: Config, override: Mapping[str, Any], path: str = "", tables: Collection[str] = ()) -> Config:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in out:
            if path[:-1] in tables:  # a table's keys are the user's: a new one is added (its section checks it)
                out[key] = copy.deepcopy(value)
                continue
            raise ConfigError(f"unknown config key '{where}' (known here: {', '.join(sorted(out))})")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{where}' is a section; got {value!r}")
            out[key] = _merge(out[key], value, where + ".", tables)
        else:
            out[key] = copy.deepcopy(value)
    return out


def table_paths(kind: type, prefix: str = "") -> frozenset[str]:
    """The dotted paths of a typed config's tables: fields typed `dict[str, <a Section>]` (e.g. cut-offs keyed by
    language), whose keys the user chooses, so that a key the defaults lack is added there instead of refused."""
    paths: set[str] = set()
    for name, annotation in typing.get_type_hints(kind).items():
        members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
            else (annotation,)
        for member in members:
            if typing.get_origin(member) is dict and dataclasses.is_dataclass(typing.get_args(member)[1]):
                paths.add(prefix + name)
            elif dataclasses.is_dataclass(member):
                paths |= table_paths(member, f"{prefix}{name}.")
    return frozenset(paths)


def parse_override(item: str) -> Config:
    """`a.b.c=value` → {'a': {'b': {'c': value}}}, the value parsed as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    dotted, raw = item.split("=", 1)
    value = load_yaml(raw) if raw.strip() else ""
    out: Config = {}
    cursor = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def merge_config(
    user_yaml: str | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
    tables: Collection[str] = (),
) -> Config:
    """Defaults ← user YAML file (any Beam filesystem path) ← `extra` dict ← `key=value` overrides, with every key
    known to the defaults (or new in one of the `tables`, `table_paths`) but the values not yet checked:
    `pipeline.settings.load_config` checks them whole; the standalone smoke trainer, which cannot import the
    pipeline's sections, checks its own section (train_smoke/config.py)."""
    config = load_defaults()
    if user_yaml:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(user_yaml) as handle:
            user = load_yaml(io.TextIOWrapper(handle, encoding="utf-8")) or {}
        config = _merge(config, user, tables=tables)
    if extra:
        config = _merge(config, extra, tables=tables)
    for item in overrides:
        config = _merge(config, parse_override(item), tables=tables)
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config, sort_keys=True, allow_unicode=True)


@dataclasses.dataclass(frozen=True)
class Section:
    """A typed config section: a frozen dataclass whose fields are the section's keys, documented in
    defaults.yaml, each annotated with its type, range (`Annotated[int, Field(ge=1)]`, `Share`) or choices
    (`Literal`). Each unit (DoFn, PTransform, rule) takes only its own section, so what it depends on is
    visible in its signature; the jobs build the sections at the edge with `from_config`."""

    # Strict: no str → bool/int/float, no float → int; the only conversion is int → float. Unknown keys refused.
    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type, handler: GetCoreSchemaHandler) -> CoreSchema:
        """Strict values, but a nested section is given as its YAML mapping (strict pydantic wants an instance)."""
        schema = handler(source)
        if schema.get("type") == "dataclass":
            schema["strict"] = False
        return schema

    @classmethod
    def from_config(cls, section: Mapping[str, Any], where: str = "") -> Self:
        """The section's dict → this dataclass, nested sections included; a missing or unknown key, a wrong type,
        an out-of-range number or an unknown choice is a ConfigError naming the key path under `where`."""
        return validate_section(cls, section, where or cls.__name__)


@functools.cache
def _adapter(kind: type) -> TypeAdapter:
    return TypeAdapter(kind)


def validate_section(kind: type[Section], data: Any, where: str) -> Any:
    try:
        return _adapter(kind).validate_python(data)
    except ValidationError as error:
        raise ConfigError(describe_errors(error, data, where)) from None


# What a pydantic error type expects, in the words of a YAML config.
_EXPECTED = {
    "bool_type": "a boolean (true or false)",
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping (a config section)",
    "none_required": "null",
}
_BOUNDS = {"ge": "at least {}", "gt": "more than {}", "le": "at most {}", "lt": "less than {}"}
_MISSING = {"missing", "missing_argument", "missing_keyword_only_argument"}
_UNKNOWN = {"unexpected_keyword_argument", "extra_forbidden", "unexpected_positional_argument"}


def describe_errors(error: ValidationError, data: Any, where: str) -> str:
    """One line per bad key of `data` (a section at path `where`): its full path, what is expected, the value."""
    sections: dict[str, tuple[list[str], list[str]]] = {}
    keys: dict[str, tuple[Any, list[str], set[str]]] = {}
    lines = []
    for item in error.errors(include_url=False):
        kind, loc = item["type"], item["loc"]
        if kind in _MISSING or kind in _UNKNOWN:
            unknown, missing = sections.setdefault(_join(where, _key_path(data, loc[:-1])), ([], []))
            (unknown if kind in _UNKNOWN else missing).append(str(loc[-1]))
        elif kind == "value_error" and isinstance(item.get("ctx", {}).get("error"), ConfigError):
            lines.append(str(item["ctx"]["error"]))  # a section's own check (e.g. smoke's), already worded
        else:
            value, expected, kinds = keys.setdefault(_join(where, _key_path(data, loc)), (item["input"], [], set()))
            wanted = _expected(kind, item)
            if wanted not in expected:
                expected.append(wanted)
            kinds.add(kind)
    for path, (unknown, missing) in sections.items():
        lines.append(f"config section '{path or '(top level)'}': unknown keys {sorted(unknown)}, "
                     f"missing keys {sorted(missing)}")
    for path, (value, expected, kinds) in keys.items():
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        lines.append(f"config key '{path}': expected {' or '.join(expected)}; got {shown}{_hint(value, kinds)}")
    return "\n".join(lines)


def _expected(kind: str, item: Any) -> str:
    ctx = item.get("ctx") or {}
    if kind == "literal_error":
        return f"one of {ctx['expected']}"
    if kind == "too_short":
        return f"a list of at least {ctx['min_length']} items"
    if kind == "too_long":
        return f"a list of at most {ctx['max_length']} items"
    for bound, words in _BOUNDS.items():
        if bound in ctx:
            return words.format(ctx[bound])
    if kind == "value_error":
        return f"a valid value ({ctx.get('error')})"
    return _EXPECTED.get(kind) or item["msg"].removeprefix("Input should be ")


def _hint(value: Any, kinds: set[str]) -> str:
    if not isinstance(value, str) or not kinds & {"bool_type", "int_type", "float_type"}:
        return ""
    return " (a string is never read as a boolean or a number: write the value without quotes)"


def _key_path(data: Any, loc: tuple[int | str, ...]) -> str:
    """The keys of `loc` that exist in `data`, dotted ([i] for list items): pydantic puts the member of a union
    that failed (e.g. 'int', 'list[int]') into the location too, and those are no keys."""
    path = ""
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data, path = data[part], _join(path, str(part))
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data, path = data[part], f"{path}[{part}]"
    return path


def _join(where: str, path: str) -> str:
    return f"{where}.{path}" if where and path else where or path
