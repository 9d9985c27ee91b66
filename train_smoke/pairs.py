"""Image-text pairs (`m3w export pairs`) as a dataset of the smoke trainer's mixture, as Flamingo mixes them.

Flamingo trains on a λ-weighted mixture of interleaved pages and image-text pairs. A pair becomes the sequence
OpenFlamingo's LAION loader builds, `<image> caption <EOC> <eos>`, tokenized with the interleaved shard sets'
tokenizer (the model has one vocabulary) and cut to `smoke.data.pair_max_tokens` text tokens (OpenFlamingo:
32); φ, φ_next and the loss targets follow the M3W contract like any shard sequence. Pairs are split into
training and held-out parts by their document id, as shard sequences are, and always held in memory.

A pair set is recognised by its manifest's format; its shards' sha256 must match the manifest. A pair whose
members cannot be read is skipped and counted (`DataCounts`), up to `smoke.data.max_undecodable_share` of
the pairs (above it the set is refused, as shard sets are); an unreadable shard stops the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from schemas.shards import (
    SpecialTokens,
    compute_phi,
    join_path,
    loss_target_mask,
    manifest_path,
    parent_dir,
    read_manifest,
    sha256_file,
)
from train_smoke.data import (
    DataCounts,
    DecodedSequence,
    SequenceTable,
    ShardSetError,
    check_undecodable,
    decode_resized,
    read_groups,
    split_sequences,
)

PAIRS_FORMAT = "m3w-export-pairs"  # manifest format written by `m3w export pairs` (pipeline/export/writer.py)
IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")


def is_pair_set(source: str) -> bool:
    """True when `source` (a directory or its manifest.json) is an `m3w export pairs` output."""
    found = manifest_path(source)
    return found is not None and read_manifest(found).get("format") == PAIRS_FORMAT


@dataclass
class PairSet:
    """One pair export as the trainer sees it (one image slot per sequence)."""

    source: str
    weight: float
    name: str
    shards: list[str]
    checksums: dict[str, str] = field(default_factory=dict)
    max_images: int = 1

    @classmethod
    def open(cls, source: str, weight: float = 1.0) -> PairSet:
        found = manifest_path(source)
        manifest = read_manifest(found) if found else {}
        if manifest.get("format") != PAIRS_FORMAT:
            raise ShardSetError(f"{source}: not an `m3w export pairs` output (no manifest of format {PAIRS_FORMAT})")
        base = parent_dir(found)
        checksums = {join_path(base, entry["file"]): str(entry["sha256"]) for entry in manifest["shards"]}
        if not checksums:
            raise ShardSetError(f"{source}: the pair set lists no shard files")
        name = source.rstrip("/").rsplit("/", 1)[-1] or source
        return cls(source=source, weight=float(weight), name=name, shards=sorted(checksums), checksums=checksums)

    def verify_checksums(self) -> None:
        for path, expected in self.checksums.items():
            try:
                actual = sha256_file(path)
            except OSError as error:
                raise ShardSetError(f"{path}: unreadable pair shard ({error})") from error
            if actual != expected:
                raise ShardSetError(f"{path}: sha256 {actual} does not match the manifest's {expected}")


def pair_sequence(key: str, members: dict[str, bytes], tokenizer, special: SpecialTokens, image_size: int,
                  max_text_tokens: int) -> DecodedSequence:
    """One pair's members → `<image> text <EOC> <eos>` with its φ arrays, targets and image; raises on bad members."""
    meta = json.loads(members["json"].decode("utf-8"))
    image = next(members[ext] for ext in IMAGE_MEMBERS if ext in members)
    text_ids = tokenizer.encode(members["txt"].decode("utf-8"), add_special_tokens=False).ids[:max_text_tokens]
    ids = np.array([special.image, *text_ids, special.eoc, special.eos], dtype=np.int64)
    mask = np.ones(len(ids), dtype=bool)
    phi, phi_next = compute_phi(ids, special.image, mask)
    return DecodedSequence(key=key, doc_id=str(meta.get("doc_id") or key), url=str(meta.get("page_url") or ""),
                           input_ids=ids, attention_mask=mask, phi=phi.astype(np.int64),
                           phi_next=phi_next.astype(np.int64),
                           targets=loss_target_mask(ids, mask, special.image, special.pad),
                           images=[decode_resized(image, image_size)])


def iter_pairs(pair_set: PairSet, tokenizer, special: SpecialTokens, image_size: int, max_text_tokens: int,
               counts: DataCounts) -> Iterator[DecodedSequence]:
    for path in pair_set.shards:
        for key, members in read_groups(path, counts):
            try:
                yield pair_sequence(key, members, tokenizer, special, image_size, max_text_tokens)
            except Exception as error:  # noqa: BLE001 - a malformed pair is counted (and limited), not fatal
                counts.skip_undecodable("unreadable_pair", path, key, error)


def load_pair_tables(pair_set: PairSet, tokenizer, special: SpecialTokens, image_size: int, max_text_tokens: int,
                     eval_fraction: float, max_eval: int, max_train: int | None, max_undecodable_share: float = 1.0
                     ) -> tuple[SequenceTable | None, SequenceTable | None, DataCounts]:
    """(train table, held-out table, counts) of a pair set, split by document like the shard sets."""
    pair_set.verify_checksums()
    counts = DataCounts()
    pairs = iter_pairs(pair_set, tokenizer, special, image_size, max_text_tokens, counts)
    train, held = split_sequences(pairs, counts, eval_fraction, max_eval, max_train)
    check_undecodable(pair_set.source, counts, max_undecodable_share)
    return (SequenceTable(train, 1, image_size) if train else None,
            SequenceTable(held, 1, image_size) if held else None, counts)
