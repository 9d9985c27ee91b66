"""Packed shards (`shards.packing: true`): the windows of several documents share one training sequence.

Half of a chunked shard set is `<pad>` when documents are short (every document's last window is padded to L).
Packing puts whole windows, as the chunked layout cuts them, one after another into rows of at most L tokens and
at most N images (`max_images`), so nothing is split (an `<image>` stays with its slot and its text) and nothing
is dropped to make a row fit: a window of L tokens fills a row of its own.

The knapsack is first-fit-decreasing over both capacities, run per buffer of about `packing_buffer` windows:
windows go to buffers by a hash of their key (their number known first, so the buffers' contents depend on the
input alone), each buffer is packed by one worker, all buffers in parallel (no single-worker step). Within a
buffer the windows are ordered by (tokens, images) descending, then key, so the same windows always give the
same rows, on any runner.

Pure functions (no Beam: the smoke trainer's canary shards pack with them too); the Beam step is
`pipeline.shards.pack_transform.PackRows`. A row carries what a trainer needs to keep documents apart
(`schemas.shards`): `doc_index` per token, `position_ids` restarting at each document, `cu_seqlens`, and
φ / φ_next computed per document and offset into the row's image slots (`compute_phi(..., doc_index)`):
no token ever names an image of another document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from schemas.shards import (
    ATTENTION_MASK,
    CU_SEQLENS,
    DOC_INDEX,
    IMAGE_MEMBER_RE,
    INPUT_IDS,
    INPUT_IDS_DTYPE,
    MASK_DTYPE,
    METADATA,
    PACKED_DTYPE,
    PACKED_MODE,
    PHI,
    PHI_DTYPE,
    PHI_NEXT,
    POSITION_IDS,
    compute_phi,
    loss_target_mask,
    npy_array,
    npy_bytes,
    packed_layout,
)

Record = tuple[str, dict[str, Any]]  # (key, {member suffix: bytes or a stored-image reference})
# Window metadata that is the document's, not the row's: copied into the row's `documents` entries.
DOCUMENT_KEYS = ("key", "doc_id", "url", "domain", "language", "window", "n_windows", "token_start", "n_tokens",
                 "n_targets", "n_images", "starts_at_boundary")
# Window metadata every window of a shard set shares: the row takes it from its first window.
ROW_KEYS = ("image_size", "resize_mode", "image_format", "seq_len")


def layout_mode(packing: bool, random_window: bool) -> str:
    """The manifest's `mode`: packed, random_window or chunked."""
    return PACKED_MODE if packing else "random_window" if random_window else "chunked"


def sample_slots(packing: bool, max_images: int, packing_max_images: int) -> int:
    """N of a sample, the manifest's `max_images`: a packed row's image slots, else a window's."""
    return packing_max_images if packing else max_images


def window_metadata(record: Record) -> dict[str, Any]:
    return json.loads(record[1][METADATA].decode("utf-8"))


def slot_suffixes(members: dict[str, Any]) -> list[str]:
    """The image members of a sample, in slot order."""
    found = ((int(m.group(1)), suffix) for suffix in members if (m := IMAGE_MEMBER_RE.match(suffix)) is not None)
    return [suffix for _, suffix in sorted(found)]


