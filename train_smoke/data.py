"""Shards → batches for the smoke trainer: held-out split, decoding, cropping, and weighted mixing of shard sets.

A *shard set* is one `m3w shard` output (a directory, its `manifest.json`, or a `.tar` inside it); several
sets are mixed with Flamingo's per-dataset weights λ_m (one batch of each set per step, gradients
accumulated). Sequences are split into training and held-out parts by a hash of their document id, so
every window of a document lands on the same side and the verdict only sees documents never trained on.
The alignment canaries an `m3w build` output carries beside its data (`canaries/`, listed apart in the
manifest) are a set of their own, `<set>:canaries`, with the data's λ: a batch of them each step whatever
the size of the crawl, and a held-out part of their own for the verdict.

Two ways to feed the trainer:
- in memory (`data.cache: true`): every sequence decoded once into stacked tensors (`SequenceTable`),
  batches are index lookups: the right choice for CI-sized shard sets, and the only form the verdict uses;
- streaming (`cache: false`): a `torch.utils.data.IterableDataset` over the shards (worker processes,
  a seeded shuffle buffer), for shard sets that do not fit in memory.

The trainer checks its input before it trusts it: every shard's sha256 must match the manifest, a shard
that cannot be read stops the run (`ShardSetError`, naming the shard), and φ and φ_next are recomputed from
the tokens of every sample read (training and held-out, cached or streamed): the first mismatch stops the
run naming shard and key, because a verdict on corrupt alignment arrays would judge the wrong thing. A
sample whose members cannot be decoded (an image PIL cannot open, a broken array) is skipped and counted under
its reason (`DataCounts`), but only up to `smoke.data.max_undecodable_share` of the samples decoded: above it
the shards are refused (`UndecodableShards`, naming the count, the share and the first shard and key), since a
verdict on what is left of them would pass shards a real trainer cannot use. The share is judged before
training on every sample the first pass decodes: the whole set when cached; when streaming, the held-out
sample the verdict judges (documents by hash, read until `max_eval_sequences` are found). The training stream
judges again what each loader worker decoded, at the end of each of its epochs over its shards.

Packed rows (`mode: packed`) are split by document too: a row's held-out documents leave it (the training row
keeps the others, its φ renumbered to its remaining slots), and the verdict sees each held-out document as a
row of its own (the same computation as inside the row: attention never crosses a document); the held-out
documents packed again into rows of the shards' L feed the cross-document leak check (`SequenceTable.packed`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.canaries.shapes import is_canary_url
from schemas.shards import (
    METADATA,
    PACKED_MODE,
    SpecialTokens,
    canary_shard_paths,
    compute_phi,
    iter_tar_groups,
    join_path,
    loss_target_mask,
    manifest_path,
    parent_dir,
    read_manifest,
    sample_from_members,
    sha256_file,
    shard_paths,
)
from train_smoke.model import PackedRows


class ShardSetError(ValueError):
    """A shard set the trainer cannot use (no manifest, no samples, tokenizers that disagree, a checksum or a φ
    that does not match, an unreadable shard)."""


@dataclass
class ShardSet:
    """One shard set as the trainer sees it: where, how much it weighs, and what its ids mean."""

    source: str
    weight: float
    name: str
    special: SpecialTokens
    seq_len: int
    max_images: int
    vocab_size: int
    tokenizer_path: str
    tokenizer_sha256: str
    shards: list[str]
    checksums: dict[str, str] = field(default_factory=dict)  # shard path → sha256 the manifest lists
    mode: str = "chunked"  # the manifest's layout: chunked, random_window or packed
    canaries: bool = False  # the alignment canaries `m3w build` wrote beside the data (`canaries/`)

    @classmethod
    def open(cls, source: str, weight: float = 1.0, canaries: bool = False) -> ShardSet:
        """The data shards of `source`, or with `canaries` the canary shards its manifest lists apart (a set of
        their own, named `<set>:canaries`: trained with the same λ, judged apart)."""
        found = manifest_path(source)
        if found is None:
            raise ShardSetError(f"{source}: no manifest.json found (the shard set is incomplete or not m3w shards)")
        manifest = read_manifest(found)
        shards = canary_shard_paths(source) if canaries else shard_paths(source)
        if not shards:
            raise ShardSetError(f"{source}: the shard set lists no {'canary ' if canaries else ''}shard files")
        tok = manifest["tokenizer"]
        name = (source.rstrip("/").rsplit("/", 1)[-1] or source) + (":canaries" if canaries else "")
        base = parent_dir(found)
        canary_entries = (manifest.get("canaries") or {}).get("shards", [])
        listed = canary_entries if canaries else [*manifest["shards"], *canary_entries]  # a .tar of either folder
        checksums = {join_path(base, entry["file"]): str(entry["sha256"]) for entry in listed}
        return cls(source=source, weight=float(weight), name=name, special=SpecialTokens.from_manifest(manifest),
                   seq_len=int(manifest["seq_len"]), max_images=int(manifest["max_images"]),
                   vocab_size=int(tok["vocab_size"]), tokenizer_path=join_path(base, tok["file"]),
                   tokenizer_sha256=str(tok["sha256"]), shards=shards, checksums=checksums,
                   mode=str(manifest.get("mode") or "chunked"), canaries=canaries)

    def verify_checksums(self) -> None:
        """Every shard file must be listed in the manifest with the sha256 of its bytes."""
        for path in self.shards:
            expected = self.checksums.get(path)
            if expected is None:
                raise ShardSetError(f"{path}: shard file not listed in the manifest of {self.source}")
            try:
                actual = sha256_file(path)
            except OSError as error:
                raise ShardSetError(f"{path}: unreadable shard ({error})") from error
            if actual != expected:
                raise ShardSetError(f"{path}: sha256 {actual} does not match the manifest's {expected} "
                                    "(the shard changed after it was written)")


def open_shard_sets(sources: list[str], weights: list[float] | None, verify: bool = True) -> list[ShardSet]:
    """All sets must share one tokenizer: the model has one vocabulary. With `verify`, every shard's sha256 is
    checked against its manifest before anything is trained."""
    if weights is not None and len(weights) != len(sources):
        raise ShardSetError(f"{len(weights)} weights for {len(sources)} shard sets; give one λ per set")
    sets = []
    for source, weight in zip(sources, weights or [1.0] * len(sources)):
        with_canaries = bool(canary_shard_paths(source))
        if not with_canaries or shard_paths(source):  # a build whose own documents all dropped: canaries alone
            sets.append(ShardSet.open(source, float(weight)))
        if with_canaries:
            sets.append(ShardSet.open(source, float(weight), canaries=True))
    if len({s.tokenizer_sha256 for s in sets}) > 1:
        raise ShardSetError("the shard sets were built with different tokenizers; one smoke run needs one vocabulary")
    if not any(s.weight > 0 for s in sets):
        raise ShardSetError("every shard set has weight 0: nothing to train on")
    if verify:
        for shard_set in sets:
            shard_set.verify_checksums()
    names = Counter(s.name for s in sets)
    for index, s in enumerate(sets):
        if names[s.name] > 1:
            s.name = f"{s.name}#{index}"
    return sets


def held_out(doc_id: str, fraction: float) -> bool:
    """Deterministic document-level split (no seed: the same documents are held out whatever the run)."""
    return held_out_rank(doc_id) < fraction


def held_out_rank(doc_id: str) -> float:
    digest = hashlib.sha256(f"m3w-smoke-split\x00{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / float(1 << 64)


def decode_resized(data: bytes, size: int) -> np.ndarray:
    """Encoded image → uint8 [3, size, size]; JPEG decodes at a reduced scale first (much cheaper)."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), PILImage.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


