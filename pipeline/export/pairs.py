"""Documents → image-text pairs in img2dataset's / LAION's webdataset layout, for CLIP-style and Flamingo trainers.

Each downloaded image can pair with three texts that m3w keeps: its `<figcaption>` (`caption`), its alt text
(`alt`) and the first sentence of the text block right after it (`adjacent`: m3w places an image before
the text that follows it). The sources are tried in the configured order (`export.pairs.sources`); the first
text that passes every rule makes the image's one pair, so no picture is repeated. The rules, in order:

- `file_name`: the text looks like a file name (`IMG_0042.jpg`, `DSC01234`, `hero-banner_2x.png`);
- `boilerplate`: a configured pattern matches ("image of ...", "click to enlarge", "photo credit: ...");
- `too_few_words` / `too_many_words`: whitespace-separated words outside [min_words, max_words];
- `language`: with `languages` set, fastText must give one of them at least `language_threshold`.

A sample is `KEY.jpg` (`.png`/`.webp` when the stored image is one), `KEY.txt` (the text) and `KEY.json`
(`url`, `caption`, `source`, `doc_id`, `page_url`, `language`, `width`, `height`, `sha256`, `status`), as
img2dataset writes them (`key`, `url`, `caption`, `width`, `height`, `sha256`, `status` are its fields).
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt

from pipeline.config import ConfigError, Section, Share
from pipeline.export.mmc4 import MEMBER_EXTENSIONS, text_blocks_and_images, usable_images
from schemas.document import Document

PairSource = Literal["caption", "alt", "adjacent"]
SOURCES: tuple[str, ...] = typing.get_args(PairSource)
# A text that is a file name: one token with an image extension, or a camera/CMS file stem.
_FILE_NAME = re.compile(
    r"^\S+\.(jpe?g|png|gif|webp|bmp|tiff?|svg|heic|avif)$"
    r"|^(img|dsc|dscn|dcim|pxl|screenshot|image|photo|pic)[\s_-]*\d[\w-]*$"
    r"|^[\w-]*_[\w-]*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PairExportSettings(Section):
    """`export.pairs`: which texts pair with an image and what disqualifies one (pipeline/defaults.yaml)."""

    sources: Annotated[list[PairSource], Field(min_length=1)]
    min_words: NonNegativeInt
    max_words: NonNegativeInt | None
    languages: list[str]
    language_threshold: Share
    reject_file_names: bool
    boilerplate_patterns: list[str]


@dataclass
class PairRules:
    """`export.pairs` as the exporter uses it."""

    sources: tuple[str, ...]
    min_words: int
    max_words: int | None
    languages: list[str]
    language_threshold: float
    reject_file_names: bool
    boilerplate: list[re.Pattern]

    @classmethod
    def from_config(cls, settings: PairExportSettings) -> PairRules:
        """The `export.pairs` section, checked (sources, patterns) and compiled."""
        sources = tuple(settings.sources)
        if len(set(sources)) != len(sources):
            raise ConfigError(f"export.pairs.sources must be distinct names from {SOURCES}; got {list(sources)}")
        try:
            patterns = [re.compile(p, re.IGNORECASE) for p in settings.boilerplate_patterns]
        except re.error as error:
            raise ConfigError(f"export.pairs.boilerplate_patterns: {error}") from error
        return cls(sources=sources, min_words=settings.min_words, max_words=settings.max_words,
                   languages=list(settings.languages), language_threshold=settings.language_threshold,
                   reject_file_names=settings.reject_file_names, boilerplate=patterns)

    def rejection(self, text: str, language_of=None) -> str | None:
        """The first rule `text` breaks (its drop reason), or None when it qualifies as a caption.

        `language_of(text)` gives the target-language verdict's reason (None to keep); it is only asked
        when languages are set and every cheaper rule passed."""
        if self.reject_file_names and looks_like_file_name(text):
            return "file_name"
        if any(p.search(text) for p in self.boilerplate):
            return "boilerplate"
        words = len(text.split())
        if words < self.min_words:
            return "too_few_words"
        if self.max_words is not None and words > self.max_words:
            return "too_many_words"
        if self.languages and language_of is not None:
            return language_of(text)
        return None


def looks_like_file_name(text: str) -> bool:
    return bool(_FILE_NAME.match(text.strip()))


def first_sentence(text: str) -> str:
    """The first sentence of the first non-empty line of `text`."""
    from filters.text_quality import regex_tokenizer

    line = next((line for line in text.splitlines() if line.strip()), "")  # a heading has no full stop
    sentences = regex_tokenizer().sent_tokenize(line)
    return sentences[0] if sentences else ""


def candidates(doc: Document) -> dict[int, dict[str, str]]:
    """Image node position → {source: text} (whitespace collapsed; empty texts left out)."""
    parts = text_blocks_and_images(doc)
    out: dict[int, dict[str, str]] = {}
    for index, part in enumerate(parts):
        if isinstance(part, str):
            continue
        image = doc.nodes[part].image
        following = next((p for p in parts[index + 1:index + 2] if isinstance(p, str)), "")
        texts = {"caption": image.caption, "alt": image.alt, "adjacent": first_sentence(following)}
        out[part] = {source: " ".join(text.split()) for source, text in texts.items() if text and text.strip()}
    return out


@dataclass
class PairsResult:
    """The pairs of one document and the counts behind them (units images and texts)."""

    pairs: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    images_in: int = 0
    image_drops: Counter = field(default_factory=Counter)
    texts_in: int = 0
    texts_kept: int = 0
    text_drops: Counter = field(default_factory=Counter)


def document_pairs(doc: Document, rules: PairRules, key_of, language_of=None) -> PairsResult:
    """Every image of `doc` with bytes and a qualifying text → one pair; `key_of(position)` names its sample."""
    result = PairsResult(images_in=len(doc.images))
    usable = usable_images(doc, result.image_drops)
    for position, texts in candidates(doc).items():
        ordered = [(source, texts[source]) for source in rules.sources if source in texts]
        result.texts_in += len(ordered)
        if position not in usable:
            result.text_drops["image_dropped"] += len(ordered)
            continue
        chosen: tuple[str, str] | None = None
        seen: set[str] = set()
        for source, text in ordered:
            if chosen is not None:
                result.text_drops["superseded"] += 1
                continue
            if text.casefold() in seen:
                result.text_drops["same_as_other_source"] += 1
                continue
            seen.add(text.casefold())
            reason = rules.rejection(text, language_of)
            if reason:
                result.text_drops[reason] += 1
            else:
                chosen = (source, text)
        if chosen is None:
            result.image_drops["no_qualifying_text"] += 1
            continue
        result.texts_kept += 1
        result.pairs.append(pair_record(doc, position, usable[position], chosen, key_of(position)))
    return result


def pair_record(doc: Document, position: int, picture: tuple[bytes, tuple[int, int, str]], chosen: tuple[str, str],
                key: str) -> tuple[str, dict[str, bytes]]:
    """One pair as webdataset members: the image, its text and img2dataset-style metadata."""
    data, (width, height, image_format) = picture
    source, text = chosen
    image = doc.nodes[position].image
    metadata = {"key": key, "url": image.url, "caption": text, "source": source, "doc_id": doc.doc_id,
                "page_url": doc.url, "language": str(doc.metadata.get("language") or ""),
                "width": width, "height": height, "sha256": hashlib.sha256(data).hexdigest(), "status": "success"}
    extension = MEMBER_EXTENSIONS.get(image_format, image_format or "bin")
    return key, {extension: data, "txt": text.encode("utf-8"),
                 "json": json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")}
