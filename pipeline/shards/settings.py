"""The typed `shards` config section, shared by the window cutter, the tokenizer step and the shard writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from pipeline.config import ConfigError, Section, Share

ResizeMode = Literal["center_crop", "pad", "stretch"]
ImageFormat = Literal["jpeg", "webp"]
DocsParquetImages = Literal["bytes", "references", "none"]
HeightWidth = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


@dataclass(frozen=True)
class ShardSettings(Section):
    """The `shards` section: training sequences, image slots, shard sizes and the tokenizer (pipeline/defaults.yaml)."""

    seq_len: Annotated[int, Field(ge=2)]  # one input and one target at least
    max_images: Annotated[int, Field(ge=1, le=255)]
    image_size: PositiveInt | HeightWidth
    resize_mode: ResizeMode
    image_format: ImageFormat
    image_quality: Annotated[int, Field(ge=1, le=100)]
    random_window: bool
    packing: bool
    packing_max_images: Annotated[int, Field(ge=1, le=255)]
    packing_buffer: PositiveInt
    seed: NonNegativeInt
    min_images_per_sequence: NonNegativeInt
    target_shard_bytes: PositiveInt
    num_shards: PositiveInt | None
    tokenizer: str | None
    eos_token: str | None
    bpe_vocab_size: PositiveInt
    bpe_min_frequency: NonNegativeInt
    bpe_sample_rate: Share
    bpe_max_documents: PositiveInt
    bpe_max_chars_per_document: PositiveInt
    docs_parquet_images: DocsParquetImages

    def __post_init__(self) -> None:
        if self.packing and self.random_window:
            raise ConfigError("config keys 'shards.packing' and 'shards.random_window' exclude each other: packed rows "
                              "hold whole windows of chunked documents (set one of them to false)")
        if self.packing and self.packing_max_images < self.max_images:
            raise ConfigError(f"config key 'shards.packing_max_images': a packed row must hold a window's images: "
                              f"expected at least shards.max_images ({self.max_images}); got {self.packing_max_images}")