@dataclass
class DecodedSequence:
    """One training sequence, cropped and decoded, as numpy arrays (what both feeding paths build)."""

    key: str
    doc_id: str
    url: str
    input_ids: np.ndarray  # int64 [L]
    attention_mask: np.ndarray  # bool [L]
    phi: np.ndarray  # int64 [L]
    phi_next: np.ndarray  # int64 [L]
    targets: np.ndarray  # bool [L]: token l is a next-token target
    images: list[np.ndarray]  # uint8 [3, S, S] per filled slot, in slot order
    # Packed rows only (None otherwise): int64 [L] document (1-based, 0 on padding) and position of each token,
    # int64 [n_images] document of each filled slot, and (doc_id, url) of each document in row order.
    doc_index: np.ndarray | None = None
    position_ids: np.ndarray | None = None
    slot_doc: np.ndarray | None = None
    documents: list[tuple[str, str]] | None = None

    @property
    def is_packed(self) -> bool:
        return self.doc_index is not None


NOT_IN_THIS_SPLIT = "not_in_this_split"  # read, but skipped before decoding (the other side of the split)
_OBJECT_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class DataCounts:
    """Sequences read per shard set, where they went, and why any was dropped (in = train + eval + drops);
    `undecodable` of them (among `decoded`: read and not skipped for the split) could not be decoded,
    the first one named in `first_undecodable`."""

    read: int = 0
    train: int = 0
    eval: int = 0
    dropped: Counter = field(default_factory=Counter)
    undecodable: int = 0
    first_undecodable: str | None = None

    @property
    def decoded(self) -> int:
        """Samples whose members were decoded (or tried): the base of the undecodable share."""
        return self.read - self.dropped[NOT_IN_THIS_SPLIT]

    @property
    def undecodable_share(self) -> float:
        return self.undecodable / self.decoded if self.decoded else 0.0

    def skip_undecodable(self, reason: str, shard: str, key: str, error: Exception) -> None:
        """Count a sample whose members cannot be decoded, under `reason:<exception type>`."""
        self.dropped[f"{reason}:{type(error).__name__}"] += 1
        self.undecodable += 1
        if self.first_undecodable is None:  # without object addresses (PIL names its BytesIO): reports stay byte-stable
            message = _OBJECT_ADDRESS.sub("", str(error).strip().split("\n", 1)[0])
            self.first_undecodable = f"{shard}: sample {key} ({type(error).__name__}: {message})"

    def as_dict(self) -> dict[str, Any]:
        return {"in": self.read, "train": self.train, "eval": self.eval, "dropped": dict(sorted(self.dropped.items())),
                "undecodable": {"samples": self.undecodable, "of": self.decoded,
                                "share": round(self.undecodable_share, 6), "first": self.first_undecodable}}


