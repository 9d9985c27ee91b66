"""The typed `shards` config section, shared by the window cutter, the tokenizer step and the shard writer."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Section


@dataclass(frozen=True)
class ShardSettings(Section):
    """The `shards` section: training sequences, image slots, shard sizes and the tokenizer (pipeline/defaults.yaml)."""

    seq_len: int
    max_images: int
    image_size: int | list[int]
    resize_mode: str
    image_format: str
    image_quality: int
    random_window: bool
    seed: int
    min_images_per_sequence: int
    target_shard_bytes: int
    num_shards: int | None
    tokenizer: str | None
    eos_token: str | None
    bpe_vocab_size: int
    bpe_min_frequency: int
    bpe_sample_rate: float
    bpe_max_documents: int
    bpe_max_chars_per_document: int
    docs_parquet_images: str
