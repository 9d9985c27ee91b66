"""Telling a bad item from a broken run.

One undecodable page is data: a counted drop, and the run goes on. An error that is not about the item (a
missing dependency, a model file that is not there, a bug that raises on most items, no network) is not
data: counting it as a drop turns a broken run into an empty dataset that exits 0. Every DoFn that turns
item errors into drops routes them through a `FailureBreaker`, which re-raises the errors that can never
be about an item at once, and stops the stage when one failure *family* (an exception type, or a group
such as every network-level download error) accounts for most of a worker's recent items. It judges a
sliding window, not the run's totals, so an outage after a million good items stops the stage as fast as
one at the start. A rule's *verdict* is never an error and never goes through here: a Japanese crawl may
rightly lose 95% of its pages to an English language rule.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

from pydantic import Field, PositiveInt

from pipeline.config import Section

# Errors that can never be caused by one page, record or image: the environment or the code is broken.
NOT_ABOUT_THE_ITEM: tuple[type[BaseException], ...] = (ImportError, NameError, NotImplementedError)


class SystematicFailure(RuntimeError):
    """A stage failed on most items for the same reason; the run stops with the cause named."""


@dataclass(frozen=True)
class BreakerSettings(Section):
    """`runner.circuit_breaker`: when item failures mean a broken run (see FailureBreaker)."""

    min_items: PositiveInt
    max_failure_share: Annotated[float, Field(gt=0.0, le=1.0)]
    window: PositiveInt


EXAMPLES_SHOWN = 3  # distinct recent errors of the tripping family quoted in the message
RERUN_ADVICE = "fix the cause and re-run the same command"


class FailureBreaker:
    """Per-DoFn-instance judge of item outcomes over a sliding window; trips when failures are systematic.

    It remembers the outcome of a worker's last `window` items (success, or the failure's family). Once
    `min_items` items have been seen, a failure whose family holds `max_failure_share` or more of those
    recent items stops the stage: a worker that has seen 10,000 good items trips on an outage after
    `max_failure_share * window` failures, as one that has just started does. A family is the exception
    type unless the caller names one: the download stage groups DNS, refused, reset, timeout and TLS
    errors as `network`, because an outage mixes them. Counts are per worker instance, which is what a
    systematic cause hits.
    """

    def __init__(self, stage: str, min_items: int = 50, max_failure_share: float = 0.7, window: int = 300,
                 advice: str = RERUN_ADVICE):
        """`advice`: what the user should do when it trips, the last words of the message."""
        if min_items < 1 or window < 1 or not 0.0 < max_failure_share <= 1.0:
            raise ValueError(f"circuit breaker for {stage}: min_items >= 1, window >= 1 and "
                             f"0 < max_failure_share <= 1")
        self.stage = stage
        self.min_items = min_items
        self.max_failure_share = max_failure_share
        self.share = Fraction(str(max_failure_share))  # exact, so 0.7 of 50 items is 35, not 35.000000000000004
        self.window = window
        self.advice = advice
        self.items = 0  # every item this instance has seen
        self.recent: deque[tuple[str, str] | None] = deque(maxlen=window)  # (family, kind) of a failure, or None
        self.in_window: Counter[str] = Counter()  # failures per family among `recent`
        self.kinds_in_window: Counter[tuple[str, str]] = Counter()
        self.examples: dict[str, deque[str]] = {}  # family → its last distinct errors, oldest first

    @classmethod
    def from_config(cls, stage: str, settings: BreakerSettings | Mapping[str, Any],
                    advice: str = RERUN_ADVICE) -> FailureBreaker:
        """From the config's `runner.circuit_breaker` section (typed, or its dict)."""
        if not isinstance(settings, BreakerSettings):
            settings = BreakerSettings.from_config(settings, "runner.circuit_breaker")
        return cls(stage, settings.min_items, settings.max_failure_share, settings.window, advice)

    def succeeded(self, n: int = 1) -> None:
        self.items += n
        for _ in range(min(n, self.window)):  # `window` successes push out every earlier outcome
            self._remember(None)

    def failed(self, error: BaseException, family: str | None = None, item: str = "") -> None:
        """Record one item's failure; raises `SystematicFailure` (chained to `error`) when it is not the item's.

        `family`: the group whose share is judged (default: the exception type's name); `item`: what failed
        (a URL, a record), quoted in the message.
        """
        kind = type(error).__name__
        if isinstance(error, SystematicFailure):
            raise error
        if isinstance(error, NOT_ABOUT_THE_ITEM):
            raise SystematicFailure(
                f"{self.stage}: {kind}: {error} (an environment or code error, not a bad item)"
            ) from error
        family = family or kind
        self.items += 1
        self._remember((family, kind))
        self._note_example(family, error, item)
        judged = len(self.recent)
        if self.items >= self.min_items and self.in_window[family] >= math.ceil(self.share * judged):
            raise SystematicFailure(self._message(family, judged)) from error

    def _remember(self, outcome: tuple[str, str] | None) -> None:
        if len(self.recent) == self.window:
            forgotten = self.recent[0]
            if forgotten is not None:
                self.in_window[forgotten[0]] -= 1
                self.kinds_in_window[forgotten] -= 1
        self.recent.append(outcome)
        if outcome is not None:
            self.in_window[outcome[0]] += 1
            self.kinds_in_window[outcome] += 1

    def _note_example(self, family: str, error: BaseException, item: str) -> None:
        said = str(error) or type(error).__name__
        text = " ".join((f"{item}: {said}" if item else said).split())[:200]
        examples = self.examples.setdefault(family, deque(maxlen=EXAMPLES_SHOWN))
        if text in examples:
            examples.remove(text)
        examples.append(text)

    def _message(self, family: str, judged: int) -> str:
        """One line (the CLI quotes the line of a runner's traceback that holds it): stage, family, share,
        the last distinct errors and what to do."""
        kinds = sorted(((kind, n) for (fam, kind), n in self.kinds_in_window.items() if fam == family and n),
                       key=lambda kind_count: (-kind_count[1], kind_count[0]))
        breakdown = "" if [kind for kind, _ in kinds] == [family] else \
            " (" + ", ".join(f"{kind} {n}" for kind, n in kinds) + ")"
        examples = " | ".join(reversed(self.examples[family]))
        return (f"{self.stage}: {self.in_window[family]} of {judged} items failed with {family}{breakdown}: "
                f"{examples} (at least {self.max_failure_share:.0%} of a worker's last {self.window} items in "
                f"one failure family: a systematic failure, not bad data); {self.advice}")


def preload(loaders: Iterable[tuple[str, Callable[[], Any]]]) -> None:
    """Run each named loader once (imports, model files) so a broken install fails in seconds, by name.

    Called in the driver before a pipeline is built and again in `DoFn.setup()` on every worker.
    """
    for name, load in loaders:
        try:
            load()
        except Exception as error:
            raise SystematicFailure(f"cannot load {name}: {type(error).__name__}: {error}") from error