class UndecodableShards(ShardSetError):
    """More samples than `smoke.data.max_undecodable_share` cannot be decoded: the shards are refused."""


def check_undecodable(source: str, counts: DataCounts, max_share: float) -> None:
    """Refuse `source` when the share of undecodable samples among those decoded is above `max_share`."""
    if counts.undecodable_share > max_share:
        raise UndecodableShards(
            f"{source}: {counts.undecodable} of {counts.decoded} samples cannot be decoded "
            f"({counts.undecodable_share:.2%}, above smoke.data.max_undecodable_share {max_share:.2%}); "
            f"first: {counts.first_undecodable}")


class PhiMismatch(ShardSetError):
    """Stored φ or φ_next differ from what the tokens say: the shards are corrupt (never a skip)."""


def check_phi(key: str, shard: str, ids: np.ndarray, mask: np.ndarray, phi: np.ndarray, phi_next: np.ndarray,
              image_token: int, doc_index: np.ndarray | None = None) -> None:
    """Recompute φ and φ_next from the tokens (the contract's definition; per document in a packed row) and stop
    on the first mismatch."""
    want_phi, want_next = compute_phi(ids, image_token, mask, doc_index)
    for name, stored, wanted in (("phi", phi, want_phi), ("phi_next", phi_next, want_next)):
        wrong = np.flatnonzero(stored != wanted)
        if len(wrong):
            at = int(wrong[0])
            raise PhiMismatch(f"{shard}: sample {key}: stored {name} does not match the tokens at {len(wrong)} "
                              f"position(s), first at {at} (stored {int(stored[at])}, recomputed {int(wanted[at])})")


def decode_sample(key: str, members: dict[str, bytes], shard: str, special: SpecialTokens, image_size: int,
                  max_seq_len: int | None, verify_phi: bool = True) -> DecodedSequence:
    """Raw members → a `DecodedSequence` cropped to `max_seq_len` (a packed row whole: `cut_packed_row` cuts it at
    its document boundaries); raises (KeyError/ValueError/OSError) on a malformed sample and `PhiMismatch` when
    `verify_phi` and the stored φ arrays disagree with the tokens."""
    sample = sample_from_members(key, members, shard=shard)
    ids = sample.input_ids.astype(np.int64)
    mask = sample.attention_mask.astype(bool)
    phi = sample.phi.astype(np.int64)
    phi_next = sample.phi_next.astype(np.int64)
    doc_index = None if sample.doc_index is None else sample.doc_index.astype(np.int64)
    position_ids = None if sample.position_ids is None else sample.position_ids.astype(np.int64)
    if not (ids.shape == mask.shape == phi.shape == phi_next.shape) or ids.ndim != 1 or (
            doc_index is not None and not doc_index.shape == position_ids.shape == ids.shape):
        raise ValueError("arrays of different lengths")
    if verify_phi:
        check_phi(key, shard, ids, mask, phi, phi_next, special.image, doc_index)
    n_images = len(sample.image_bytes)
    if max_seq_len is not None and len(ids) > max_seq_len and doc_index is None:  # packed rows: cut_packed_row
        ids, mask, phi, phi_next = (a[:max_seq_len] for a in (ids, mask, phi, phi_next))
        # Slots are in <image> order: the crop keeps the images whose <image> token survived.
        n_images = min(n_images, int((ids[mask] == special.image).sum()))
        phi_next = np.where(phi_next > n_images, 0, phi_next)
    images = [decode_resized(data, image_size) for data in sample.image_bytes[:n_images]]
    targets = loss_target_mask(ids, mask, special.image, special.pad, doc_index)
    meta = sample.metadata
    packed = {}
    if doc_index is not None:
        packed = {"doc_index": doc_index, "position_ids": position_ids,
                  "slot_doc": doc_index[(ids == special.image) & mask][:n_images],
                  "documents": [(str(d["doc_id"]), str(d.get("url") or "")) for d in meta["documents"]]}
    return DecodedSequence(key=key, doc_id=str(meta.get("doc_id") or key), url=str(meta.get("url") or ""),
                           input_ids=ids, attention_mask=mask, phi=phi, phi_next=phi_next, targets=targets,
                           images=images, **packed)


