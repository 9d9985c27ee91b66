"""Does a training document quote a benchmark passage? Shared word n-grams, as datatrove's decontamination.

Both sides are normalised the same way as near-duplicate dedup (`pipeline.dedup.keys.shingle_words`:
lower case, no punctuation, numbers as 0, no diacritics), so a quotation with other capitals, punctuation or
line breaks still shares its n-grams. A passage shorter than `ngram` words has none and cannot match (short
captions and questions need a smaller `decontaminate.text.ngram`: docs/decontaminate.md).

A document's paragraphs are read as one word sequence, so an n-gram that runs over a paragraph break still
counts; every paragraph it touches is contaminated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.dedup.keys import shingle_words, word_window_hashes


def ngram_hashes(words: Sequence[str], ngram: int) -> np.ndarray:
    """One uint64 per window of `ngram` words, in order; none for fewer words."""
    if len(words) < ngram:
        return np.empty(0, dtype=np.uint64)
    return word_window_hashes(words, ngram)


class PassageIndex:
    """The benchmark passages' n-grams, sorted, each with the passage it came from (the first, when shared)."""

    def __init__(self, hashes: Iterable[np.ndarray], items: Iterable[int]):
        """`hashes[i]`: the n-gram hashes of the passage numbered `items[i]`."""
        chunks = [(np.asarray(h, dtype=np.uint64), item) for h, item in zip(hashes, items)]
        every = np.concatenate([h for h, _ in chunks]) if chunks else np.empty(0, dtype=np.uint64)
        owners = np.concatenate([np.full(len(h), item, dtype=np.int64) for h, item in chunks]) if chunks else \
            np.empty(0, dtype=np.int64)
        order = np.lexsort((owners, every))
        self.hashes, first = np.unique(every[order], return_index=True)
        self.items = owners[order][first]

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `hashes` found in the index, the passage of each)."""
        if not len(self) or not len(hashes):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        slots = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        found = np.flatnonzero(self.hashes[slots] == hashes)
        return found, self.items[slots[found]]


@dataclass(frozen=True)
class ParagraphMatch:
    """A paragraph (numbered across the document's text) that shares an n-gram with a benchmark passage."""

    paragraph: int
    item: int
    ngram: str  # the shared words, normalised


def contaminated_paragraphs(paragraphs: Sequence[str], index: PassageIndex, ngram: int) -> list[ParagraphMatch]:
    """Every paragraph touched by an n-gram of the index, once, with the first such n-gram's passage and words."""
    words: list[str] = []
    owner: list[int] = []
    for number, paragraph in enumerate(paragraphs):
        found = shingle_words(paragraph)
        words += found
        owner += [number] * len(found)
    positions, items = index.find(ngram_hashes(words, ngram))
    matches: dict[int, ParagraphMatch] = {}
    for start, item in zip(positions.tolist(), items.tolist()):
        shared = " ".join(words[start:start + ngram])
        for number in sorted(set(owner[start:start + ngram])):
            matches.setdefault(number, ParagraphMatch(number, item, shared))
    return [matches[number] for number in sorted(matches)]
