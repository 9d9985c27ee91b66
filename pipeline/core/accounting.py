"""Counting what every stage keeps and drops, and the run report built from those counts.

Every stage counts, per unit (documents, images, paragraphs...), how many came in, how many went
out and how many were dropped for each reason, as Beam metrics named `stage|unit|kind[|reason]`.
The run report is built from those metrics and checks `in = out + Σ drops` for every stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from pipeline.core import progress
from pipeline.core.counts import SEP, stage_table  # noqa: F401 - re-exported
from pipeline.core.stages import document_flow, flow_of  # noqa: F401 - re-exported

NAMESPACE = "m3w"
DROPPED_TAG = "dropped"


@dataclass(frozen=True)
class Drop:
    """The verdict of a stage that does not keep its input; `reason` is a short stable name."""

    reason: str
    detail: str = ""


class StageCounters:
    """Lazily created Beam counters for one stage; safe to build in `__init__` and pickle."""

    def __init__(self, stage: str):
        self.stage = stage
        self._cache: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage, "_cache": {}}

    def _inc(self, name: str, n: int) -> None:
        counter = self._cache.get(name)
        if counter is None:
            counter = self._cache[name] = Metrics.counter(NAMESPACE, name)
        counter.inc(n)
        progress.count(name, n)

    def seen(self, unit: str, n: int = 1) -> None:
        if n:
            self._inc(SEP.join((self.stage, unit, "in")), n)

    def kept(self, unit: str, n: int = 1) -> None:
        if n:
            self._inc(SEP.join((self.stage, unit, "out")), n)

    def dropped(self, unit: str, reason: str, n: int = 1) -> None:
        if n:
            self._inc(SEP.join((self.stage, unit, "drop", reason)), n)

    def note(self, unit: str, name: str, n: int = 1) -> None:
        """An informational count that is neither in, out nor a drop (e.g. `decode_fallback`)."""
        if n:
            self._inc(SEP.join((self.stage, unit, "info", name)), n)


def _counter_value(counter: Any) -> tuple[int, str]:
    """A counter's committed value where the runner reports one, else its attempted value.

    Runners that retry bundles (Dataflow) count a retried bundle's increments again in the attempted
    value; only the committed value balances `in = out + Σ drops`.
    """
    try:
        committed = counter.committed
    except Exception:  # noqa: BLE001 - runners without committed metrics raise (UnsupportedError and others)
        committed = None
    if committed is not None:
        return int(committed), "committed"
    return int(counter.attempted or 0), "attempted"


def _m3w_counters(result: beam.runners.runner.PipelineResult) -> list[Any]:
    return result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]


def query_counts(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """All m3w counters of a finished pipeline as {name: value}, committed values where reported."""
    out: dict[str, int] = {}
    for counter in _m3w_counters(result):
        name = counter.key.metric.name
        out[name] = out.get(name, 0) + _counter_value(counter)[0]
    return out


def metric_kind(result: beam.runners.runner.PipelineResult) -> str:
    """Which values the balance check used: `committed`, `attempted` (may overcount retried bundles), `mixed`."""
    kinds = {_counter_value(counter)[1] for counter in _m3w_counters(result)}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


def unbalanced(table: dict[str, Any]) -> list[str]:
    """Stage/unit pairs where in ≠ out + Σ drops (each one is a bug: something vanished)."""
    return [f"{stage}/{unit}" for stage, units in table.items() for unit, e in units.items() if not e["balanced"]]


def broken_links(table: dict[str, Any], flow: Iterable[tuple[str, str]]) -> list[str]:
    """Items lost *between* stages: each stage's input must be the output of the stage before it in `flow`.

    Every stage balancing on its own does not prove nothing vanished on the way from one to the next (a
    runner losing a bundle, a sink dropping rows); this check does. Stages absent from `table` are skipped.
    """
    present = [(stage, unit) for stage, unit in flow if unit in table.get(stage, {})]
    problems = []
    for (before, unit_before), (after, unit_after) in zip(present, present[1:]):
        out, into = table[before][unit_before]["out"], table[after][unit_after]["in"]
        if out != into:
            problems.append(f"{before}/{unit_before} out={out} but {after}/{unit_after} in={into}")
    return problems