def keep_documents(seq: DecodedSequence, keep: Any) -> DecodedSequence | None:
    """The packed row with only the documents whose doc_id `keep` accepts (None when none is): their tokens
    moved to the front in row order, their slots renumbered, φ and φ_next shifted with them."""
    numbers = [n for n, (doc_id, _) in enumerate(seq.documents, start=1) if keep(doc_id)
               and (seq.doc_index == n).any()]
    if len(numbers) == len(seq.documents):
        return seq
    if not numbers:
        return None
    return _assemble(seq.key, seq.doc_id, seq.url, [_document_part(seq, n) for n in numbers], len(seq.input_ids),
                     [seq.documents[n - 1] for n in numbers])


def cut_packed_row(seq: DecodedSequence, max_len: int | None) -> list[DecodedSequence]:
    """A packed row longer than `max_len` (`smoke.data.max_seq_len`) → consecutive rows of at most `max_len`
    positions, cut at document boundaries; a document longer than `max_len` is cropped to its first `max_len`
    tokens (its images past the crop left out), as an unpacked sequence is. No document is left out."""
    if max_len is None or len(seq.input_ids) <= max_len:
        return [seq]
    groups: list[list[tuple[int, DecodedSequence]]] = [[]]
    used = 0
    for number in range(1, len(seq.documents) + 1):
        if not (seq.doc_index == number).any():
            continue
        part = _crop_part(_document_part(seq, number), max_len)
        if groups[-1] and used + len(part.input_ids) > max_len:
            groups.append([])
            used = 0
        groups[-1].append((number, part))
        used += len(part.input_ids)
    return [_assemble(f"{seq.key}@{index}" if len(groups) > 1 else seq.key, seq.doc_id, seq.url,
                      [part for _, part in group], max_len, [seq.documents[number - 1] for number, _ in group])
            for index, group in enumerate(groups) if group]


def _crop_part(part: DecodedSequence, max_len: int) -> DecodedSequence:
    """A document part cropped to its first `max_len` tokens, with the images whose `<image>` token survives."""
    if len(part.input_ids) <= max_len:
        return part
    kept = int(part.phi[:max_len].max(initial=0))  # φ counts the document's images up to each position
    for name in ("input_ids", "attention_mask", "phi", "targets", "position_ids"):
        setattr(part, name, getattr(part, name)[:max_len])
    part.phi_next = np.where(part.phi_next[:max_len] > kept, 0, part.phi_next[:max_len])
    part.images = part.images[:kept]
    return part


def _assemble(key: str, doc_id: str, url: str, parts: list[DecodedSequence], length: int,
              documents: list[tuple[str, str]]) -> DecodedSequence:
    """Document parts (unpadded, φ counted from their own first slot) → one packed row of `length` positions."""
    out = DecodedSequence(key=key, doc_id=doc_id, url=url, input_ids=np.zeros(length, np.int64),
                          attention_mask=np.zeros(length, bool), phi=np.zeros(length, np.int64),
                          phi_next=np.zeros(length, np.int64), targets=np.zeros(length, bool), images=[],
                          doc_index=np.zeros(length, np.int64), position_ids=np.zeros(length, np.int64),
                          slot_doc=np.zeros(0, np.int64), documents=documents)
    start = 0
    for new_number, part in enumerate(parts, start=1):
        end = start + len(part.input_ids)
        shift = len(out.images)
        for name in ("input_ids", "attention_mask", "targets", "position_ids"):
            getattr(out, name)[start:end] = getattr(part, name)
        out.phi[start:end] = np.where(part.phi > 0, part.phi + shift, 0)
        out.phi_next[start:end] = np.where(part.phi_next > 0, part.phi_next + shift, 0)
        out.doc_index[start:end] = new_number
        out.images += part.images
        out.slot_doc = np.append(out.slot_doc, np.full(len(part.images), new_number, np.int64))
        start = end
    return out


