"""Optional: benchmark copies found by an image embedding, for users who have an open_clip checkpoint locally.

An embedding sees past edits no hash survives (a heavy crop, a colour grade, an overlaid caption), but it also
finds *similar* pictures that are not copies: two photographs of the same scene, or, on the sample crawl, crops
of one photograph under different colour fields. So it adds matches to the hashes' (`decontaminate.embedding`,
off by default), and its threshold is the user's to set on their own data (docs/decontaminate.md). The
checkpoint is a local file, loaded as the smoke trainer's open_clip tower is (`train_smoke/model.py`); nothing
is downloaded, and without the `open_clip_torch` package the setting is refused before anything runs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field, PositiveInt

from pipeline.config import Section

# OpenAI CLIP's normalisation, the default of open_clip's pretrained towers
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EmbeddingSettings(Section):
    """`decontaminate.embedding`: an open_clip image tower from a local checkpoint, and its threshold."""

    checkpoint: str | None
    open_clip_arch: str | None
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)]
    batch_size: PositiveInt

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoint)


class PictureEmbedder:
    """Unit-length open_clip image embeddings of encoded pictures."""

    def __init__(self, settings: EmbeddingSettings):
        try:
            import open_clip
            import torch
        except ImportError as error:
            raise ValueError("decontaminate.embedding.checkpoint needs the open_clip_torch package "
                             "(pip install open_clip_torch); set it to null to compare hashes only") from error
        if not settings.open_clip_arch:
            raise ValueError("decontaminate.embedding.checkpoint needs decontaminate.embedding.open_clip_arch "
                             "(the checkpoint's architecture, e.g. ViT-B-32)")
        if not os.path.exists(settings.checkpoint or ""):
            raise FileNotFoundError(f"decontaminate.embedding.checkpoint: no file {settings.checkpoint}")
        self.torch = torch
        self.model = open_clip.create_model(settings.open_clip_arch, pretrained=settings.checkpoint).eval()
        size = self.model.visual.image_size
        self.size = int(size[0] if isinstance(size, tuple | list) else size)
        config = getattr(self.model.visual, "preprocess_cfg", None) or {}
        self.mean = np.array(config.get("mean", CLIP_MEAN), dtype=np.float32)[:, None, None]
        self.std = np.array(config.get("std", CLIP_STD), dtype=np.float32)[:, None, None]
        self.batch_size = settings.batch_size

    def _pixels(self, data: bytes) -> np.ndarray:
        from PIL import Image, ImageOps

        with Image.open(io.BytesIO(data)) as picture:
            square = ImageOps.fit(picture.convert("RGB"), (self.size, self.size), Image.Resampling.BICUBIC)
        return (np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 255.0 - self.mean) / self.std

    def embed(self, pictures: Sequence[bytes]) -> np.ndarray:
        """(n, d) float32 unit vectors; raises `ValueError` (from the decoder) for bytes that do not decode."""
        vectors = []
        for start in range(0, len(pictures), self.batch_size):
            batch = np.stack([self._pixels(data) for data in pictures[start:start + self.batch_size]])
            with self.torch.no_grad():
                features = self.model.encode_image(self.torch.from_numpy(batch)).float().numpy()
            vectors.append(features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12))
        return np.concatenate(vectors) if vectors else np.empty((0, 0), dtype=np.float32)


class EmbeddingIndex:
    """Benchmark embeddings, searched exhaustively: one matrix-vector product per training picture (float32 for
    BLAS: 100,000 benchmark pictures of a 512-wide tower take 205 MB on every worker)."""

    def __init__(self, vectors: np.ndarray, items: np.ndarray, min_similarity: float):
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.items = np.asarray(items, dtype=np.int64)
        self.min_similarity = min_similarity

    def __len__(self) -> int:
        return len(self.items)

    def match(self, vector: np.ndarray) -> tuple[int, float] | None:
        """(item, cosine similarity) of the most similar benchmark picture at or above the threshold, or None."""
        if not len(self):
            return None
        similarity = self.vectors @ np.asarray(vector, dtype=np.float32)
        best = int(np.argmax(similarity))
        if similarity[best] < self.min_similarity:
            return None
        return int(self.items[best]), round(float(similarity[best]), 4)