def first_fit_decreasing(sizes: Sequence[tuple[int, int]], seq_len: int, max_images: int) -> list[list[int]]:
    """Items (tokens, images) → rows of item indices, each within `seq_len` tokens and `max_images` images.

    Largest first (by tokens, then images; ties by index, so callers order ties), each into the first row with
    room for both. An item larger than a row would be its own row; windows never are (the chunked cut
    bounds them by L and N)."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][0], -sizes[i][1], i))
    free_tokens = np.empty(len(sizes), dtype=np.int64)
    free_images = np.empty(len(sizes), dtype=np.int64)
    rows: list[list[int]] = []
    for index in order:
        tokens, images = sizes[index]
        room = np.flatnonzero((free_tokens[: len(rows)] >= tokens) & (free_images[: len(rows)] >= images))
        if len(room):
            row = int(room[0])
        else:
            row = len(rows)
            rows.append([])
            free_tokens[row], free_images[row] = seq_len, max_images
        rows[row].append(index)
        free_tokens[row] -= tokens
        free_images[row] -= images
    return rows


def packed_record(windows: Sequence[Record], seq_len: int, max_images: int, image_token: int,
                  pad_token: int) -> Record:
    """Window samples (chunked layout, in row order) → one packed row sample (`schemas.shards` layout) of
    `seq_len` tokens and `max_images` slots.

    Image members are carried over as they are (bytes or store references), renumbered in row order."""
    metas = [window_metadata(window) for window in windows]
    parts = [npy_array(members[INPUT_IDS])[npy_array(members[ATTENTION_MASK]).astype(bool)]
             for _, members in windows]
    lengths = [len(part) for part in parts]
    real = sum(lengths)
    if real > seq_len:
        raise ValueError(f"{real} tokens do not fit a row of {seq_len}")
    input_ids = np.full(seq_len, pad_token, dtype=INPUT_IDS_DTYPE)
    input_ids[:real] = np.concatenate(parts)
    mask = np.zeros(seq_len, dtype=MASK_DTYPE)
    mask[:real] = 1
    doc_index = np.zeros(seq_len, dtype=PACKED_DTYPE)
    doc_index[:real] = np.repeat(np.arange(1, len(windows) + 1), lengths)
    position_ids, cu_seqlens = packed_layout(doc_index)
    phi, phi_next = compute_phi(input_ids, image_token, mask, doc_index)
    targets = loss_target_mask(input_ids, mask, image_token, pad_token, doc_index)

    key = f"{windows[0][0]}-packed"
    members: dict[str, Any] = {
        INPUT_IDS: npy_bytes(input_ids, INPUT_IDS_DTYPE), ATTENTION_MASK: npy_bytes(mask, MASK_DTYPE),
        PHI: npy_bytes(phi, PHI_DTYPE), PHI_NEXT: npy_bytes(phi_next, PHI_DTYPE),
        DOC_INDEX: npy_bytes(doc_index, PACKED_DTYPE), POSITION_IDS: npy_bytes(position_ids, PACKED_DTYPE),
        CU_SEQLENS: npy_bytes(cu_seqlens, PACKED_DTYPE),
    }
    documents, urls, hashes = [], [], []
    for (_, window), meta in zip(windows, metas):
        first_slot = len(urls)
        for slot, suffix in enumerate(slot_suffixes(window), start=first_slot):
            members[f"img{slot}.{suffix.split('.', 1)[1]}"] = window[suffix]
        urls += meta["image_urls"]
        hashes += meta["image_sha256"]
        documents.append({**{name: meta[name] for name in DOCUMENT_KEYS}, "first_slot": first_slot})
    metadata = {
        "key": key, "mode": PACKED_MODE, "n_documents": len(windows), "n_tokens": real,
        "n_targets": int(targets.sum()), "n_images": len(urls), "max_images": max_images, "image_urls": urls,
        "image_sha256": hashes, **{name: metas[0][name] for name in ROW_KEYS}, "documents": documents,
    }
    members[METADATA] = json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return key, members


def pack_records(windows: Sequence[Record], seq_len: int, max_images: int, image_token: int,
                 pad_token: int) -> list[Record]:
    """One buffer of window samples → packed rows of `seq_len` tokens and `max_images` image slots
    (first-fit-decreasing over both)."""
    ordered = sorted(windows, key=lambda record: record[0])
    metas = [window_metadata(record) for record in ordered]
    rows = first_fit_decreasing([(meta["n_tokens"], meta["n_images"]) for meta in metas], seq_len, max_images)
    return [packed_record([ordered[i] for i in row], seq_len, max_images, image_token, pad_token) for row in rows]


def windows_in(members: dict[str, Any]) -> int:
    """Training windows a sample holds: a packed row's documents, else one."""
    if DOC_INDEX not in members:
        return 1
    return int(json.loads(members[METADATA].decode("utf-8"))["n_documents"])