def _document_part(seq: DecodedSequence, number: int) -> DecodedSequence:
    """Document `number` of a packed row as a sequence of its own, unpadded: φ counted from its first slot."""
    where = seq.doc_index == number
    slots = np.flatnonzero(seq.slot_doc == number)
    first = int(slots[0]) if len(slots) else 0
    doc_id, url = seq.documents[number - 1]
    return DecodedSequence(key=f"{seq.key}#{number}", doc_id=doc_id, url=url, input_ids=seq.input_ids[where],
                           attention_mask=seq.attention_mask[where],
                           phi=np.where(seq.phi[where] > 0, seq.phi[where] - first, 0),
                           phi_next=np.where(seq.phi_next[where] > 0, seq.phi_next[where] - first, 0),
                           targets=seq.targets[where], images=[seq.images[i] for i in slots],
                           position_ids=seq.position_ids[where])


def pack_documents(documents: list[DecodedSequence], length: int, max_images: int) -> list[DecodedSequence]:
    """Unpacked sequences (one document each, unpadded or right-padded) → packed rows of at most `length` tokens
    and `max_images` images, consecutive documents together: the rows the cross-document leak check needs."""
    rows: list[DecodedSequence] = []
    group: list[DecodedSequence] = []
    used = images = 0
    for document in documents:
        real = int(document.attention_mask.sum())
        part = DecodedSequence(key=document.key, doc_id=document.doc_id, url=document.url,
                               input_ids=document.input_ids[:real], attention_mask=document.attention_mask[:real],
                               phi=document.phi[:real], phi_next=document.phi_next[:real],
                               targets=document.targets[:real], images=document.images,
                               position_ids=np.arange(real))
        if group and (used + real > length or images + len(part.images) > max_images):
            rows.append(_assemble(group[0].key, group[0].doc_id, group[0].url, group, length,
                                  [(g.doc_id, g.url) for g in group]))
            group, used, images = [], 0, 0
        group.append(part)
        used += real
        images += len(part.images)
    if group:
        rows.append(_assemble(group[0].key, group[0].doc_id, group[0].url, group, length,
                              [(g.doc_id, g.url) for g in group]))
    return rows


def iter_decoded(shard_set: ShardSet, shards: list[str], image_size: int, max_seq_len: int | None,
                 counts: DataCounts, keep: Any = None, verify_phi: bool = True) -> Iterator[DecodedSequence]:
    """Decoded sequences of `shards` in stored order; `keep(doc_id)` filters before the (costly) decode.
    A shard that cannot be read to its end raises `ShardSetError`; a φ mismatch raises `PhiMismatch`."""
    for path in shards:
        for key, members in read_groups(path, counts):
            try:
                packed = shard_set.mode == PACKED_MODE  # split per document after decoding
                if keep is not None and not packed and not keep(_doc_id_of(key, members)):
                    counts.dropped[NOT_IN_THIS_SPLIT] += 1
                    continue
                decoded = decode_sample(key, members, path, shard_set.special, image_size, max_seq_len,
                                        verify_phi)
            except PhiMismatch:
                raise
            except Exception as error:  # noqa: BLE001 - a malformed sample is counted (and limited), not fatal
                counts.skip_undecodable("unreadable_sample", path, key, error)
                continue
            if decoded.is_packed:
                decoded = decoded if keep is None else keep_documents(decoded, keep)
                if decoded is None:
                    counts.dropped[NOT_IN_THIS_SPLIT] += 1
                    continue
                for part in cut_packed_row(decoded, max_seq_len):
                    if part.targets.any():
                        yield part
                    else:
                        counts.dropped["no_target"] += 1
                continue
            if not decoded.targets.any():
                counts.dropped["no_target"] += 1
                continue
            yield decoded


