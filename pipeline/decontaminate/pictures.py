"""Is a training picture a benchmark picture, resized, re-encoded, mirrored or cropped a few percent?

Plain pHash compares whole pictures: a 3% crop on each side zooms the content by 6% and moves the hash by
4-12 bits, as far as an unrelated picture's nearest hashes (benchmarks/decontaminate.py). Here the benchmark
side hashes each picture's *core*, its centre without a margin of `max_crop` on every side, and the
training side hashes, for each crop it may have undergone (none; the same on every side; on two opposite
sides; at a corner; on one side; or the benchmark is the cropped one and the training picture shows up to
`max_crop` more: `hypotheses`), the window of itself where that core would lie. One of those windows shows
the benchmark core again, up to the pixels a crop between two hypotheses shifts, which the Hamming
thresholds absorb. A crop deeper than `max_crop`, or a copy inside a frame or a much wider shot, is out of
reach by design.

Both sides hash the same way: the picture in grey, box-averaged to a `GRID`² grid once, then every window
read off that grid by two small matrix products (no resampling per window), as pHash (DCT of a 32x32
reading, 64 bits, imagehash's definition) and dHash (9x8 gradients, 64 bits). A match needs both within
their thresholds: pHash finds candidates in a multi-index (below), dHash confirms them; unrelated pictures
rarely pass both. Each benchmark picture is indexed as shown and mirrored, and, where it is not square,
also as its centred square (the downloader's default `center_crop`, and the thumbnails of many sites).

`PictureIndex` finds every entry within `phash_distance` without comparing all of them: the 64 bits are
k parts (four of 16 bits, three of about 21 for large indexes), and two hashes within distance d agree on
some part up to d // k bits (pigeonhole), so each window probes every part with each of the few masks of that
weight in a dense table (multi-index hashing, Norouzi et al. 2012). The index is plain numpy arrays: it
pickles as a Beam side input.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

GRID = 128  # side of the grey grid every window is read from (a 320 px picture is averaged 2.5:1)
# The multi-index's parts of a 64-bit pHash: four of 16 bits for up to 2**16 entries, three of 22, 21 and 21 bits
# above (a part's width near log2 of the entries: 400,000 entries give 9,000 candidates per picture instead of
# 160,000, for 32 MB of tables).
SMALL_PARTS, LARGE_PARTS = (16, 16, 16, 16), (22, 21, 21)
FINE_STEPS = 8  # crops on every side are tried in steps of max_crop / 8
SQUARE_TOLERANCE = 0.05  # a picture whose aspect ratio is within this of 1 has no separate square view
Box = tuple[float, float, float, float]  # left, top, right, bottom as fractions of the picture


@dataclass(frozen=True)
class Hypothesis:
    """A crop a training picture may have undergone: the fractions cut from each side of the benchmark picture."""

    name: str
    left: float
    top: float
    right: float
    bottom: float

    def window(self, margin: float) -> Box:
        """Where the benchmark core (`margin` cut on every side) lies in a picture cropped by this hypothesis."""
        width, height = 1.0 - self.left - self.right, 1.0 - self.top - self.bottom
        return ((margin - self.left) / width, (margin - self.top) / height,
                (1.0 - margin - self.left) / width, (1.0 - margin - self.top) / height)


def hypotheses(max_crop: float) -> tuple[Hypothesis, ...]:
    """The crops tried up to `max_crop` per side, 41: none; on every side in eighths of it; on two opposite
    sides, at a corner and on one side at half and all of it; and the other way round, the benchmark being the
    cropped copy (a negative crop: the training picture shows more), on every side in eighths and on two
    opposite sides at half and all of it. Only "whole" when `max_crop` is 0.

    Crops on every side (thumbnails, the done-when case of issue 26) get the fine steps: on a texture (bricks,
    gravel) a window 0.7% off the true crop is already 10 pHash bits away (1.25% steps leave at most 0.6%)."""
    found = [Hypothesis("whole", 0.0, 0.0, 0.0, 0.0)]
    if max_crop <= 0:
        return tuple(found)

    def percent(cut: float) -> str:
        return f"{100 * cut:.3g}%"

    fine = [max_crop * step / FINE_STEPS for step in range(1, FINE_STEPS + 1)]
    for cut in fine:
        found.append(Hypothesis(f"crop {percent(cut)} each side", cut, cut, cut, cut))
    for cut in (max_crop / 2, max_crop):
        found.append(Hypothesis(f"crop {percent(cut)} left+right", cut, 0.0, cut, 0.0))
        found.append(Hypothesis(f"crop {percent(cut)} top+bottom", 0.0, cut, 0.0, cut))
        for (side_x, side_y), (cut_x, cut_y) in zip(
                itertools.product(("left", "right"), ("top", "bottom")),
                itertools.product((cut, 0.0), (cut, 0.0))):
            found.append(Hypothesis(f"crop {percent(cut)} {side_x}+{side_y}", cut_x, cut_y,
                                    cut - cut_x, cut - cut_y))
        for side, cuts in (("left", (cut, 0, 0, 0)), ("top", (0, cut, 0, 0)), ("right", (0, 0, cut, 0)),
                           ("bottom", (0, 0, 0, cut))):
            found.append(Hypothesis(f"crop {percent(cut)} {side}", *map(float, cuts)))
    for cut in fine:  # the benchmark is the cropped one
        found.append(Hypothesis(f"wider by {percent(cut)} each side", -cut, -cut, -cut, -cut))
    for cut in (max_crop / 2, max_crop):
        found.append(Hypothesis(f"wider by {percent(cut)} left+right", -cut, 0.0, -cut, 0.0))
        found.append(Hypothesis(f"wider by {percent(cut)} top+bottom", 0.0, -cut, 0.0, -cut))
    return tuple(found)


# ------------------------------------------------------------------------------------------------ hashing


def grey_grid(data: bytes, trim_border: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """Encoded picture → (`GRID`² grey grid as float64, (width, height) in pixels).

    Raises `ValueError` when the bytes do not decode. `trim_border`: cut the uniform dark frame the
    downloader's `border` resize mode adds, so the picture is compared without it.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.draft("L", (2 * GRID, 2 * GRID))  # JPEG: decode at a reduced scale, still ≥ 2 x GRID
            grey = picture.convert("L")
    except Exception as error:  # Pillow raises many types (OSError, DecompressionBombError, SyntaxError...)
        raise ValueError(f"undecodable picture: {type(error).__name__}: {error}") from error
    if trim_border:
        frame = grey.point(lambda value: 255 if value > 16 else 0).getbbox()
        if frame and frame != (0, 0, *grey.size):
            grey = grey.crop(frame)
    size = grey.size
    return np.asarray(grey.resize((GRID, GRID), Image.Resampling.BOX), dtype=np.float64), size


