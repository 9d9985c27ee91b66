"""The shapes every rule shares (datatrove's `BaseFilter.filter` is the model): a rule writes one method,
`filter(item) -> Verdict`, and the base class counts what it keeps and drops by reason.

Two item types, because text and images are judged on different evidence: `TextItem` (a document's or a
paragraph's text, its language, URL and image count) for `TextFilter`s, and `ImageItem` (an image tag's
URL and declared size before download, the bytes after it) for `ImageFilter`s. A rule reads only the fields
it needs; its thresholds come from its own typed config section.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str = ""  # stable, short drop reason (empty when kept)
    scores: dict[str, Any] = field(default_factory=dict)
    # Rules reached that could not judge the item: no cut-off (or word list) for its language (the caller counts them).
    skipped: tuple[str, ...] = ()

    @classmethod
    def ok(cls, **scores: Any) -> Verdict:
        return cls(True, "", scores)

    @classmethod
    def drop(cls, reason: str, **scores: Any) -> Verdict:
        return cls(False, reason, scores)


@dataclass(frozen=True)
class TextItem:
    """What a text rule sees of a document or of one paragraph."""

    text: str
    lang: str = ""  # the document's language code ('' before language ID has run)
    url: str = ""  # the page's URL
    n_images: int = 0  # images in the document (0 for a paragraph)


@dataclass(frozen=True)
class ImageItem:
    """What an image rule sees: before download the tag's URL and declared size, after it the fetched bytes.

    `picture` opens the bytes once (header only; a rule that decodes it decodes this same object), so the
    caller that needs the decoded picture after the rules (NSFW scoring) takes it from the item.
    `nsfw_score` is set by the caller after batch scoring, for the NSFW rule."""

    url: str = ""
    declared_width: Any = None  # the tag's width/height attributes as written ('300', '300px', '100%')
    declared_height: Any = None
    data: bytes | None = None
    nsfw_score: float | None = None

    @cached_property
    def picture(self) -> Any:
        """The bytes opened with Pillow (header read, pixels not yet decoded); raises what `Image.open` raises."""
        from PIL import Image

        return Image.open(io.BytesIO(self.data or b""))


ItemT = TypeVar("ItemT")


class Filter(ABC, Generic[ItemT]):
    """One rule: `filter(item)` returns its verdict; calling the rule does the same and counts the outcome in
    `stats` ('kept', 'dropped', and 'dropped/<reason>'), so a rule author writes only `filter`."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    @abstractmethod
    def filter(self, item: ItemT) -> Verdict:
        """The verdict on one item: keep, or drop with a stable reason; scores of what was measured either way."""

    def __call__(self, item: ItemT) -> Verdict:
        verdict = self.filter(item)
        if verdict.keep:
            self.stats["kept"] += 1
        else:
            self.stats["dropped"] += 1
            self.stats[f"dropped/{verdict.reason}"] += 1
        return verdict


class TextFilter(Filter[TextItem]):
    """A document or paragraph rule."""


class ImageFilter(Filter[ImageItem]):
    """An image rule, on the tag before download or on the fetched bytes."""
