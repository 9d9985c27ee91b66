"""The stage registry: every stage m3w counts, in data-flow order, with the folder that owns it.

The report's stage order, the funnel, the build order and the check that nothing is lost between
stages are all derived from this one list. A stage's counters are named `<name>|<unit>|in/out/drop`;
`unit` is what flows through it (records, pages, documents), `label` names its output in the funnel.
A stage a config key can switch off names it (`switch`): the continuity check expects counts only from
the stages a run runs. Adding a stage means adding it here (tests/test_architecture.py fails on a stage
name no entry registers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    unit: str  # the unit of the document flow: its `in` must equal the previous stage's `out`
    folder: str  # the package under pipeline/ that owns it
    label: str = ""  # the funnel line for its `out` count ("" = not in the funnel)
    in_flow: bool = True  # False: counts a side unit (paragraphs, clusters), not the document flow
    job_reader: bool = False  # the reader of a standalone job (`m3w dedup`, `m3w export`): starts a flow
    switch: str = ""  # the config key (dotted) that turns it off: then it passes its input on uncounted
    writes: str = ""  # the unit whose `out` is what it writes, when not `unit` (the shards' sequences)


STAGES: tuple[Stage, ...] = (
    Stage("read", "records", "read", "HTML pages"),
    Stage("gate", "pages", "filter", "past the cheap gates"),
    Stage("extract", "pages", "extract", "documents extracted"),
    Stage("filter_paragraphs", "paragraphs", "filter", in_flow=False),
    Stage("filter", "documents", "filter", "after text filters"),
    Stage("dedup_read", "documents", "dedup", job_reader=True),
    Stage("dedup_url", "documents", "dedup", switch="dedup.url.enabled"),
    Stage("dedup_exact", "documents", "dedup", switch="dedup.exact.enabled"),
    Stage("dedup_near", "documents", "dedup", switch="dedup.near.enabled"),
    Stage("dedup_paragraphs", "documents", "dedup", "after document dedup", switch="dedup.paragraphs.enabled"),
    Stage("dedup_image_urls", "documents", "dedup", switch="dedup.image_urls.enabled"),
    Stage("download", "documents", "images"),
    Stage("image_filter", "documents", "images", "after image download + filters"),
    Stage("decontaminate", "documents", "decontaminate"),
    Stage("dedup_images", "documents", "dedup", "after image dedup", switch="dedup.images.enabled"),
    Stage("components", "edges", "dedup", in_flow=False),
    Stage("shard", "documents", "shards", "documents sharded", writes="sequences"),
    Stage("export_read", "documents", "export", job_reader=True),
    Stage("export_mmc4", "documents", "export", writes="samples"),
    Stage("export_pairs", "documents", "export", writes="samples"),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def names(folder: str | None = None) -> list[str]:
    """Stage names in flow order, optionally only those one folder owns."""
    return [s.name for s in STAGES if folder is None or s.folder == folder]


def document_flow() -> list[tuple[str, str]]:
    """(stage, unit) of every stage on the main document flow, in order (job readers start their own)."""
    return [(s.name, s.unit) for s in STAGES if s.in_flow and not s.job_reader and s.folder != "export"]


def flow_of(stage_names: list[str]) -> list[tuple[str, str]]:
    """The links one job runs, in the job's order: its stages on the flow, its own reader included."""
    return [(name, BY_NAME[name].unit) for name in stage_names
            if name in BY_NAME and BY_NAME[name].in_flow]


def switched_on(name: str, config: Mapping[str, Any]) -> bool:
    """Whether `config` runs stage `name`: a switched-off stage counts nothing, and nothing is missing from it."""
    switch = BY_NAME[name].switch if name in BY_NAME else ""
    if not switch:
        return True
    value: Any = config
    for key in switch.split("."):
        value = value[key]
    return bool(value)


def running(flow: list[tuple[str, str]], config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The links of `flow` that `config` runs: the stages the continuity check expects counts from."""
    return [(name, unit) for name, unit in flow if switched_on(name, config)]


def product(flow: list[tuple[str, str]]) -> tuple[str, str]:
    """(stage, unit) whose `out` is what a run over `flow` writes: its last stage's output."""
    name, unit = flow[-1]
    return name, (BY_NAME[name].writes if name in BY_NAME else "") or unit


def funnel() -> list[tuple[str, str, str, str]]:
    """(label, stage, unit, kind) lines of the report's funnel, from the registry's labels."""
    lines = [("records read", "read", "records", "in")]
    lines += [(s.label, s.name, s.unit, "out") for s in STAGES if s.label]
    return [*lines, ("sequences written", "shard", "sequences", "out")]


def is_registered(counter: str) -> bool:
    """Whether a counter name (`stage|unit|kind...`) names a registered stage."""
    return counter.split("|", 1)[0] in BY_NAME