def _area_weights(start: float, end: float, cells: int) -> np.ndarray:
    """(cells, GRID) weights that average the grid's rows (or columns) over [start, end) in `cells` cells."""
    edges = np.linspace(start * GRID, end * GRID, cells + 1)
    low, high = edges[:-1, None], edges[1:, None]
    pixel = np.arange(GRID)[None, :]
    overlap = np.clip(np.minimum(high, pixel + 1) - np.maximum(low, pixel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _dct_rows(coefficients: int, size: int) -> np.ndarray:
    """The first `coefficients` rows of the unnormalised DCT-II of length `size` (scipy.fftpack's, as imagehash)."""
    index = np.arange(size)
    return 2.0 * np.cos(np.pi * np.arange(coefficients)[:, None] * (2 * index[None, :] + 1) / (2 * size))


_DCT = _dct_rows(8, 32)
_BIT_WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


@functools.lru_cache(maxsize=64)
def _readers(boxes: tuple[Box, ...]) -> tuple[np.ndarray, ...]:
    """Per box: the matrices that read its pHash coefficients and its dHash cells off a grid."""
    rows = np.stack([_DCT @ _area_weights(top, bottom, 32) for _, top, _, bottom in boxes])
    columns = np.stack([_DCT @ _area_weights(left, right, 32) for left, _, right, _ in boxes])
    cell_rows = np.stack([_area_weights(top, bottom, 8) for _, top, _, bottom in boxes])
    cell_columns = np.stack([_area_weights(left, right, 9) for left, _, right, _ in boxes])
    return rows, columns, cell_rows, cell_columns


def _pack(bits: np.ndarray) -> np.ndarray:
    """(n, 64) booleans → n uint64, the first bit the most significant."""
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def window_hashes(grid: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray]:
    """(pHash, dHash) as uint64 arrays, one of each per window of `grid`."""
    rows, columns, cell_rows, cell_columns = _readers(tuple(boxes))
    coefficients = ((rows @ grid) @ columns.transpose(0, 2, 1)).reshape(len(boxes), 64)
    phash = _pack(coefficients > np.median(coefficients, axis=1, keepdims=True))
    cells = (cell_rows @ grid) @ cell_columns.transpose(0, 2, 1)
    dhash = _pack((cells[:, :, 1:] > cells[:, :, :-1]).reshape(len(boxes), 64))
    return phash, dhash


def core_boxes(width: int, height: int, margin: float) -> list[tuple[str, Box]]:
    """The benchmark picture's views: its core as shown and, unless it is square, its centred square's core."""
    views: list[tuple[str, Box]] = [("as shown", (margin, margin, 1.0 - margin, 1.0 - margin))]
    aspect = width / max(1, height)
    if abs(aspect - 1.0) > SQUARE_TOLERANCE:
        if aspect > 1.0:
            share = 1.0 / aspect
            left = (1.0 - share) / 2
            views.append(("centred square", (left + margin * share, margin, left + (1 - margin) * share, 1 - margin)))
        else:
            share = aspect
            top = (1.0 - share) / 2
            views.append(("centred square", (margin, top + margin * share, 1 - margin, top + (1 - margin) * share)))
    return views


@dataclass(frozen=True)
class BenchmarkEntry:
    """One view of one benchmark picture, hashed."""

    item: int  # the picture's number in the index's item list
    view: str  # "as shown", "centred square", either one "mirrored"
    phash: int
    dhash: int


def benchmark_entries(data: bytes, item: int, max_crop: float) -> list[BenchmarkEntry]:
    """The hashed views of one benchmark picture (as shown, centred square; each also mirrored)."""
    grid, (width, height) = grey_grid(data)
    views = core_boxes(width, height, max_crop)
    boxes = [box for _, box in views]
    entries = []
    for mirrored, plane in ((False, grid), (True, grid[:, ::-1])):
        phashes, dhashes = window_hashes(np.ascontiguousarray(plane), boxes)
        for (view, _), phash, dhash in zip(views, phashes, dhashes):
            entries.append(BenchmarkEntry(item, f"{view} mirrored" if mirrored else view, int(phash), int(dhash)))
    return entries


# ------------------------------------------------------------------------------------------------ index


@dataclass(frozen=True)
class PictureMatch:
    """The closest benchmark entry a training picture matched: which one, through which window, how close."""

    item: int
    view: str
    hypothesis: str
    phash_distance: int
    dhash_distance: int


def popcount(values: np.ndarray) -> np.ndarray:
    """Bits set in each uint64 (numpy >= 2 counts them natively; 1.26 unpacks the bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=(-1, -2)).astype(np.int64)


@functools.lru_cache(maxsize=16)
def _masks(bits: int, radius: int) -> np.ndarray:
    """Every `bits`-bit value with at most `radius` bits set: the probes of one part."""
    return np.array([sum(1 << bit for bit in chosen) for weight in range(radius + 1)
                     for chosen in itertools.combinations(range(bits), weight)], dtype=np.int64)


class PictureIndex:
    """Benchmark entries, searchable by pHash distance (multi-index) and confirmed by dHash distance."""

    def __init__(self, entries: Iterable[BenchmarkEntry], phash_distance: int, dhash_distance: int,
                 max_crop: float):
        entries = list(entries)
        self.phash_distance, self.dhash_distance, self.max_crop = phash_distance, dhash_distance, max_crop
        self.phash = np.array([e.phash for e in entries], dtype=np.uint64)
        self.dhash = np.array([e.dhash for e in entries], dtype=np.uint64)
        self.item = np.array([e.item for e in entries], dtype=np.int64)
        self.views = sorted({e.view for e in entries})
        self.view = np.array([self.views.index(e.view) for e in entries], dtype=np.int8)
        self.hypotheses = hypotheses(max_crop)
        self.windows = tuple(h.window(max_crop) for h in self.hypotheses)
        self.parts = SMALL_PARTS if len(entries) <= 1 << 16 else LARGE_PARTS
        self.shifts = tuple(sum(self.parts[:number]) for number in range(len(self.parts)))
        self.masks = [_masks(bits, phash_distance // len(self.parts)) for bits in self.parts]
        self.order, self.starts = [], []
        for part in range(len(self.parts)):  # a dense table per part: entries sorted by it, where each value starts
            values = self._part(self.phash, part)
            order = np.argsort(values, kind="stable")
            self.order.append(order.astype(np.int32))
            self.starts.append(np.searchsorted(values[order], np.arange((1 << self.parts[part]) + 1),
                                               side="left").astype(np.int32))

    def __len__(self) -> int:
        return len(self.phash)

    def _part(self, hashes: np.ndarray, part: int) -> np.ndarray:
        mask = np.uint64((1 << self.parts[part]) - 1)
        return ((hashes >> np.uint64(self.shifts[part])) & mask).astype(np.int64)

    def candidates(self, phashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window, entry) pairs whose pHashes may be within the distance: those agreeing on a part up to
        `phash_distance // parts` bits (a superset of the pairs within it)."""
        windows, found = [], []
        for part, masks in enumerate(self.masks):
            probes = self._part(phashes, part)[:, None] ^ masks[None, :]
            starts = self.starts[part][probes].ravel().astype(np.int64)
            counts = self.starts[part][probes + 1].ravel() - starts
            total = int(counts.sum())
            if not total:
                continue
            offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
            found.append(self.order[part][offsets].astype(np.int64))
            windows.append(np.repeat(np.repeat(np.arange(len(phashes)), len(masks)), counts))
        if not found:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(windows), np.concatenate(found)

    def match(self, grid: np.ndarray) -> PictureMatch | None:
        """The closest benchmark entry within both thresholds for any window of a training picture, or None."""
        if not len(self):
            return None
        phashes, dhashes = window_hashes(grid, self.windows)
        windows, entries = self.candidates(phashes)
        if not len(entries):
            return None
        phash_distance = popcount(phashes[windows] ^ self.phash[entries])
        near = phash_distance <= self.phash_distance  # most candidates go here; dHash only for the rest
        windows, entries, phash_distance = windows[near], entries[near], phash_distance[near]
        dhash_distance = popcount(dhashes[windows] ^ self.dhash[entries])
        close = dhash_distance <= self.dhash_distance
        if not close.any():
            return None
        candidates = np.flatnonzero(close)
        best = candidates[np.lexsort((windows[candidates], entries[candidates],
                                      dhash_distance[candidates] + phash_distance[candidates]))[0]]
        entry = int(entries[best])
        return PictureMatch(int(self.item[entry]), self.views[self.view[entry]],
                            self.hypotheses[int(windows[best])].name,
                            int(phash_distance[best]), int(dhash_distance[best]))
