"""Counter names (`stage|unit|kind[|reason]`) → per-stage tables: shared by the run report and the progress lines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SEP = "|"


def stage_table(counts: dict[str, int], stage_order: Iterable[str] = ()) -> dict[str, Any]:
    """Counters → {stage: {unit: {in, out, dropped: {reason: n}, info: {...}, balanced}}}."""
    stages: dict[str, dict[str, Any]] = {}
    for name, value in counts.items():
        parts = name.split(SEP)
        if len(parts) < 3:
            continue
        stage, unit, kind = parts[0], parts[1], parts[2]
        entry = stages.setdefault(stage, {}).setdefault(unit, {"in": 0, "out": 0, "dropped": {}, "info": {}})
        if kind in ("in", "out"):
            entry[kind] += value
        elif kind == "drop" and len(parts) > 3:
            entry["dropped"][parts[3]] = entry["dropped"].get(parts[3], 0) + value
        elif kind == "info" and len(parts) > 3:
            entry["info"][parts[3]] = entry["info"].get(parts[3], 0) + value
    for units in stages.values():
        for entry in units.values():
            entry["dropped"] = dict(sorted(entry["dropped"].items()))
            entry["balanced"] = entry["in"] == entry["out"] + sum(entry["dropped"].values())
    order = {name: i for i, name in enumerate(stage_order)}
    return dict(sorted(stages.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
