"""Telling a bad item from a broken run.

One undecodable page is data: a counted drop, and the run goes on. An error that is not about the item (a
missing dependency, a model file that is not there, a bug that raises on every item, no network) is not
data: counting it as a drop turns a broken run into an empty dataset that exits 0. Every DoFn that turns
item errors into drops routes them through a `FailureBreaker`, which re-raises the errors that can never
be about an item at once, and stops the stage when one exception type accounts for nearly every item.
A rule's *verdict* is never an error and never goes through here: a Japanese crawl may rightly lose 95% of
its pages to an English language rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, PositiveInt

from pipeline.config import Section

# Errors that can never be caused by one page, record or image: the environment or the code is broken.
NOT_ABOUT_THE_ITEM: tuple[type[BaseException], ...] = (ImportError, NameError, NotImplementedError)


class SystematicFailure(RuntimeError):
    """A stage failed on (nearly) every item for the same reason; the run stops with the cause named."""


@dataclass(frozen=True)
class BreakerSettings(Section):
    """`runner.circuit_breaker`: when item failures mean a broken run (see FailureBreaker)."""

    min_items: PositiveInt
    max_failure_share: Annotated[float, Field(gt=0.0, le=1.0)]


class FailureBreaker:
    """Per-DoFn-instance tally of item outcomes that trips when failures are systematic.

    `min_items` items must have been seen before the share is judged, so a few bad pages at the start of a
    file never stop a run; after that, `max_failure_share` or more of all items failing with the *same*
    exception type stops the stage. Counts are per worker instance, which is what a systematic cause hits.
    """

    def __init__(self, stage: str, min_items: int = 50, max_failure_share: float = 0.9):
        if min_items < 1 or not 0.0 < max_failure_share <= 1.0:
            raise ValueError(f"circuit breaker for {stage}: min_items >= 1 and 0 < max_failure_share <= 1")
        self.stage = stage
        self.min_items = int(min_items)
        self.max_failure_share = float(max_failure_share)
        self.items = 0
        self.failures: Counter[str] = Counter()

    @classmethod
    def from_config(cls, stage: str, settings: BreakerSettings | Mapping[str, Any]) -> FailureBreaker:
        """From the config's `runner.circuit_breaker` section (typed, or its dict)."""
        if not isinstance(settings, BreakerSettings):
            settings = BreakerSettings.from_config(settings, "runner.circuit_breaker")
        return cls(stage, settings.min_items, settings.max_failure_share)

    def succeeded(self, n: int = 1) -> None:
        self.items += n

    def failed(self, error: BaseException) -> None:
        """Record one item's failure; raises `SystematicFailure` (chained to `error`) when it is not the item's."""
        kind = type(error).__name__
        if isinstance(error, SystematicFailure):
            raise error
        if isinstance(error, NOT_ABOUT_THE_ITEM):
            raise SystematicFailure(
                f"{self.stage}: {kind}: {error} (an environment or code error, not a bad item)"
            ) from error
        self.items += 1
        self.failures[kind] += 1
        if self.items >= self.min_items and self.failures[kind] >= self.max_failure_share * self.items:
            raise SystematicFailure(
                f"{self.stage}: {self.failures[kind]} of {self.items} items failed with {kind}: {error} "
                f"(at least {self.max_failure_share:.0%} with one exception type: a systematic failure, not bad data)"
            ) from error


def preload(loaders: Iterable[tuple[str, Callable[[], Any]]]) -> None:
    """Run each named loader once (imports, model files) so a broken install fails in seconds, by name.

    Called in the driver before a pipeline is built and again in `DoFn.setup()` on every worker.
    """
    for name, load in loaders:
        try:
            load()
        except Exception as error:
            raise SystematicFailure(f"cannot load {name}: {type(error).__name__}: {error}") from error
