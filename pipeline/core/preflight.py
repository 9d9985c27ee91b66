"""Loading every heavy dependency once in the driver, before a pipeline starts.

A broken install (pip resolving lxml without `lxml_html_clean`, a scipy that does not import, a model
file that is not there) otherwise shows only inside the workers, after a full read, and a lenient
stage could even turn it into a drop per item. Here it fails in seconds with the dependency named.
The DoFns load the same things again in `setup()`, on every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from filters.images import NsfwSettings
from pipeline.core.failures import preload

Loader = tuple[str, Callable[[], Any]]


def load_extractor() -> None:
    """trafilatura with its jusText fallback, which needs lxml's html cleaner (`lxml_html_clean`)."""
    import trafilatura  # noqa: F401
    import trafilatura.external  # noqa: F401  - imports justext → lxml.html.clean → lxml_html_clean


def load_language_model(section: dict[str, Any]) -> None:
    from filters.language import LanguageIdentifier

    LanguageIdentifier(section["model"], section["top_k"]).predict("a sentence to load the model")


def load_image_hashing() -> None:
    """imagehash imports scipy only when pHash first runs: run it once on a tiny picture."""
    import imagehash
    from PIL import Image

    imagehash.phash(Image.new("L", (32, 32)))


def load_downloader() -> None:
    import img2dataset  # noqa: F401


def load_nsfw(settings: NsfwSettings) -> None:
    from filters.nsfw import NsfwScorer

    NsfwScorer.from_config(settings)


IMAGE_HASHING: Loader = ("imagehash (pHash, with scipy)", load_image_hashing)


def download_loaders(nsfw: NsfwSettings) -> list[Loader]:
    """What fetching and checking images needs (`images`): img2dataset, the NSFW model when enabled, imagehash."""
    loaders: list[Loader] = [("img2dataset", load_downloader)]
    if nsfw.enabled:
        loaders.append(("the open_nsfw model (onnxruntime)", lambda: load_nsfw(nsfw)))
    return [*loaders, IMAGE_HASHING]


def loaders_for(stages: Iterable[str], config: dict[str, Any]) -> list[Loader]:
    """What the named stages (`extract`, `filter`, `images`, `dedup_images`) need loaded, per the config."""
    stages = set(stages)
    loaders: list[Loader] = []
    language = config["filters"]["language"]
    if "extract" in stages:
        loaders.append(("trafilatura (with jusText and lxml_html_clean)", load_extractor))
        if config["filters"]["gate"]["enabled"] and config["filters"]["gate"]["language"] and language["enabled"]:
            loaders.append(("the fastText language model", lambda: load_language_model(language)))
    if "filter" in stages:
        loaders.append(("the fastText language model", lambda: load_language_model(language)))
    if "images" in stages:
        nsfw = NsfwSettings.from_config(config["image_filters"]["nsfw"], "image_filters.nsfw")
        loaders.extend(download_loaders(nsfw))
    if "dedup_images" in stages:
        loaders.append(IMAGE_HASHING)
    unique = {name: load for name, load in loaders}
    return list(unique.items())


def preflight(stages: Iterable[str], config: dict[str, Any]) -> None:
    """Fail now, naming it, if a dependency the stages need does not load."""
    preload(loaders_for(stages, config))
