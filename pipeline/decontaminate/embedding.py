"""Optional: benchmark copies found by an image embedding, for users who have an open_clip checkpoint locally.

An embedding sees past edits no hash survives (a heavy crop, a colour grade, an overlaid caption), but it also
finds *similar* pictures that are not copies: two photographs of the same scene, or, on the sample crawl, crops
of one photograph under different colour fields. So it adds matches to the hashes' (`decontaminate.embedding`,
off by default), and its threshold is the user's to set on their own data (docs/decontaminate.md).

The checkpoint is local: a weights file with its open_clip architecture's name (`open_clip_arch`), loaded as the
smoke trainer's open_clip tower is (`train_smoke/model.py`), or a folder as OpenCLIP's Hugging Face repositories
hold one (`open_clip_config.json` beside the weights), whose config names the architecture and the picture
preprocessing. Nothing is downloaded. Everything a run needs is checked before it starts (`check_embedding`):
the `open_clip_torch` package, the checkpoint and the architecture, and that the one fits the other.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field, PositiveInt

from pipeline.config import ConfigError, Section

KEY = "decontaminate.embedding"
FOLDER_CONFIG = "open_clip_config.json"  # what makes a folder an open_clip checkpoint (`local-dir:` in open_clip)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # the weight files open_clip looks for in such a folder


@dataclass(frozen=True)
class EmbeddingSettings(Section):
    """`decontaminate.embedding`: an open_clip image tower from a local checkpoint, and its threshold."""

    checkpoint: str | None
    open_clip_arch: str | None
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)]
    batch_size: PositiveInt
    threads: PositiveInt

    @property
    def enabled(self) -> bool:
        return bool(self.checkpoint)


def import_open_clip() -> Any:
    """The `open_clip` module, or a `ConfigError` saying why it cannot be used."""
    try:
        import open_clip
    except ImportError as error:
        raise ConfigError(f"{KEY}.checkpoint needs the open_clip_torch package (pip install open_clip_torch); "
                          "set it to null to compare hashes only") from error
    except Exception as error:  # installed but broken: torchvision's operators built for another torch
        import torch

        raise ConfigError(f"{KEY}.checkpoint: open_clip_torch is installed but does not import "
                          f"({type(error).__name__}: {error}); torchvision must be the build made for this "
                          f"torch ({torch.__version__}): docs/decontaminate.md") from error
    return open_clip


def _model_source(settings: EmbeddingSettings) -> tuple[str, str | None]:
    """(open_clip model name, weights file) of the settings, refused in one line when either is missing."""
    checkpoint = os.path.abspath(settings.checkpoint or "")  # absolute: never read as a pretrained tag's name
    if os.path.isdir(checkpoint):
        if not os.path.isfile(os.path.join(checkpoint, FOLDER_CONFIG)):
            raise FileNotFoundError(f"{KEY}.checkpoint: the folder {settings.checkpoint} has no {FOLDER_CONFIG} "
                                    "(an open_clip checkpoint folder holds it beside the weights)")
        if not any(name.endswith(WEIGHT_SUFFIXES) for name in os.listdir(checkpoint)):
            raise FileNotFoundError(f"{KEY}.checkpoint: the folder {settings.checkpoint} has no weights file "
                                    f"({', '.join(WEIGHT_SUFFIXES)})")
        if settings.open_clip_arch:
            raise ConfigError(f"{KEY}.open_clip_arch: set it to null for a checkpoint folder: its {FOLDER_CONFIG} "
                              "names the architecture")
        return f"local-dir:{checkpoint}", None
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{KEY}.checkpoint: no file or folder {settings.checkpoint}")
    if not settings.open_clip_arch:
        raise ConfigError(f"{KEY}.checkpoint needs {KEY}.open_clip_arch (the checkpoint's architecture, "
                          f"e.g. ViT-B-32), or a checkpoint folder with its {FOLDER_CONFIG}")
    return settings.open_clip_arch, checkpoint


@functools.lru_cache(maxsize=1)
def _load(name: str, weights: str | None, described: str, stamp: tuple) -> tuple[Any, Any]:
    """(model in eval mode, its evaluation transform), once per process while the checkpoint is unchanged
    (`stamp`); `described`: the checkpoint, as a refusal names it."""
    open_clip = import_open_clip()
    try:
        model = open_clip.create_model(name, pretrained=weights, require_pretrained=True).eval()
    except Exception as error:  # weights that do not fit the architecture, a file that is no checkpoint...
        said = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])  # torch's first mismatch
        raise ConfigError(f"{KEY}: open_clip cannot load {described}: {type(error).__name__}: {said[:400]}"
                          ) from error
    config = model.visual.preprocess_cfg
    transform = open_clip.image_transform(config["size"], is_train=False, mean=config["mean"], std=config["std"],
                                          interpolation=config["interpolation"],
                                          resize_mode=config["resize_mode"], fill_color=config["fill_color"])
    return model, transform


def _stamp(path: str) -> tuple:
    """The (name, size, time) of the file, or of every file in the folder: what says it is the same one."""
    paths = sorted(os.path.join(path, name) for name in os.listdir(path)) if os.path.isdir(path) else [path]
    return tuple((item, os.stat(item).st_size, os.stat(item).st_mtime) for item in paths)


def check_embedding(settings: EmbeddingSettings) -> None:
    """Refuse, before anything runs, an embedding the workers could not load: open_clip missing or broken, no
    checkpoint, no architecture, or weights that do not fit it (the model loaded here is kept for this process).
    """
    open_clip = import_open_clip()
    name, weights = _model_source(settings)
    if weights is not None and name.replace("/", "-") not in open_clip.list_models():
        raise ConfigError(f"{KEY}.open_clip_arch: open_clip has no architecture {name!r} "
                          "(open_clip.list_models() lists them)")
    PictureEmbedder(settings)


class PictureEmbedder:
    """Unit-length open_clip image embeddings of encoded pictures, preprocessed as the checkpoint expects."""

    def __init__(self, settings: EmbeddingSettings):
        name, weights = _model_source(settings)
        described = (f"{settings.checkpoint} as {name}" if weights else
                     f"the folder {settings.checkpoint} with its {FOLDER_CONFIG}")
        self.model, self.transform = _load(name, weights, described, _stamp(weights or name.split(":", 1)[1]))
        self.batch_size = settings.batch_size
        import torch

        torch.set_num_threads(settings.threads)

    def _pixels(self, data: bytes) -> Any:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as picture:
                return self.transform(picture.convert("RGB"))
        except Exception as error:  # Pillow raises many types (OSError, DecompressionBombError, SyntaxError...)
            raise ValueError(f"undecodable picture: {type(error).__name__}: {error}") from error

    def embed(self, pictures: Sequence[bytes]) -> np.ndarray:
        """(n, d) float32 unit vectors; raises `ValueError` for bytes that do not decode."""
        import torch

        vectors = []
        for start in range(0, len(pictures), self.batch_size):
            batch = torch.stack([self._pixels(data) for data in pictures[start:start + self.batch_size]])
            with torch.no_grad():
                features = self.model.encode_image(batch).float().numpy()
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
