"""Documents → training sequences, exactly per the M3W contract (pure functions, no Beam).

Token stream of a document: text chunks and `<image>` tokens in reading order, an `<EOC>` before every
`<image>` except one that opens the document, and `<EOC> <eos>` at the end:
`T0 <EOC> <image> T1 <EOC> <image> T2 <EOC> <eos>`.

Windows (default, "chunked"): consecutive, non-overlapping windows of at most L tokens and N images.
A window that would cut a chunk in the middle ends instead just before the last `<image>` inside it, so
the next window starts at that image with its text (a chunk boundary). Only a chunk longer than L
(text that cannot fit with its image) continues in a window that starts mid-chunk; that window is
marked `starts_at_boundary=False`. Concatenating a document's windows gives back its token stream.

Flamingo-faithful mode (`random_window`): one window of L tokens at a random offset per document
(the generator seeded by config seed + doc_id, so order- and worker-independent), keeping the first N
images; the `<image>` tokens of further images and the `<EOC>` before each are removed.
"""

from __future__ import annotations

import hashlib
import io
import typing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.shards.settings import ImageFormat, ResizeMode, ShardSettings
from schemas.shards import INPUT_IDS_DTYPE, MASK_DTYPE, compute_phi, loss_target_mask

RESIZE_MODES: tuple[str, ...] = typing.get_args(ResizeMode)
IMAGE_FORMATS = {name: name.upper() for name in typing.get_args(ImageFormat)}  # config name → Pillow's format


@dataclass(frozen=True)
class SpecialIds:
    image: int
    eoc: int
    eos: int
    pad: int


@dataclass(frozen=True)
class WindowConfig:
    """How a document's token stream is cut into training sequences (the `shards` section's window keys)."""

    seq_len: int
    max_images: int
    random_window: bool
    seed: int
    min_images_per_sequence: int

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"shards.seq_len must be at least 2 (one input, one target); got {self.seq_len}")
        if not 1 <= self.max_images <= 255:
            raise ValueError(f"shards.max_images must be in 1..255; got {self.max_images}")

    @classmethod
    def from_config(cls, shards: ShardSettings) -> WindowConfig:
        """The window settings of the `shards` section."""
        return cls(seq_len=shards.seq_len, max_images=shards.max_images, random_window=shards.random_window,
                   seed=shards.seed, min_images_per_sequence=shards.min_images_per_sequence)


