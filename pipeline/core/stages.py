"""The stage registry: every stage m3w counts, in data-flow order, with the folder that owns it.

The report's stage order, the funnel, the build order and the check that nothing is lost between
stages are all derived from this one list. A stage's counters are named `<name>|<unit>|in/out/drop`;
`unit` is what flows through it (records, pages, documents), `label` names its output in the funnel.
Adding a stage means adding it here (tests/test_architecture.py fails on a stage name no entry registers).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    unit: str  # the unit of the document flow: its `in` must equal the previous stage's `out`
    folder: str  # the package under pipeline/ that owns it
    label: str = ""  # the funnel line for its `out` count ("" = not in the funnel)
    in_flow: bool = True  # False: counts a side unit (paragraphs, clusters), not the document flow
    job_reader: bool = False  # the reader of a standalone job (`m3w dedup`, `m3w export`): starts a flow


STAGES: tuple[Stage, ...] = (
    Stage("read", "records", "read", "HTML pages"),
    Stage("gate", "pages", "filter", "past the cheap gates"),
    Stage("extract", "pages", "extract", "documents extracted"),
    Stage("filter_paragraphs", "paragraphs", "filter", in_flow=False),
    Stage("filter", "documents", "filter", "after text filters"),
    Stage("dedup_read", "documents", "dedup", job_reader=True),
    Stage("dedup_url", "documents", "dedup"),
    Stage("dedup_exact", "documents", "dedup"),
    Stage("dedup_near", "documents", "dedup"),
    Stage("dedup_paragraphs", "documents", "dedup", "after document dedup"),
    Stage("dedup_image_urls", "documents", "dedup"),
    Stage("download", "documents", "images"),
    Stage("image_filter", "documents", "images", "after image download + filters"),
    Stage("dedup_images", "documents", "dedup", "after image dedup"),
    Stage("components", "edges", "dedup", in_flow=False),
    Stage("shard", "documents", "shards", "documents sharded"),
    Stage("export_read", "documents", "export", job_reader=True),
    Stage("export_mmc4", "documents", "export"),
    Stage("export_pairs", "documents", "export"),
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


def funnel() -> list[tuple[str, str, str, str]]:
    """(label, stage, unit, kind) lines of the report's funnel, from the registry's labels."""
    lines = [("records read", "read", "records", "in")]
    lines += [(s.label, s.name, s.unit, "out") for s in STAGES if s.label]
    return [*lines, ("sequences written", "shard", "sequences", "out")]


def is_registered(counter: str) -> bool:
    """Whether a counter name (`stage|unit|kind...`) names a registered stage."""
    return counter.split("|", 1)[0] in BY_NAME
