"""The canaries that ride along every `m3w build`: their pages, their pictures, and the WARC that carries both.

`canary_pages(settings)` plans the pages (the sample crawl's canary article, `canary_article`, on a plain page
under `RIDING_HOST`); `ensure_canary_warc(output, settings)` writes them, each page followed by its pictures as
`image/jpeg` response records, into `OUTPUT/canaries/` on the output's filesystem (so a Dataflow build reads
it like any input and needs no image host). The file's name holds a digest of the settings: a build whose
settings are unchanged finds its file and neither renders nor rewrites it (same bytes, same modification time,
nothing for a resume to redo), and a file of other settings is removed. `canary_config` is the user's config as
the canaries' stages (`STAGES`) run it, and says where and why it differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.canaries.settings import CanarySettings
from pipeline.canaries.shapes import CANARY_SIZE, RIDING_HOST, render_canary

CANARY_DIR = "canaries"
# The stages a canary goes through (pipeline/jobs/canaries.py); it skips the others (dedup, and whatever judges a
# page against the crawl or the outside world rather than on its own).
STAGES = ("read", "gate", "extract", "filter_paragraphs", "filter", "download", "image_filter", "shard")
WARC_PREFIX = "canaries-"
WARC_SUFFIX = ".warc.gz"
WARC_DATE = "2024-01-01T00:00:00Z"
FORMAT = 1  # bump when the pages or pictures made from the same settings change
VARIANT_BASE = 10**9  # picture variants of their own: no riding canary repeats a sample-crawl canary's pixels


@dataclass(frozen=True)
class CanaryPicture:
    url: str
    cls: str
    variant: int  # `render_canary`'s: the pixels

    def jpeg(self) -> bytes:
        from pipeline.sampledata.crawl.images import encode

        return encode(render_canary(self.cls, self.variant, CANARY_SIZE), "jpg")


@dataclass(frozen=True)
class CanaryPage:
    url: str
    html: bytes
    pictures: tuple[CanaryPicture, ...]


def canary_pages(settings: CanarySettings) -> Iterator[CanaryPage]:
    """The pages `settings` asks for, in order, without rendering a picture (cheap: text only)."""
    from pipeline.sampledata.crawl import text
    from pipeline.sampledata.crawl.pages import PageBuilder, canary_article

    rng = random.Random(f"m3w-canaries:{settings.seed}")
    classes = tuple(settings.classes)
    variant = VARIANT_BASE + settings.seed * 10**6
    for index in range(settings.pages):
        writer = text.EnglishWriter(random.Random(rng.getrandbits(64)), rng.choice(text.TOPICS))
        builder = PageBuilder(f"https://{RIDING_HOST}/notes/{settings.seed}/{index:05d}.html", writer.title())
        pictures: list[CanaryPicture] = []

        def picture(cls: str, index: int = index, pictures: list[CanaryPicture] = pictures,
                    first: int = variant) -> str:
            url = f"https://{RIDING_HOST}/pictures/{settings.seed}/{index:05d}-{len(pictures)}.jpg"
            pictures.append(CanaryPicture(url, cls, first + len(pictures)))
            return url

        canary_article(builder, writer, rng, classes, picture)
        variant += len(pictures)
        yield CanaryPage(builder.url, builder.render(None).encode("utf-8"), tuple(pictures))


def warc_name(settings: CanarySettings) -> str:
    """`canaries-<digest>.warc.gz`: the digest covers everything the file's bytes depend on."""
    key = json.dumps({"format": FORMAT, "pages": settings.pages, "classes": list(settings.classes),
                      "seed": settings.seed}, sort_keys=True)
    return f"{WARC_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:16]}{WARC_SUFFIX}"


def write_canary_warc(path: str, settings: CanarySettings) -> None:
    """Every canary page, then its pictures, as response records (written atomically, on any filesystem)."""
    from pipeline.core.files import open_atomically
    from pipeline.sampledata.crawl.warc import Capture, write_crawl_warc

    def captures() -> Iterator[Capture]:
        for page in canary_pages(settings):
            yield Capture(page.url, page.html, "text/html; charset=utf-8", WARC_DATE)
            for picture in page.pictures:
                yield Capture(picture.url, picture.jpeg(), "image/jpeg", WARC_DATE)

    with open_atomically(path) as handle:
        write_crawl_warc(handle, captures(), filename=path.rstrip("/").rsplit("/", 1)[-1],
                         is_part_of=f"m3w-canaries-{settings.seed}", software="m3w alignment canaries",
                         date=WARC_DATE, ids=random.Random(f"m3w-canary-ids:{settings.seed}"))


def ensure_canary_warc(output: str, settings: CanarySettings) -> str:
    """The canary WARC of `settings` under `output` (written unless it is there already); other canary WARCs
    there are removed. Returns its path."""
    from apache_beam.io.filesystems import FileSystems

    folder = FileSystems.join(output, CANARY_DIR)
    path = FileSystems.join(folder, warc_name(settings))
    pattern = FileSystems.join(folder, f"{WARC_PREFIX}*")
    stale = [m.path for m in FileSystems.match([pattern])[0].metadata_list if m.path != path]
    if stale:
        FileSystems.delete(stale)
    if not FileSystems.exists(path):
        write_canary_warc(path, settings)
    return path


def canary_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the config the canaries' stages run under, what it changes from the user's and why).

    The canaries are English pages whose pictures exist only in their WARC: a language list without English
    gets English added (every other rule judges the canaries as it judges the user's pages), and their pictures
    are taken from their archive with the network off, whatever `download.from_archive` and `download.network`
    say for the user's."""
    from filters.language import iso639_1, normalize_language

    out = copy.deepcopy(config)
    notes = []
    language = out["filters"]["language"]
    targets = language["languages"]
    if language["enabled"] and targets and "en" not in {iso639_1(normalize_language(t)[0]) for t in targets}:
        language["languages"] = [*targets, "en"]
        notes.append(f"filters.language.languages {targets} leaves English out: the canaries (English pages) are "
                     "judged with English admitted, by the language rule alone")
    out["download"].update(from_archive=True, network=False)
    return out, notes