@dataclass
class Window:
    """One training sequence: padded arrays plus where it came from."""

    index: int                 # window number within the document (before drops)
    token_start: int           # offset of the first token in the document's stream
    tokens: np.ndarray         # the real tokens (unpadded)
    image_indices: list[int]   # document image index of each filled slot, in <image> order
    input_ids: np.ndarray      # [L]
    attention_mask: np.ndarray  # [L]
    phi: np.ndarray            # [L]
    phi_next: np.ndarray       # [L]
    n_targets: int
    starts_at_boundary: bool

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def token_stream(parts: Sequence[list[int] | int], special: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """Text token lists and image indices (ints) in reading order → (ids, image_at).

    `image_at[p]` is the document image index of the `<image>` at p, -1 elsewhere.
    """
    ids: list[int] = []
    image_at: list[int] = []
    for part in parts:
        if isinstance(part, (int, np.integer)):
            if ids:
                ids.append(special.eoc)
                image_at.append(-1)
            ids.append(special.image)
            image_at.append(int(part))
        else:
            ids.extend(int(t) for t in part)
            image_at.extend([-1] * len(part))
    ids += [special.eoc, special.eos]
    image_at += [-1, -1]
    return np.asarray(ids, dtype=INPUT_IDS_DTYPE), np.asarray(image_at, dtype=np.int64)


def chunked_spans(ids: np.ndarray, image_token: int, seq_len: int, max_images: int) -> list[tuple[int, int]]:
    """[start, end) spans covering the stream: ≤ L tokens, ≤ N images, cut at chunk boundaries where possible."""
    total = len(ids)
    image_positions = np.flatnonzero(ids == image_token)
    spans: list[tuple[int, int]] = []
    start = 0
    while start < total:
        end = min(start + seq_len, total)
        lo, hi = np.searchsorted(image_positions, [start, end])
        inside = image_positions[lo:hi]
        if len(inside) > max_images:
            end = int(inside[max_images])  # the window ends with the <EOC> before the (N+1)-th image
        elif end < total and ids[end] != image_token:
            boundaries = inside[inside > start]
            if len(boundaries):
                end = int(boundaries[-1])  # end before the last image so it starts the next window with its text
        spans.append((start, end))
        start = end
    return spans


def window_seed(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()[:8], "little")


def random_window(
    ids: np.ndarray, image_at: np.ndarray, seq_len: int, max_images: int, seed: int, doc_id: str
) -> tuple[int, np.ndarray, np.ndarray]:
    """Flamingo: one random L-token window; images beyond the first N lose their `<image>` and its `<EOC>`."""
    rng = np.random.default_rng(window_seed(seed, doc_id))
    start = int(rng.integers(0, max(0, len(ids) - seq_len) + 1))
    tokens, slots = ids[start:start + seq_len], image_at[start:start + seq_len]
    keep = np.ones(len(tokens), dtype=bool)
    for count, position in enumerate(np.flatnonzero(slots >= 0)):
        if count >= max_images:
            keep[position] = False
            if position > 0 and keep[position - 1]:
                keep[position - 1] = False  # the <EOC> that announced the dropped image
    return start, tokens[keep], slots[keep]


def make_window(index: int, start: int, tokens: np.ndarray, slots: np.ndarray, seq_len: int,
                special: SpecialIds, at_boundary: bool) -> Window:
    input_ids = np.full(seq_len, special.pad, dtype=INPUT_IDS_DTYPE)
    input_ids[: len(tokens)] = tokens
    mask = np.zeros(seq_len, dtype=MASK_DTYPE)
    mask[: len(tokens)] = 1
    phi, phi_next = compute_phi(input_ids, special.image, mask)
    targets = loss_target_mask(input_ids, mask, special.image, special.pad)
    return Window(index=index, token_start=start, tokens=np.asarray(tokens, dtype=INPUT_IDS_DTYPE),
                  image_indices=[int(i) for i in slots[slots >= 0]], input_ids=input_ids, attention_mask=mask,
                  phi=phi, phi_next=phi_next, n_targets=int(targets.sum()), starts_at_boundary=at_boundary)


def build_windows(ids: np.ndarray, image_at: np.ndarray, windowing: WindowConfig, special: SpecialIds,
                  doc_id: str) -> list[Window]:
    """Every window of a document's stream (before drops), in order."""
    if windowing.random_window:
        start, tokens, slots = random_window(ids, image_at, windowing.seq_len, windowing.max_images, windowing.seed,
                                             doc_id)
        boundary = start == 0 or int(ids[start]) == special.image
        return [make_window(0, start, tokens, slots, windowing.seq_len, special, boundary)]
    windows = []
    for index, (start, end) in enumerate(chunked_spans(ids, special.image, windowing.seq_len, windowing.max_images)):
        boundary = start == 0 or int(ids[start]) == special.image
        windows.append(make_window(index, start, ids[start:end], image_at[start:end], windowing.seq_len, special,
                                   boundary))
    return windows


def drop_reason(window: Window, windowing: WindowConfig) -> str | None:
    """Why a window is not emitted (the contract: no target → not emitted), or None."""
    if window.n_targets == 0:
        return "no_target"
    if len(window.image_indices) < windowing.min_images_per_sequence:
        return "too_few_images"
    return None


def build_sequences(parts: Sequence[list[int] | int], windowing: WindowConfig, special: SpecialIds,
                    doc_id: str) -> tuple[list[Window], Counter]:
    """A document's parts → (emitted windows, Counter of drop reasons)."""
    ids, image_at = token_stream(parts, special)
    kept: list[Window] = []
    drops: Counter = Counter()
    for window in build_windows(ids, image_at, windowing, special, doc_id):
        reason = drop_reason(window, windowing)
        if reason:
            drops[reason] += 1
        else:
            kept.append(window)
    return kept, drops


# ------------------------------------------------------------------------------------------------------ images


class UndecodableImage(OSError):
    """The decoder refused an image's own bytes: that image's fault, a counted drop (never a broken run)."""


def parse_image_size(value: int | Sequence[int]) -> tuple[int, int]:
    """Config `image_size` (an int for square, or [height, width]) → (height, width)."""
    if isinstance(value, int):
        return value, value
    height, width = value
    return height, width


def fit_image(data: bytes, size: tuple[int, int], mode: str, image_format: str, quality: int) -> bytes:
    """Encoded image → encoded RGB image of exactly `size` (height, width), per `mode`.

    center_crop: scale so the short side fits, crop the middle (CLIP / OpenFlamingo preprocessing);
    pad: scale to fit inside, pad with black; stretch: resize ignoring the aspect ratio.
    Bytes already of the right size, mode and format pass through unchanged (no second lossy encode).
    Raises `UndecodableImage` when the decoder refuses the bytes; any other error (resizing, encoding, a
    broken Pillow) is not about the image and propagates as it is.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r} (known: {', '.join(RESIZE_MODES)})")
    pil_format = IMAGE_FORMATS[image_format]
    height, width = size
    try:
        with PILImage.open(io.BytesIO(data)) as source:
            if source.format == pil_format and source.size == (width, height) and source.mode == "RGB" \
                    and not source.getexif().get(0x0112):
                source.load()  # fully decodable, not only a valid header
                return data
            if source.format == "JPEG":
                source.draft("RGB", (width, height))  # decode at a reduced scale when the source is much larger
            image = ImageOps.exif_transpose(source) if source.getexif().get(0x0112) else source
            image = image.convert("RGB") if image.mode != "RGB" else image
            image.load()
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as error:  # what decoders raise
        raise UndecodableImage(f"undecodable image: {type(error).__name__}: {error}") from error
    resample = PILImage.Resampling.BICUBIC
    if mode == "center_crop":
        image = ImageOps.fit(image, (width, height), method=resample, centering=(0.5, 0.5))
    elif mode == "pad":
        image = ImageOps.pad(image, (width, height), method=resample, color=(0, 0, 0), centering=(0.5, 0.5))
    else:
        image = image.resize((width, height), resample=resample)
    out = io.BytesIO()
    if pil_format == "JPEG":
        image.save(out, format="JPEG", quality=quality, optimize=False, progressive=False, subsampling=0)
    else:
        image.save(out, format="WEBP", quality=quality, method=4)
    return out.getvalue()
