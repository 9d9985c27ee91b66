"""The shape every filter shares: something in, keep or drop with a reason, plus scores to record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str = ""  # stable, short drop reason (empty when kept)
    scores: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, **scores: Any) -> Verdict:
        return cls(True, "", scores)

    @classmethod
    def drop(cls, reason: str, **scores: Any) -> Verdict:
        return cls(False, reason, scores)
