"""Counting what every stage keeps and drops, and the run report built from those counts.

Every stage counts, per unit (documents, images, paragraphs...), how many came in, how many went
out and how many were dropped for each reason, as Beam metrics named `stage|unit|kind[|reason]`.
The run report is built from those metrics and checks `in = out + Σ drops` for every stage.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from pipeline.core import progress
from pipeline.core.counts import SEP, stage_table  # noqa: F401 - re-exported
from pipeline.core.stages import document_flow, flow_of, names, product, running  # noqa: F401 - re-exported

NAMESPACE = "m3w"
DROPPED_TAG = "dropped"


@dataclass(frozen=True)
class Drop:
    """The verdict of a stage that does not keep its input; `reason` is a short stable name."""

    reason: str
    detail: str = ""


GROUP_SEP = ":"
_GROUP: contextvars.ContextVar[str] = contextvars.ContextVar("m3w_counter_group", default="")


@contextlib.contextmanager
def counted_apart(group: str) -> Iterator[None]:
    """Stage counters made inside this block count under `<group>:<stage>|...`: the same stages applied to a
    group of items that a run reports apart (the alignment canaries of `m3w build`), with no stage's code
    knowing. Counters are made where transforms and DoFns are built, so build them inside the block."""
    token = _GROUP.set(group)
    try:
        yield
    finally:
        _GROUP.reset(token)


def split_group(counts: dict[str, int], group: str) -> tuple[dict[str, int], dict[str, int]]:
    """(the counters outside `group`, those of `group` with their prefix removed)."""
    prefix = group + GROUP_SEP
    inside = {name[len(prefix):]: value for name, value in counts.items() if name.startswith(prefix)}
    return {name: value for name, value in counts.items() if not name.startswith(prefix)}, inside


class StageCounters:
    """Lazily created Beam counters for one stage; safe to build in `__init__` and pickle."""

    def __init__(self, stage: str):
        self.stage = stage
        group = _GROUP.get()
        self.prefix = group + GROUP_SEP if group else ""  # `counted_apart` at construction
        self._cache: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage, "prefix": self.prefix, "_cache": {}}

    def _inc(self, name: str, n: int) -> None:
        name = self.prefix + name
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
    runner losing a bundle, a sink dropping rows); this check does. `flow` lists the stages the run ran
    (`running` leaves out those the config switches off): one of them without counters received nothing,
    which after a stage that emitted items is a loss like any other.
    """
    links, problems = list(flow), []
    for (before, unit_before), (after, unit_after) in zip(links, links[1:]):
        out = _entry(table, before, unit_before)["out"]
        received = table.get(after, {}).get(unit_after)
        if received is None and out:
            problems.append(f"{before}/{unit_before} out={out} but {after}/{unit_after} counted nothing")
        elif received is not None and received["in"] != out:
            problems.append(f"{before}/{unit_before} out={out} but {after}/{unit_after} in={received['in']}")
    return problems


NO_METRICS = ("the runner returned no m3w metrics, so nothing shows that every item was counted "
              "(an input without any item reports none either)")


def unverified(counts: dict[str, int]) -> str | None:
    """Why a run's counts cannot be checked, or None: a runner that returns no metrics proves nothing."""
    return None if counts else NO_METRICS


def empty_result(table: dict[str, Any], flow: list[tuple[str, str]], top: int = 3) -> str | None:
    """Why a run that read items wrote none, or None when it wrote some or read nothing.

    Names every stage and unit that dropped all it received, in flow order, up to the stage where the flow
    reached zero, each with its `top` drop reasons: "the run wrote nothing from 50 records read: download
    dropped every image (unsafe_address 118) and every document (no_images 36)".
    """
    if not flow:
        return None
    (first, unit_in), (last, unit_out) = flow[0], product(flow)
    read = _entry(table, first, unit_in)["in"]
    if not read or _entry(table, last, unit_out)["out"]:
        return None
    emptied = next((name for name, unit in flow if _entry(table, name, unit)["in"] and
                    not _entry(table, name, unit)["out"]), last)
    causes = []
    order = {name: i for i, name in enumerate(names())}
    for stage, units in sorted(table.items(), key=lambda kv: order.get(kv[0], len(order))):
        flow_unit = dict(flow).get(stage)  # told last: the other units (images) emptied it
        every = [f"every {_one(unit)} ({_reasons(entry['dropped'], top)})"
                 for unit, entry in sorted(units.items(), key=lambda kv: kv[0] == flow_unit)
                 if entry["in"] and not entry["out"]]
        if every:
            causes.append(f"{stage} dropped {' and '.join(every)}")
        if stage == emptied:
            break
    why = " → ".join(causes) or "no stage dropped them all: they were lost between stages"
    return f"the run wrote nothing from {read} {unit_in} read: {why}"


def _entry(table: dict[str, Any], stage: str, unit: str) -> dict[str, Any]:
    return table.get(stage, {}).get(unit, {"in": 0, "out": 0, "dropped": {}})


def _one(unit: str) -> str:
    """`documents` → `document`: every unit name is a plural with `s`."""
    return unit.removesuffix("s")


def _reasons(dropped: dict[str, int], top: int) -> str:
    ranked = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{reason} {n}" for reason, n in ranked[:top])
    more = f", {len(ranked) - top} more reasons" if len(ranked) > top else ""
    return (shown + more) or "no drop counted"
