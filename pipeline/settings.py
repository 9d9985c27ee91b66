"""The whole config as one typed section: each top-level section of pipeline/defaults.yaml and its dataclass.

`pipeline.config.check_config` validates every loaded config against it, so every command refuses a wrong type,
an out-of-range number or an unknown choice anywhere in the config before it runs, not only in the sections it
reads. Imported only there: it pulls in every stage's module.
"""

from __future__ import annotations

from dataclasses import dataclass

from filters.image_nodes import ImageNodeSettings
from filters.images import ImageFilterSettings
from pipeline.config import Section
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
    smoke: SmokeSection