def read_groups(path: str, counts: DataCounts) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) of each sample of one shard, counted in `counts.read`; a tar that cannot be read to its end
    raises `ShardSetError` naming it (never a silent skip)."""
    groups = iter_tar_groups(path)
    while True:
        try:
            key, members = next(groups)
        except StopIteration:
            return
        except Exception as error:  # a truncated or corrupt tar
            raise ShardSetError(f"{path}: unreadable shard after {counts.read} samples "
                                f"({type(error).__name__}: {error})") from error
        counts.read += 1
        yield key, members


def _doc_id_of(key: str, members: dict[str, bytes]) -> str:
    import json

    return str(json.loads(members[METADATA].decode("utf-8")).get("doc_id") or key)


# ----------------------------------------------------------------------------------------- in-memory tables


@dataclass
class Batch:
    """A batch on one device. `slots`/`filled` describe image slots; `images` is uint8 [B, N, 3, S, S]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    phi: torch.Tensor
    phi_next: torch.Tensor
    targets: torch.Tensor
    images: torch.Tensor
    filled: torch.Tensor
    doc_index: torch.Tensor | None = None  # packed rows: [B, L] document of each token (0 on padding)
    position_ids: torch.Tensor | None = None  # packed rows: [B, L] position within its document
    slot_doc: torch.Tensor | None = None  # packed rows: [B, N] document of each image slot (0 when empty)

    def _map(self, change) -> Batch:
        return Batch(**{name: None if getattr(self, name) is None else change(getattr(self, name))
                        for name in self.__dataclass_fields__})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        return self._map(lambda tensor: tensor.pin_memory())

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def packing(self) -> PackedRows | None:
        """What the model needs to keep the documents of packed rows apart (None: one document a row)."""
        if self.doc_index is None:
            return None
        return PackedRows(self.doc_index, self.position_ids, self.slot_doc)


def _stack_padded(sequences: list[DecodedSequence], name: str, dtype: torch.dtype) -> torch.Tensor:
    """One per-token field of every sequence → [len(sequences), longest] tensor, zero-padded on the right."""
    out = torch.zeros(len(sequences), max(len(s.input_ids) for s in sequences), dtype=dtype)
    for row, s in enumerate(sequences):
        values = getattr(s, name)
        out[row, : len(values)] = torch.from_numpy(np.asarray(values))
    return out


