"""The whole config as one typed section: each top-level section of pipeline/defaults.yaml and its dataclass.

`load_config` (defaults ← user YAML ← overrides, `pipeline.config.merge_config`) validates every loaded config
against it, so every command refuses a wrong type, an out-of-range number or an unknown choice anywhere in the
config before it runs, not only in the sections it reads. It lives here, above every stage's module, and not in
`pipeline.config`, which those modules import for their `Section` base.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from filters.image_nodes import ImageNodeSettings
from filters.images import ImageFilterSettings
from pipeline.canaries.settings import CanarySettings
from pipeline.config import Config, Section, merge_config, table_paths, validate_section
from pipeline.decontaminate import DecontaminateSettings
from pipeline.dedup import DedupSettings
from pipeline.export.writer import ExportSettings
from pipeline.extract.settings import ExtractSettings
from pipeline.filter.transforms import FilterSettings
from pipeline.images.download import DownloadSettings
from pipeline.io.documents import OutputSettings
from pipeline.jobs.runner import RunnerSettings
from pipeline.read.crawl import ReadSettings
from pipeline.shards.settings import ShardSettings
from train_smoke.config import SmokeSection


@dataclass(frozen=True)
class M3wSettings(Section):
    """Every section of the config, typed."""

    read: ReadSettings
    extract: ExtractSettings
    image_nodes: ImageNodeSettings
    download: DownloadSettings
    image_filters: ImageFilterSettings
    filters: FilterSettings
    output: OutputSettings
    runner: RunnerSettings
    shards: ShardSettings
    export: ExportSettings
    dedup: DedupSettings
    decontaminate: DecontaminateSettings
    canaries: CanarySettings
    smoke: SmokeSection


TABLES = table_paths(M3wSettings)


def check_config(config: Config) -> Config:
    """`config` unchanged when every value has its key's type, range and choices (`M3wSettings`); else a
    ConfigError naming each bad key, its value and what is expected."""
    validate_section(M3wSettings, config, "")
    return config


def load_config(
    user_yaml: str | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults ← user YAML file (any Beam filesystem path) ← `extra` dict ← `key=value` overrides, checked whole;
    the config's tables (e.g. `filters.paragraph.by_language`) take keys of the user's own."""
    return check_config(merge_config(user_yaml, overrides, extra, tables=TABLES))
