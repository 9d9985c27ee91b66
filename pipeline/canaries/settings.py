"""The `canaries` config section: the alignment canaries `m3w build` adds to every build."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt

from pipeline.canaries.shapes import CANARY_CLASSES
from pipeline.config import Section

CanaryClass = Literal[CANARY_CLASSES]  # type: ignore[valid-type]  # the tuple's strings as the choices


@dataclass(frozen=True)
class CanarySettings(Section):
    """`canaries`: how many canary pages ride along a build, with which shapes, drawn from which seed."""

    pages: NonNegativeInt  # 0: none (`m3w build --canaries 0`)
    classes: Annotated[list[CanaryClass], Field(min_length=1)]
    seed: NonNegativeInt