def _stack_packing(sequences: list[DecodedSequence], max_images: int
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(doc_index, position_ids, slot_doc) of packed sequences as tensors; Nones for unpacked ones."""
    if not sequences[0].is_packed:
        return None, None, None
    slot_doc = torch.zeros(len(sequences), max_images, dtype=torch.long)
    for row, s in enumerate(sequences):
        filled = s.slot_doc[:max_images]
        slot_doc[row, : len(filled)] = torch.from_numpy(filled)
    return (_stack_padded(sequences, "doc_index", torch.long), _stack_padded(sequences, "position_ids", torch.long),
            slot_doc)


class SequenceTable:
    """Decoded sequences of one shard set stacked into tensors; images in one pool addressed by `slots`.

    The pool makes the verdict's ablations cheap and exact: shuffling images across documents or permuting
    them within a sequence only rewrites `slots`. The held-out table of a packed shard set keeps its documents
    packed again into rows in `packed` (for the cross-document leak check).
    """

    packed: SequenceTable | None = None

    def __init__(self, sequences: list[DecodedSequence], max_images: int, image_size: int):
        if not sequences:
            raise ShardSetError("no sequences")
        stack = functools.partial(_stack_padded, sequences)

        self.input_ids = stack("input_ids", torch.long)
        self.attention_mask = stack("attention_mask", torch.bool)
        self.phi = stack("phi", torch.long)
        self.phi_next = stack("phi_next", torch.long)
        self.targets = stack("targets", torch.bool)
        self.doc_index, self.position_ids, self.slot_doc = _stack_packing(sequences, max_images)
        self.max_images = max_images
        self.slots = torch.full((len(sequences), max_images), -1, dtype=torch.long)
        pool: list[np.ndarray] = []
        for row, s in enumerate(sequences):
            for slot, image in enumerate(s.images[:max_images]):
                self.slots[row, slot] = len(pool)
                pool.append(image)
        self.images = (torch.from_numpy(np.stack(pool)) if pool
                       else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8))
        self.keys = [s.key for s in sequences]
        self.doc_ids = [s.doc_id for s in sequences]
        self.urls = [s.url for s in sequences]
        self.is_canary = torch.tensor([is_canary_url(s.url) for s in sequences], dtype=torch.bool)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def subset(self, rows: list[int]) -> SequenceTable:
        """The given rows as a table of their own (sharing the image pool)."""
        index = torch.tensor(rows, dtype=torch.long)
        out = object.__new__(SequenceTable)
        for name in ("input_ids", "attention_mask", "phi", "phi_next", "targets", "slots", "is_canary", "doc_index",
                     "position_ids", "slot_doc"):
            value = getattr(self, name)
            setattr(out, name, None if value is None else value[index])
        out.images, out.max_images = self.images, self.max_images
        for name in ("keys", "doc_ids", "urls"):
            setattr(out, name, [getattr(self, name)[i] for i in rows])
        return out

    def batch(self, rows: torch.Tensor, slots: torch.Tensor | None = None, phi: torch.Tensor | None = None) -> Batch:
        """Rows → a Batch; `slots` (same shape as self.slots[rows]) and `phi` replace the stored ones (ablations)."""
        slots = self.slots[rows] if slots is None else slots
        filled = slots >= 0
        images = torch.zeros(*slots.shape, *self.images.shape[1:], dtype=torch.uint8)
        if filled.any():
            images[filled] = self.images[slots[filled]]
        packing = {name: None if getattr(self, name) is None else getattr(self, name)[rows]
                   for name in ("doc_index", "position_ids", "slot_doc")}
        return Batch(input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
                     phi=self.phi[rows] if phi is None else phi, phi_next=self.phi_next[rows],
                     targets=self.targets[rows], images=images, filled=filled, **packing)


def load_tables(shard_set: ShardSet, image_size: int, max_seq_len: int | None, eval_fraction: float,
                max_eval: int, max_train: int | None, load_train: bool = True, verify_phi: bool = True,
                max_undecodable_share: float = 1.0
                ) -> tuple[SequenceTable | None, SequenceTable | None, DataCounts]:
    """(train table or None, eval table or None, counts): one pass over the shards, split by document.

    With `load_train` False (streaming) only held-out sequences are decoded, and reading stops once
    `max_eval` of them are found, so a large shard set is not read in full before training starts.
    More undecodable samples than `max_undecodable_share` of those decoded raise `UndecodableShards`.
    """
    counts = DataCounts()
    keep = None if load_train else (lambda doc_id: held_out(doc_id, eval_fraction))
    sequences = iter_decoded(shard_set, shard_set.shards, image_size, max_seq_len, counts, keep=keep,
                             verify_phi=verify_phi)
    sequences = split_packed_rows(sequences, eval_fraction)
    train, held = split_sequences(sequences, counts, eval_fraction, max_eval, max_train, stop_when_held=not load_train)
    check_undecodable(shard_set.source, counts, max_undecodable_share)
    n_slots = shard_set.max_images
    train_table = SequenceTable(train, n_slots, image_size) if train else None
    eval_table = SequenceTable(held, n_slots, image_size) if held else None
    if eval_table is not None and shard_set.mode == PACKED_MODE:  # the held-out documents packed again, as rows
        eval_table.packed = SequenceTable(pack_documents(held, shard_set.seq_len, n_slots), n_slots, image_size)
    return train_table, eval_table, counts


def split_packed_rows(sequences: Iterator[DecodedSequence], eval_fraction: float) -> Iterator[DecodedSequence]:
    """Packed rows split by document: the row of its training documents (named after its first, so it stays on
    the training side) and each held-out document as a sequence of its own (the verdict judges documents).
    Unpacked sequences pass unchanged."""
    for seq in sequences:
        if not seq.is_packed:
            yield seq
            continue
        for number, (doc_id, _) in enumerate(seq.documents, start=1):
            if held_out(doc_id, eval_fraction) and (seq.doc_index == number).any():
                document = _document_part(seq, number)
                document.position_ids = None
                yield document
        training = keep_documents(seq, lambda doc_id: not held_out(doc_id, eval_fraction))
        if training is not None:
            training.doc_id, training.url = training.documents[0]
            yield training


def split_sequences(sequences: Iterator[DecodedSequence], counts: DataCounts, eval_fraction: float, max_eval: int,
                    max_train: int | None, stop_when_held: bool = False
                    ) -> tuple[list[DecodedSequence], list[DecodedSequence]]:
    """(training, held-out) sequences by document hash; held-out capped at `max_eval` (lowest hashes), training
    at `max_train`, both counted. `stop_when_held` stops reading once `max_eval` held-out sequences are found."""
    train: list[DecodedSequence] = []
    held: list[DecodedSequence] = []
    for seq in sequences:
        if held_out(seq.doc_id, eval_fraction):
            held.append(seq)
            if stop_when_held and len(held) >= max_eval:
                break  # streaming: the held-out sample is complete; no need to read every shard for it
        elif max_train is None or len(train) < max_train:
            train.append(seq)
        else:
            counts.dropped["over_max_train_sequences"] += 1
    held.sort(key=lambda s: (held_out_rank(s.doc_id), s.key))
    if len(held) > max_eval:
        counts.dropped["over_max_eval_sequences"] += len(held) - max_eval
        held = held[:max_eval]
    held.sort(key=lambda s: s.key)
    counts.train, counts.eval = len(train), len(held)
    return train, held


class TableBatches:
    """Endless seeded batches from an in-memory table (a fresh permutation each epoch)."""

    def __init__(self, table: SequenceTable, batch_size: int, seed: int):
        self.table = table
        self.batch_size = min(batch_size, len(table))
        self.generator = torch.Generator().manual_seed(seed)
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self._cursor + self.batch_size > len(self._order):
            self._order = torch.randperm(len(self.table), generator=self.generator)
            self._cursor = 0
        rows = self._order[self._cursor: self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.table.batch(rows)


# --------------------------------------------------------------------------------------------------- streaming


def collate(items: list[DecodedSequence], max_images: int, image_size: int) -> Batch:
    b = len(items)
    stack = functools.partial(_stack_padded, items)

    images = torch.zeros(b, max_images, 3, image_size, image_size, dtype=torch.uint8)
    filled = torch.zeros(b, max_images, dtype=torch.bool)
    for row, s in enumerate(items):
        for slot, image in enumerate(s.images[:max_images]):
            images[row, slot] = torch.from_numpy(image)
            filled[row, slot] = True
    doc_index, position_ids, slot_doc = _stack_packing(items, max_images)
    return Batch(input_ids=stack("input_ids", torch.long), attention_mask=stack("attention_mask", torch.bool),
                 phi=stack("phi", torch.long), phi_next=stack("phi_next", torch.long),
                 targets=stack("targets", torch.bool), images=images, filled=filled, doc_index=doc_index,
                 position_ids=position_ids, slot_doc=slot_doc)


class StreamingSequences(torch.utils.data.IterableDataset):
    """Training sequences straight from the shards: shards split over DataLoader workers, a seeded shuffle
    buffer, endless epochs (each with its own shard order). Held-out documents are skipped before decoding.
    At the end of each epoch the undecodable share of what this worker decoded so far is judged against
    `max_undecodable_share` (`UndecodableShards`)."""

    def __init__(self, shard_set: ShardSet, image_size: int, max_seq_len: int | None, eval_fraction: float,
                 shuffle_buffer: int, seed: int, verify_phi: bool = True, max_undecodable_share: float = 1.0):
        super().__init__()
        self.verify_phi = verify_phi
        self.max_undecodable_share = max_undecodable_share
        self.shard_set = shard_set
        self.image_size = image_size
        self.max_seq_len = max_seq_len
        self.eval_fraction = eval_fraction
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.seed = seed
        self.counts = DataCounts()  # of the main process only when workers are used

    def __iter__(self) -> Iterator[DecodedSequence]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = 0
        while True:
            rng = random.Random(f"{self.seed}:{epoch}:{worker}")
            shards = list(self.shard_set.shards)
            random.Random(f"{self.seed}:{epoch}").shuffle(shards)
            mine = shards[worker::workers] or shards[worker % len(shards)::len(shards)]
            buffer: list[DecodedSequence] = []
            produced = 0
            for seq in iter_decoded(self.shard_set, mine, self.image_size, self.max_seq_len, self.counts,
                                    keep=lambda doc_id: not held_out(doc_id, self.eval_fraction),
                                    verify_phi=self.verify_phi):
                produced += 1
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(seq)
                    continue
                index = rng.randrange(len(buffer))
                yield buffer[index]
                buffer[index] = seq
            where = f" (loader worker {worker})" if info else ""
            check_undecodable(f"{self.shard_set.source}{where}", self.counts, self.max_undecodable_share)
            rng.shuffle(buffer)
            yield from buffer
            if produced == 0:
                raise ShardSetError(f"{self.shard_set.source}: no training sequences left after the held-out split")
            epoch += 1


def streaming_batches(shard_set: ShardSet, image_size: int, max_seq_len: int | None, eval_fraction: float,
                      batch_size: int, shuffle_buffer: int, seed: int, num_workers: int, prefetch_factor: int,
                      pin_memory: bool, verify_phi: bool = True, max_undecodable_share: float = 1.0
                      ) -> Iterator[Batch]:
    dataset = StreamingSequences(shard_set, image_size, max_seq_len, eval_fraction, shuffle_buffer, seed, verify_phi,
                                 max_undecodable_share)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
        collate_fn=functools.partial(collate, max_images=shard_set.max_images, image_size=image_size),
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        worker_init_fn=_seed_worker,
    )
    return iter(loader)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % (1 << 32)
    np.random.seed(seed)
    random.seed(seed)
