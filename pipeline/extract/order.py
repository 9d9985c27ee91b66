"""Where each part of trafilatura's output stands in the page: its XML body read into paragraphs and images,
each paragraph found again in the page's text stream, and the document put back into DOM order.

trafilatura decides *what* is main content; these functions decide *where* each part stands. A paragraph that
cannot be found stays where trafilatura put it (counted by the caller).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.extract.html_images import DomText, marker_index, normalise

# trafilatura output tags that end a paragraph, and those that end a line inside one.
_BLOCKS = {"p", "head", "list", "quote", "table", "code", "div", "main", "doc", "body"}
_LINES = {"item", "row", "lb"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
# A located block shorter than this (normalised characters) is trusted only where its neighbours put it.
_SURE_KEY_CHARS = 12
_MIN_KEY_CHARS = 3


class Collector:
    """Walks trafilatura's XML body in document order into paragraphs and images.

    `items` holds ("text", paragraph) and ("image", image_key(src)) in trafilatura's order; graphics whose
    key is None (not one of m3w's markers) are left out.
    """

    def __init__(self, image_key: Callable[[str | None], Any] = marker_index):
        self.image_key = image_key
        self.items: list[tuple[str, Any]] = []
        self.line: list[str] = []
        self.lines: list[str] = []

    def add(self, text: str | None) -> None:
        if text:
            self.line.append(text)

    def end_line(self) -> None:
        if not self.line:
            return
        line = _SPACES.sub(" ", "".join(self.line)).strip()
        self.line = []
        if line:
            self.lines.append(line)

    def end_paragraph(self) -> None:
        self.end_line()
        if self.lines:
            self.items.append(("text", "\n".join(self.lines)))
        self.lines = []

    def walk(self, element) -> None:
        if element.tag == "graphic":
            key = self.image_key(element.get("src"))
            if key is not None:
                self.end_paragraph()
                self.items.append(("image", key))
            self.add(element.tail)
            return
        self.add(element.text)
        for child in element:
            self.walk(child)
            if child.tag in _BLOCKS:
                self.end_paragraph()
            elif child.tag in _LINES:
                self.end_line()
            elif child.tag == "cell":
                self.add(" ")  # table cells are words apart
            if child.tag != "graphic":
                self.add(child.tail)
        if element.tag in _BLOCKS:
            self.end_paragraph()

    def finish(self) -> list[tuple[str, Any]]:
        self.end_paragraph()
        return self.items


@dataclass
class Placed:
    """One paragraph or image of the document with its place in the page (None: not found)."""

    kind: str  # "text" | "image"
    value: Any  # the paragraph, or the image's marker index
    order: int  # trafilatura's position
    key: str = ""  # normalised paragraph text
    pos: int | None = None  # offset in the page's normalised text stream


def _occurrences(key: str, dom: DomText, prefix: int) -> list[int]:
    """Where a normalised paragraph may start in the page: its prefix, else its end (a rewritten start)."""
    if len(key) < _MIN_KEY_CHARS:
        return []
    found = dom.occurrences(key[:prefix])
    if found or len(key) <= prefix:
        return found
    return [max(0, p - (len(key) - prefix)) for p in dom.occurrences(key[-prefix:])]


def locate(items: list[tuple[str, Any]], dom: DomText, prefix: int) -> list[Placed]:
    """Each item's offset in the page's text stream.

    An image stands at its marker. A paragraph found once (with a key long enough to be sure) is an anchor;
    one found several times, or with a short key, takes the occurrence between the anchors around it
    (nearest to the previous one), else, if it is long, the occurrence nearest to them; else it stays
    unlocated. An occurrence already taken by an identical paragraph is not taken twice while others remain.
    """
    placed = [Placed(kind, value, i) for i, (kind, value) in enumerate(items)]
    options: dict[int, list[int]] = {}
    for item in placed:
        if item.kind == "image":
            item.pos = dom.image_at.get(item.value)
            continue
        item.key = normalise(item.value)
        found = _occurrences(item.key, dom, prefix)
        if len(found) == 1 and len(item.key) >= _SURE_KEY_CHARS:
            item.pos = found[0]
        elif found:
            options[item.order] = found
    texts = [item for item in placed if item.kind == "text"]
    taken: dict[str, set[int]] = {}
    for item in placed:
        if item.pos is not None and item.kind == "text":
            taken.setdefault(item.key, set()).add(item.pos)
    for n, item in enumerate(texts):
        found = options.get(item.order)
        if not found:
            continue
        lo = next((t.pos for t in reversed(texts[:n]) if t.pos is not None), None)
        hi = next((t.pos for t in texts[n + 1:] if t.pos is not None), None)
        free = [p for p in found if p not in taken.get(item.key, ())] or found
        inside = [p for p in free if (lo is None or p >= lo) and (hi is None or p <= hi)]
        if inside:
            item.pos = min(inside) if lo is not None else max(inside)
        elif len(item.key) >= _SURE_KEY_CHARS:
            bounds = [b for b in (lo, hi) if b is not None]
            item.pos = min(free, key=lambda p: min(abs(p - b) for b in bounds)) if bounds else free[0]
        if item.pos is not None:
            taken.setdefault(item.key, set()).add(item.pos)
    return placed


def with_pictures(placed: list[Placed], chosen: set[int], dom: DomText) -> list[Placed]:
    """trafilatura's located items with its pictures narrowed to `chosen` (each once), and the chosen pictures it
    did not keep inserted at their place in the page: before the first located item that stands after them
    (text at the same offset counts as after). Items are renumbered in the new order."""
    out: list[Placed] = []
    present: set[int] = set()
    for item in placed:
        if item.kind == "image":
            if item.value not in chosen or item.value in present:
                continue
            present.add(item.value)
        out.append(item)
    added = sorted((dom.image_at[index], index) for index in chosen - present if index in dom.image_at)
    for pos, index in added:
        at = next((k for k, item in enumerate(out)
                   if item.pos is not None and (item.pos, item.kind == "text") > (pos, False)), len(out))
        out.insert(at, Placed("image", index, 0, pos=pos))
    for order, item in enumerate(out):
        item.order = order
    return out


def dom_order(placed: list[Placed]) -> list[Placed]:
    """Located items sorted by their place in the page; an unlocated one stays right after its predecessor.

    At one offset an image comes before text (its marker stands before the text that follows it).
    """
    keyed, last = [], (-1, 0)
    for item in placed:
        if item.pos is not None:
            last = (item.pos, 0 if item.kind == "image" else 1)
        keyed.append((last + (item.order,), item))
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def dom_gaps(placed: list[Placed]) -> dict[int, dict[str, int]]:
    """Per image (by list index): normalised characters of page text between it and the paragraph before
    and after it in the document (`dom_gap_before`, `dom_gap_after`), where both are located."""
    gaps: dict[int, dict[str, int]] = {}
    for i, item in enumerate(placed):
        if item.kind != "image" or item.pos is None:
            continue
        gap: dict[str, int] = {}
        before = next((t for t in reversed(placed[:i]) if t.kind == "text"), None)
        after = next((t for t in placed[i + 1:] if t.kind == "text"), None)
        if before is not None and before.pos is not None:
            gap["dom_gap_before"] = max(0, item.pos - before.pos - len(before.key))
        if after is not None and after.pos is not None:
            gap["dom_gap_after"] = max(0, after.pos - item.pos)
        gaps[i] = gap
    return gaps


def moved(ordered: list[Placed]) -> Counter:
    """Items that changed place: those outside one longest run kept in trafilatura's order, per kind."""
    tails: list[int] = []  # patience sorting: the smallest last order of an increasing run of each length
    links: list[int] = []  # index into `ordered` of that run's last item
    previous: list[int] = [-1] * len(ordered)
    for i, item in enumerate(ordered):
        at = bisect_left(tails, item.order)
        previous[i] = links[at - 1] if at else -1
        if at == len(tails):
            tails.append(item.order)
            links.append(i)
        else:
            tails[at], links[at] = item.order, i
    kept, i = set(), links[-1] if links else -1
    while i >= 0:
        kept.add(i)
        i = previous[i]
    return Counter("paragraphs" if item.kind == "text" else "images"
                   for i, item in enumerate(ordered) if i not in kept)
