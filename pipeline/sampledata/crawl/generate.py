"""The bundled sample crawl: a small deterministic web written as a real WARC, its images and the
ground truth every stage's tests check against.

`generate_sample_crawl(out_dir, seed)` writes

- `crawl.warc.gz`: warcinfo, then request + response records for every page (and a few non-HTML,
  404 and redirect responses), gzip per record, fixed dates and record ids, so the same seed gives
  byte-identical files;
- `images/<host>/<path>`: every image file the pages reference that a server should serve;
- `ground_truth.json`: per page, the images extraction must find (in order, with the text right
  before each), the images it must not find, and each stage's expected fate; per image URL, what it
  is (photo, generated, canary, logo, ...), planted duplicates and the download failure it is meant
  to produce.

Expected fates (`page["expected"]`), in pipeline order; a stage after the one that drops the page is
`null`:
- `extract`: `keep` | `no_img_tag` (no `<img>` at all) | `no_images` (only boilerplate/junk images);
- `filters`: `keep` | `language` | `spam` | `flagged_words` | `url_blocklist` (the URL blocklist and
  the language gate may run before extraction; the reason is the same wherever they run);
- `dedup`: `keep` | `duplicate` (exact copy, near copy, or an older crawl of the same URL;
  `duplicate_of` names the page that is kept);
- `images`: `keep` | `no_images` (every content image failed to download, was filtered, or the page
  opted out of AI use so nothing may be requested).

Other page fields: `images` (absolute URLs extraction must yield, in order), `text_before_image` (the
last words of the text block before each, "" if none), `excluded_images` (URLs on the page that must
not come out), `images_after_download` (the content images left after download and image filters,
and after the before-download URL-frequency rule), `canary_classes`, `shared_paragraphs` (boilerplate
paragraphs repeated across the site), `tags` (the planted cases: `srcset_w`, `picture`, `lazy`,
`base_href`, `latin1`, `opt_out_meta`, `frequent_image`, ...), `title`, `content_type`.

`images[url]`: `kind` (photo, generated, canary, logo, icon, pixel, placeholder, diagram, animation,
alternative_source), `class` (canary class), `duplicate_of` + `duplicate_kind` (`exact_bytes` or
`perceptual`), `served` (a file exists under `images/`), `failure` (what `/fail/<kind>/` URLs must
produce), `filter` (image filter expected to drop it after download: `min_side`, `aspect_ratio`),
`node_rule` (node-level rule expected to drop it where it appears in content), `frequent` (used by
more than 10 documents), `never_requested` (opted-out pages, unchosen srcset/`<picture>` candidates),
`pages`, `format`, `width`, `height`, `sha256`, `source`.

Top level: `shared_paragraphs` [{text, pages}], `other_records` (non-HTML, 404 and redirect responses
with the reader's expected verdict), `canary_classes`, `blocklisted_domain`, `seed`.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
from PIL import Image

from pipeline.canaries import shapes as canaries
from pipeline.sampledata.crawl import german, images, text
from pipeline.sampledata.crawl.pages import Layout, PageBuilder, canary_article, esc, figure, img_tag
from pipeline.sampledata.crawl.warc import write_crawl_warc

IMG_HOST = "https://img.sample-web.test"
STATIC_HOST = "https://static.sample-web.test"
TRACK_HOST = "https://track.sample-web.test"
FAIL_KINDS = ("404", "500", "timeout", "corrupt", "bomb", "wrong_type", "noai")
# A registered domain listed in the UT1 adult blocklist that datatrove ships in its wheel
# (assets/url_filterblacklistsv0_3_0.tar.gz, member `domains`); a test checks it is still listed.
BLOCKLISTED_DOMAIN = "00sex.com"
FREQUENT_IMAGE_PAGES = 12  # pages carrying the shared site emblem inside their content (> 10: URL-frequency dedup)
MIN_PHASH_DISTANCE = 14  # every distinct served image differs from all others by at least this many pHash bits
BULK_PAGES_PER_SITE = 50    # bulk pages share a site (boilerplate paragraphs are judged per domain)
BULK_IMAGE_SIZE = (320, 256)  # pixels of a bulk page's pictures (the local image host's /size/ marker)
PLACEHOLDER_DATA_URI = "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="

SHARED_BYLINE = ("This story was written by the people at the Sample Web desk, who travel to the places they "
                 "describe, pay for their own tickets and check every fact with the people they meet.")
COOKIE_NOTICE = ("We use cookies to remember your settings and to count how many people read each story. "
                 "You can change your choice at any time on the privacy page of this site.")


@dataclass
class ImageAsset:
    url: str
    kind: str
    fmt: str = ""
    data: bytes | None = None
    size: tuple[int, int] | None = None
    cls: str | None = None
    source: str = ""
    duplicate_of: str | None = None
    duplicate_kind: str | None = None
    failure: str | None = None
    filter: str | None = None  # image-filter drop expected after download
    node_rule: str | None = None  # node-level rule expected to drop it where it appears in content
    frequent: bool = False
    pages: list[str] = field(default_factory=list)
    never_requested: bool = False
    host_generated: bool = False  # no file: the local image host draws it from the URL (bulk pages)

    def truth(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "class": self.cls,
            "duplicate_of": self.duplicate_of,
            "duplicate_kind": self.duplicate_kind,
            "served": (self.data is not None or self.host_generated) and self.failure is None,
            "failure": self.failure,
            "filter": self.filter,
            "node_rule": self.node_rule,
            "frequent": self.frequent,
            "format": self.fmt or None,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "source": self.source or None,
            "sha256": hashlib.sha256(self.data).hexdigest() if self.data is not None else None,
            "pages": sorted(set(self.pages)),
            "never_requested": self.never_requested,
        }


@dataclass
class PageRecord:
    url: str
    kind: str
    lang: str
    warc_date: str
    body: bytes
    content_type: str
    builder: PageBuilder | None = None
    status: str = "200 OK"
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    expected: dict[str, Any] = field(default_factory=dict)
    duplicate_of: str | None = None
    tags: list[str] = field(default_factory=list)
    title: str = ""
    is_html_page: bool = True
    expected_read: str = "keep"
    canary_classes: list[str] = field(default_factory=list)
    shared_paragraphs: list[str] = field(default_factory=list)

    def truth(self, assets: dict[str, ImageAsset]) -> dict[str, Any]:
        b = self.builder
        content = b.images if b else []
        downloaded = [u for u in content if not assets[u].failure and not assets[u].filter
                      and not assets[u].frequent and not assets[u].never_requested]
        return {
            "url": self.url,
            "kind": self.kind,
            "lang": self.lang,
            "title": self.title,
            "warc_date": self.warc_date,
            "content_type": self.content_type,
            "images": list(content),
            "text_before_image": list(b.text_before_image) if b else [],
            "excluded_images": list(b.excluded_images) if b else [],
            "images_after_download": downloaded,
            "canary_classes": list(self.canary_classes),
            "shared_paragraphs": list(self.shared_paragraphs),
            "expected": dict(self.expected),
            "duplicate_of": self.duplicate_of,
            "tags": sorted(self.tags),
        }


def _expect(extract="keep", filters="keep", dedup="keep", images_="keep") -> dict[str, Any]:
    out: dict[str, Any] = {"extract": extract, "filters": None, "dedup": None, "images": None}
    if extract != "keep":
        return out
    out["filters"] = filters
    if filters != "keep":
        return out
    out["dedup"] = dedup
    if dedup != "keep":
        return out
    out["images"] = images_
    return out


def _slug(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    words = "".join(c.lower() if c.isalnum() else " " for c in ascii_title).split()
    return "-".join(words[:7]) or "page"


class SampleWeb:
    """Builds the whole sample web in memory (`build`); `write_warc`, `write_images` and `ground_truth` output it."""

    def __init__(self, seed: int, n_canary_pages: int, canary_classes: tuple[str, ...] = canaries.CANARY_CLASSES,
                 n_bulk_pages: int = 0, bulk_images_per_page: int = 1):
        if n_bulk_pages < 0 or bulk_images_per_page < 1:
            raise ValueError("bulk pages must be >= 0 with at least one image each")
        self.n_bulk_pages = n_bulk_pages
        self.bulk_images_per_page = bulk_images_per_page
        unknown = set(canary_classes) - set(canaries.CANARY_CLASSES)
        if unknown or not canary_classes:
            raise ValueError(f"canary classes must be some of {canaries.CANARY_CLASSES}; got {canary_classes}")
        self.seed = seed
        self.rng = random.Random(f"m3w-sample:{seed}")
        self.n_canary_pages = n_canary_pages
        self.canary_classes = tuple(canary_classes)
        self.assets: dict[str, ImageAsset] = {}
        self.pages: list[PageRecord] = []
        self.hashes = np.zeros((0, 64), dtype=bool)  # pHash bits of every distinct image so far
        self.photo_cycle: list[str] = []
        self.topic_cycle: list[text.Topic] = []
        self.base_date = datetime(2024, 1, 8, tzinfo=UTC) + timedelta(days=self.rng.randint(0, 60))
        self.slugs: set[str] = set()
        self.appended: list[PageRecord] = []  # pages after the planted web, last in the WARC (german_news)

    # -- helpers ---------------------------------------------------------------------------
    def date(self, min_day: int = 0, max_day: int = 150) -> str:
        moment = self.base_date + timedelta(days=self.rng.randint(min_day, max_day), seconds=self.rng.randint(0, 86399))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def hexname(self, bits: int = 40) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def topic(self) -> text.Topic:
        if not self.topic_cycle:
            self.topic_cycle = list(text.TOPICS)
            self.rng.shuffle(self.topic_cycle)
        return self.topic_cycle.pop()

    def writer(self, topic: text.Topic | None = None) -> text.EnglishWriter:
        return text.EnglishWriter(random.Random(self.rng.getrandbits(64)), topic or self.topic())

    def unique_slug(self, title: str) -> str:
        slug = _slug(title)
        while slug in self.slugs:
            slug = f"{slug}-{self.hexname(16)}"
        self.slugs.add(slug)
        return slug

    def _phash(self, image: Image.Image) -> np.ndarray:
        import imagehash

        return np.asarray(imagehash.phash(image).hash, dtype=bool).ravel()

    def _distinct(self, make, attempts: int = 16) -> tuple[Image.Image, np.ndarray]:
        """Draw images until one differs from every image so far by ≥ MIN_PHASH_DISTANCE bits."""
        best: tuple[int, Image.Image, np.ndarray] | None = None
        for _ in range(attempts):
            image = make()
            bits = self._phash(image)
            distance = int((self.hashes != bits).sum(axis=1).min()) if len(self.hashes) else 64
            if distance >= MIN_PHASH_DISTANCE:
                return image, bits
            if best is None or distance > best[0]:
                best = (distance, image, bits)
        assert best is not None
        return best[1], best[2]

    def remember(self, bits: np.ndarray) -> None:
        self.hashes = np.vstack([self.hashes, bits[None, :]])

    def add_asset(self, url: str, kind: str, image: Image.Image | None = None, fmt: str = "", *,
                  data: bytes | None = None, track: bool = False, **fields: Any) -> ImageAsset:
        if url in self.assets:
            raise ValueError(f"image URL used twice: {url}")
        if image is not None and data is None:
            data = images.encode(image, fmt)
        size = image.size if image is not None else None
        if size is None and data is not None:
            try:
                with Image.open(io.BytesIO(data)) as decoded:
                    size = decoded.size
            except OSError:  # SVG and other formats Pillow does not read
                size = None
        asset = ImageAsset(url=url, kind=kind, fmt=fmt, data=data, size=size, **fields)
        if track and image is not None:
            self.remember(self._phash(image))
        self.assets[url] = asset
        return asset

    def photo(self, directory: str = "photos", fmt: str = "jpg", long_side: int | None = None,
              host: str = IMG_HOST, name: str | None = None) -> ImageAsset:
        """A new, perceptually distinct crop of a bundled photograph."""
        if not self.photo_cycle:
            self.photo_cycle = list(images.PHOTO_SOURCES)
            self.rng.shuffle(self.photo_cycle)
        source = self.photo_cycle.pop()
        rng = random.Random(self.rng.getrandbits(64))
        image, bits = self._distinct(lambda: images.photo_variant(source, rng, long_side))
        self.remember(bits)
        url = f"{host}/{directory}/{name or self.hexname()}.{fmt}"
        return self.add_asset(url, "photo", image, fmt, source=f"skimage.data.{source}")

    def generated(self, directory: str = "art", fmt: str = "png", size: tuple[int, int] | None = None,
                  host: str = IMG_HOST) -> ImageAsset:
        rng = random.Random(self.rng.getrandbits(64))

        def make():
            if size is None:
                aspect, long_side = rng.uniform(0.6, 1.7), rng.randint(320, 512)
                w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
            else:
                w, h = size
            return images.generated_image(rng, w, h)

        image, bits = self._distinct(make)
        self.remember(bits)
        return self.add_asset(f"{host}/{directory}/{self.hexname()}.{fmt}", "generated", image, fmt, source="generated")

    def content_image(self, fmt: str | None = None, directory: str | None = None) -> ImageAsset:
        """A photo (two in three) or a generated picture, in a mix of formats."""
        if self.rng.random() < 0.67:
            fmt = fmt or self.rng.choice(("jpg", "jpg", "jpg", "webp", "jpeg"))
            year = self.rng.choice(("2022", "2023", "2024"))
            return self.photo(directory or f"photos/{year}", fmt)
        return self.generated(directory or "art", fmt or self.rng.choice(("png", "jpg", "webp")))

    def junk(self, url: str, kind: str, node_rule: str | None, image: Image.Image | None = None, fmt: str = "",
             data: bytes | None = None) -> str:
        """An image a page references that must never become a document image; reused when seen before."""
        if url not in self.assets:
            self.add_asset(url, kind, image, fmt, data=data, node_rule=node_rule)
        return url

    # -- site layouts ----------------------------------------------------------------------
    def layouts(self) -> dict[str, Layout]:
        rng = random.Random(self.rng.getrandbits(64))
        static = STATIC_HOST
        logos = {
            "www": f"{static}/brand/logo.png", "blog": "https://blog.sample-web.test/assets/logo-blog.png",
            "photos": f"{static}/brand/photos-logo.png", "news": f"{static}/brand/news-logo.png",
            "de": f"{static}/brand/de/logo.png", "fr": f"{static}/brand/fr/logo.png",
            "es": f"{static}/brand/es/logo.png",
            "canary": f"{static}/brand/notes-logo.png", "shop": f"{static}/brand/shop-logo.png",
            "forum": f"{static}/brand/forum-logo.png", "adult": f"{static}/brand/night-logo.png",
        }
        for key, url in logos.items():
            self.junk(url, "logo", "url_pattern", images.logo_image(rng, key.upper()), "png")
        icon_names = ("share-mail", "share-print", "rss", "follow-a", "follow-b", "follow-c")
        icons = {}
        for name in icon_names:
            url = f"{static}/icons/{name}.png"
            icons[name] = self.junk(url, "icon", "tiny_declared", images.icon_image(rng), "png")
        pixel = self.junk(f"{TRACK_HOST}/pixel.gif", "pixel", "tiny_declared", data=images.pixel_gif(), fmt="gif")
        side_links = ("Most read this week", "Letters from readers", "The archive", "Photo of the day")
        out = {
            "www": Layout("Sample Web Magazine", "/static/logo.png", logos["www"],
                          ("Home", "Travel", "Science", "Food", "Culture", "About"),
                          sidebar_icons=(("//static.sample-web.test/icons/share-mail.png", icons["share-mail"]),
                                         (icons["share-print"], icons["share-print"])),
                          footer_icons=((icons["follow-a"], icons["follow-a"]), (icons["rss"], icons["rss"])),
                          tracking_pixel=pixel, sidebar_links=side_links,
                          footer_text="Sample Web Magazine. All rights reserved by the project."),
            "blog": Layout("Field Notes", "/assets/logo-blog.png", logos["blog"], ("Posts", "Tags", "Contact"),
                           footer_icons=((icons["follow-b"], icons["follow-b"]),),
                           footer_text="Field Notes is a blog of the sample web."),
            "photos": Layout("Sample Photos", logos["photos"], logos["photos"], ("Galleries", "Prints", "About"),
                             footer_icons=((icons["follow-c"], icons["follow-c"]),),
                             footer_text="Every picture on this site belongs to the sample web."),
            "news": Layout("Sample News", logos["news"], logos["news"], ("Local", "World", "Weather"),
                           tracking_pixel=pixel, footer_text="Sample News, published daily."),
            "canary": Layout("Shape Notes", logos["canary"], logos["canary"], ("Notes", "Index", "About"),
                             footer_text="Shape Notes: short essays with pictures."),
            "shop": Layout("Mega Deals", logos["shop"], logos["shop"], ("Deals", "Cart", "Checkout"),
                           tracking_pixel=pixel, footer_text="Mega Deals online store."),
            "forum": Layout("Open Forum", logos["forum"], logos["forum"], ("Threads", "Members"),
                            footer_text="Open Forum community."),
            "adult": Layout("Night Club", logos["adult"], logos["adult"], ("Home", "Members"),
                            footer_text="Night Club."),
            "de": Layout("Beispielseite", logos["de"], logos["de"], ("Startseite", "Reisen", "Kontakt"), lang="de",
                         footer_text="Alle Rechte vorbehalten."),
            "fr": Layout("Site Exemple", logos["fr"], logos["fr"], ("Accueil", "Voyages", "Contact"), lang="fr",
                         footer_text="Tous droits réservés."),
            "es": Layout("Sitio Ejemplo", logos["es"], logos["es"], ("Inicio", "Viajes", "Contacto"), lang="es",
                         footer_text="Todos los derechos reservados."),
        }
        # The magazine writes its logo relative to its own host: resolve it the way a browser would.
        www_logo = urljoin("https://www.sample-web.test/", "/static/logo.png")
        self.junk(www_logo, "logo", "url_pattern", images.logo_image(rng, "WWW"), "png")
        out["www"].logo_abs = www_logo
        return out

    # -- page assembly ---------------------------------------------------------------------
    def add_page(self, builder: PageBuilder, kind: str, layout: Layout | None, *, lang: str = "en",
                 date: str | None = None, expected: dict | None = None, tags: list[str] | None = None,
                 content_type: str = "text/html; charset=utf-8", encoding: str = "utf-8",
                 meta_charset: str | None = "utf-8", extra_headers: list[tuple[str, str]] | None = None,
                 duplicate_of: str | None = None, base_href: str | None = None, meta_robots: str | None = None,
                 byline: str | None = None, **fields: Any) -> PageRecord:
        markup = builder.render(layout, base_href=base_href, charset=meta_charset, meta_robots=meta_robots,
                                byline=byline)
        record = PageRecord(url=builder.url, kind=kind, lang=lang, warc_date=date or self.date(),
                            body=markup.encode(encoding, "xmlcharrefreplace"), content_type=content_type,
                            builder=builder,
                            extra_headers=extra_headers or [], expected=expected or _expect(),
                            duplicate_of=duplicate_of, tags=tags or [], title=builder.title, **fields)
        for url in builder.images:
            self.assets[url].pages.append(builder.url)
        self.pages.append(record)
        return record

    def article_body(self, builder: PageBuilder, writer, n_paragraphs: int, figures: list[tuple[str, str | None]],
                     headings: bool = True) -> None:
        """Paragraphs with the given (markup, expected URL) figures spread between them."""
        slots = sorted(self.rng.sample(range(1, n_paragraphs), min(len(figures), n_paragraphs - 1)))
        while len(slots) < len(figures):
            slots.append(n_paragraphs)
        queue = list(zip(slots, figures))
        for index in range(n_paragraphs + 1):
            while queue and queue[0][0] == index:
                _, (markup, expected_url) = queue.pop(0)
                builder.image(markup, expected_url)
            if index == n_paragraphs:
                break
            if headings and index and index % 3 == 0:
                builder.heading(writer.heading())
            builder.paragraph(writer.opening() if index == 0 else writer.paragraph())

    def figure_markup(self, asset: ImageAsset, writer, style: str = "figure") -> tuple[str, str]:
        """Markup for a content image in one of the common shapes; returns (html, expected URL)."""
        alt = writer.alt_text()
        if style == "figure":
            tag = img_tag(asset.url, alt, width=asset.size[0], height=asset.size[1])
            return figure(tag, writer.caption()), asset.url
        if style == "plain":
            return f"<p>{img_tag(asset.url, alt)}</p>", asset.url
        if style == "linked":
            return f'<p><a href="{esc(asset.url)}">{img_tag(asset.url, alt)}</a></p>', asset.url
        if style == "protocol_relative":
            src = "//" + asset.url.split("://", 1)[1]
            return figure(img_tag(src, alt), writer.caption()), asset.url
        if style == "wp_caption":
            caption = writer.caption()
            return (f'<div class="wp-caption aligncenter">{img_tag(asset.url, alt, width=asset.size[0])}'
                    f'<p class="wp-caption-text">{esc(caption)}</p></div>'), asset.url
        raise ValueError(style)

    # -- the web ---------------------------------------------------------------------------
    def build(self) -> None:
        layouts = self.layouts()
        self.crest = self.add_asset(f"{IMG_HOST}/brand/sample-web-crest.png", "logo",
                                    images.brand_mark(random.Random(self.rng.getrandbits(64))), "png",
                                    frequent=True, source="generated", track=True)
        magazine = self.magazine(layouts["www"])
        blog = self.blog(layouts["blog"])
        self.galleries(layouts["photos"])
        self.duplicates(magazine, blog)
        self.special_pages(layouts)
        self.image_trouble(layouts["news"])
        self.foreign(layouts)
        self.canary_pages(layouts["canary"])
        self.other_records()
        self.bulk_pages(layouts["www"])
        self.german_news(layouts["de"])

    def magazine(self, layout: Layout) -> list[PageRecord]:
        records = []
        for index in range(16):
            writer = self.writer()
            title = writer.title()
            url = f"https://www.sample-web.test/articles/{self.unique_slug(title)}.html"
            b = PageBuilder(url, title)
            figures, styles = [], set()
            for k in range(self.rng.randint(2, 4)):
                style = self.rng.choice(("figure", "figure", "figure", "plain", "linked", "protocol_relative"))
                if index == 0 and k == 0:
                    style = "protocol_relative"
                styles.add(style)
                figures.append(self.figure_markup(self.content_image(), writer, style))
            if index % 4 == 3:  # a vector diagram and an animated GIF: formats the node rules refuse
                svg = self.junk(f"{IMG_HOST}/diagrams/{self.hexname()}.svg", "diagram", "bad_format", data=_svg(),
                                fmt="svg")
                gif = self.junk(f"{IMG_HOST}/animations/{self.hexname()}.gif", "animation", "bad_format",
                                images.generated_image(random.Random(self.rng.getrandbits(64)), 320, 240), "gif")
                figures.insert(1, (figure(img_tag(svg, "diagram"), writer.caption()), None))
                figures.append((f"<p>{img_tag(gif, 'animation')}</p>", None))
                b.exclude(svg, gif)
            if index % 4 == 1:  # a share bar inside the article: icons the node rules must drop
                icon = layout.sidebar_icons[1][1]
                figures.insert(1, (f'<p class="share">{img_tag(icon, "print", width=24, height=24)}</p>', None))
                b.exclude(icon)
            if index % 5 == 2:  # an inline data: URI and a 1x1 pixel in the content
                figures.append((img_tag(PLACEHOLDER_DATA_URI, ""), None))
                b.exclude(PLACEHOLDER_DATA_URI)
                beacon = self.junk(f"{TRACK_HOST}/beacon/{self.hexname()}.png", "pixel", "tiny_declared",
                                   Image.new("RGB", (1, 1)), "png")
                figures.insert(0, (img_tag(beacon, "", width=1, height=1), None))
                thumb = self.generated("thumbs", "jpg", size=(200, 150))  # declared as a 100 px thumbnail
                figures.append((f"<p>{img_tag(thumb.url, 'thumbnail', width=100, height=75)}</p>", None))
                thumb.node_rule = "tiny_declared"
                b.exclude(beacon, thumb.url)
            self.article_body(b, writer, self.rng.randint(6, 8), figures)
            tags = ["boilerplate_layout", "shared_paragraphs"] + sorted(styles & {"protocol_relative", "linked"})
            if index < FREQUENT_IMAGE_PAGES:
                b.image(figure(img_tag(self.crest.url, "Sample Web crest", width=320, height=320),
                               "The Sample Web Magazine crest."), self.crest.url)
                tags.append("frequent_image")
            b.paragraph(COOKIE_NOTICE)
            kind = "article"
            content_type = "text/html; charset=utf-8"
            meta = "utf-8"
            if index == 3:
                content_type, tags = "application/xhtml+xml", tags + ["xhtml"]
            elif index == 5:
                content_type, tags = "text/html", tags + ["charset_in_meta_only"]
            elif index == 6:
                content_type, meta, tags = "text/html; charset=UTF-8", None, tags + ["charset_in_header_only"]
            records.append(self.add_page(b, kind, layout, content_type=content_type, meta_charset=meta, tags=tags,
                                         byline=SHARED_BYLINE, shared_paragraphs=[SHARED_BYLINE, COOKIE_NOTICE]))
        return records

    def blog(self, layout: Layout) -> list[PageRecord]:
        """Posts whose images need URL resolution: lazy loading, srcset, <picture>, relative, <base>."""
        records = []
        cases = ("lazy", "srcset_w", "srcset_x", "picture", "relative", "root_relative", "base_href", "data_srcset",
                 "noscript", "no_extension", "uppercase_query", "mixed")
        for case in cases:
            writer = self.writer()
            title = writer.title()
            month = self.rng.randint(1, 12)
            url = f"https://blog.sample-web.test/2023/{month:02d}/{self.unique_slug(title)}.html"
            b = PageBuilder(url, title)
            figures = [self.blog_image(case, url, writer, b) for _ in range(self.rng.randint(2, 3))]
            figures.insert(1, self.figure_markup(self.content_image(), writer,
                                                 self.rng.choice(("figure", "wp_caption", "plain"))))
            self.article_body(b, writer, self.rng.randint(5, 7), figures, headings=False)
            base = f"{IMG_HOST}/static/2023/" if case == "base_href" else None
            records.append(self.add_page(b, "blog", layout, base_href=base, tags=["url_resolution", case]))
        return records

    def blog_image(self, case: str, page_url: str, writer, b: PageBuilder) -> tuple[str, str]:
        alt = writer.alt_text()
        caption = writer.caption()
        if case == "mixed":
            case = self.rng.choice(("lazy", "srcset_w", "picture", "relative", "srcset_x"))
        if case == "lazy":
            asset = self.content_image()
            self.junk("https://blog.sample-web.test/assets/placeholder.gif", "placeholder", None,
                      data=images.pixel_gif(), fmt="gif")
            src = "/assets/placeholder.gif" if self.rng.random() < 0.5 else PLACEHOLDER_DATA_URI
            tag = f'<img src="{esc(src)}" data-src="{esc(asset.url)}" class="lazyload" alt="{esc(alt)}">'
            return figure(tag, caption), asset.url
        if case in ("srcset_w", "data_srcset"):
            big = self.content_image(fmt="jpg")
            small = self.resized_copy(big, big.url.replace(".jpg", "-small.jpg"), 0.6)
            assert small.size[0] < big.size[0]
            attr = "srcset" if case == "srcset_w" else "data-srcset"
            src = small.url if case == "srcset_w" else PLACEHOLDER_DATA_URI
            tag = (f'<img src="{esc(src)}" {attr}="{esc(small.url)} {small.size[0]}w, {esc(big.url)} {big.size[0]}w" '
                   f'sizes="(max-width: 600px) 100vw, 600px" alt="{esc(alt)}">')
            return figure(tag, caption), big.url
        if case == "srcset_x":
            big = self.content_image(fmt="jpg")
            small_url = big.url.replace(".jpg", "@1x.jpg")
            self.resized_copy(big, small_url, 0.5)
            tag = f'<img src="{esc(small_url)}" srcset="{esc(small_url)} 1x, {esc(big.url)} 2x" alt="{esc(alt)}">'
            return figure(tag, caption), big.url
        if case == "picture":
            best = self.content_image(fmt="webp")
            fallback = best.url.replace(".webp", ".jpg")
            self.resized_copy(best, fallback, 1.0, fmt="jpg")
            avif = best.url.replace(".webp", ".avif")
            self.add_asset(avif, "alternative_source", fmt="avif", duplicate_of=best.url, never_requested=True)
            tag = (f'<picture><source type="image/avif" srcset="{esc(avif)}">'
                   f'<source type="image/webp" srcset="{esc(best.url)}">{img_tag(fallback, alt)}</picture>')
            return figure(tag, caption), best.url
        if case == "relative":
            host = "https://blog.sample-web.test"
            asset = self.photo(directory="2023/media", host=host) if self.rng.random() < 0.7 else \
                self.generated(directory="2023/media", fmt="png", host=host)
            relative = "../media/" + asset.url.rsplit("/", 1)[1]
            assert urljoin(page_url, relative) == asset.url
            return figure(img_tag(relative, alt), caption), asset.url
        if case == "root_relative":
            asset = self.photo(directory="uploads", host="https://blog.sample-web.test")
            return figure(img_tag(urlsplit(asset.url).path, alt), caption), asset.url
        if case == "base_href":
            asset = self.photo(directory="static/2023/photos")
            relative = asset.url.split("/static/2023/", 1)[1]
            return figure(img_tag(relative, alt), caption), asset.url
        if case == "noscript":
            asset = self.content_image()
            tag = (f'<img src="{PLACEHOLDER_DATA_URI}" data-lazy-src="{esc(asset.url)}" alt="{esc(alt)}">'
                   f'<noscript>{img_tag(asset.url, alt)}</noscript>')
            return figure(tag, caption), asset.url
        if case == "no_extension":
            asset = self.photo(directory="cdn/f", fmt="jpg")
            bare = asset.url.rsplit(".", 1)[0]
            self.assets[bare] = self.assets.pop(asset.url)
            asset.url = bare
            return figure(img_tag(bare, alt), caption), bare
        if case == "uppercase_query":
            asset = self.photo(directory="Photos", fmt="JPG")
            with_query = asset.url + "?w=640&q=85"  # a CDN resize query; the host serves the path
            self.assets[with_query] = self.assets.pop(asset.url)
            asset.url = with_query
            return figure(img_tag(with_query, alt), caption), with_query
        raise ValueError(case)

    def resized_copy(self, original: ImageAsset, url: str, scale: float, fmt: str | None = None) -> ImageAsset:
        """The same picture at another URL, resized and re-encoded (a srcset/<picture> alternative)."""
        image = Image.open(io.BytesIO(original.data)).convert("RGB")
        if scale != 1.0:
            image = images.fit(image, max(images.MIN_SIDE, round(max(image.size) * scale)))
        fmt = fmt or url.rsplit(".", 1)[1]
        return self.add_asset(url, "alternative_source", image, fmt, duplicate_of=original.url,
                              duplicate_kind="perceptual", source=original.source, never_requested=True)

    def galleries(self, layout: Layout) -> None:
        for _ in range(5):
            writer = self.writer()
            title = "Gallery: " + writer.title()
            url = f"https://photos.sample-web.test/galleries/{self.unique_slug(title)}/"
            b = PageBuilder(url, title)
            b.paragraph(writer.opening((3, 5)))
            b.paragraph(writer.paragraph((3, 5)))
            cells = []
            for _ in range(self.rng.randint(5, 7)):
                if self.rng.random() < 0.75:
                    asset = self.photo("galleries", "jpg")
                else:
                    asset = self.generated("galleries", "jpg")
                cells.append(asset)
                b.expect_image(asset.url)
            grid = "".join(figure(img_tag(a.url, writer.alt_text(), width=a.size[0], height=a.size[1]),
                                  writer.caption()) for a in cells)
            b.raw(f'<div class="gallery-grid">{grid}</div>')
            b.paragraph(writer.paragraph((3, 5)))
            self.add_page(b, "gallery", layout, tags=["gallery"])

    def duplicates(self, magazine: list[PageRecord], blog: list[PageRecord]) -> None:
        # Exact duplicate: the same bytes served at a mirror, crawled later.
        original = blog[0]
        copy_url = original.url.replace("https://blog.sample-web.test/", "https://mirror.sample-web.test/blog/")
        later = self.later(original.warc_date)
        body = original.body  # byte for byte, canonical link included
        self.pages.append(PageRecord(
            url=copy_url, kind="duplicate", lang="en", warc_date=later, body=body, content_type=original.content_type,
            builder=original.builder.copy(copy_url), expected=_expect(dedup="duplicate"),
            duplicate_of=original.url, tags=["exact_duplicate"], title=original.title))
        original.tags.append("has_exact_duplicate")
        # Near duplicate: a printer-friendly copy with a few words changed, crawled later.
        source = magazine[1]
        near_url = source.url.replace("/articles/", "/print/")
        html_text = source.body.decode("utf-8")
        edited, edits = _small_edits(html_text, source.builder.text_blocks, random.Random(self.rng.getrandbits(64)), 2)
        self.pages.append(PageRecord(
            url=near_url, kind="near_duplicate", lang="en", warc_date=self.later(source.warc_date),
            body=edited.encode("utf-8"), content_type=source.content_type,
            builder=source.builder.copy(near_url, edits), expected=_expect(dedup="duplicate"),
            duplicate_of=source.url, tags=["near_duplicate"] + [t for t in source.tags if t == "frequent_image"],
            title=source.title, shared_paragraphs=list(source.shared_paragraphs)))
        source.tags.append("has_near_duplicate")
        for url in source.builder.images:
            self.assets[url].pages.append(near_url)
        for url in original.builder.images:
            self.assets[url].pages.append(copy_url)
        # The same URL crawled twice: an older version (a paragraph differs) at an earlier date, written later.
        current = magazine[2]
        old_date = self.earlier(current.warc_date)
        old_text = current.body.decode("utf-8")
        edit_rng = random.Random(self.rng.getrandbits(64))
        old_text, edits = _small_edits(old_text, current.builder.text_blocks, edit_rng, 3)
        self.pages.append(PageRecord(
            url=current.url, kind="old_crawl", lang="en", warc_date=old_date, body=old_text.encode("utf-8"),
            content_type=current.content_type, builder=current.builder.copy(current.url, edits),
            expected=_expect(dedup="duplicate"), duplicate_of=current.url, tags=["older_crawl_of_same_url"],
            title=current.title, shared_paragraphs=list(current.shared_paragraphs)))
        current.tags.append("recrawled")
        # The same photograph re-encoded and resized at another URL, on another page.
        first = next(u for page in magazine[4:] for u in page.builder.images if self.assets[u].kind == "photo")
        reencoded = self.assets[first]
        image = Image.open(io.BytesIO(reencoded.data)).convert("RGB")
        small = images.fit_within(image, round(max(image.size) * 0.7))
        dup_url = f"{IMG_HOST}/media/resized/{self.hexname()}.webp"
        self.add_asset(dup_url, "photo", small, "webp", duplicate_of=first, duplicate_kind="perceptual",
                       source=reencoded.source)
        exact_url = f"{IMG_HOST}/media/copies/{self.hexname()}.{reencoded.fmt}"
        self.add_asset(exact_url, "photo", data=reencoded.data, fmt=reencoded.fmt, duplicate_of=first,
                       duplicate_kind="exact_bytes", source=reencoded.source)
        for dup in (dup_url, exact_url):
            writer = self.writer()
            title = writer.title()
            url = f"https://news.sample-web.test/stories/{self.unique_slug(title)}.html"
            b = PageBuilder(url, title)
            figures = [self.figure_markup(self.assets[dup], writer, "figure"),
                       self.figure_markup(self.content_image(), writer, "figure")]
            self.article_body(b, writer, 6, figures)
            self.add_page(b, "article", None, tags=["duplicate_image"])

    def later(self, date: str) -> str:
        moment = datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ") + timedelta(days=self.rng.randint(3, 40),
                                                                             seconds=self.rng.randint(1, 3600))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def earlier(self, date: str) -> str:
        moment = datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ") - timedelta(days=self.rng.randint(30, 90))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def special_pages(self, layouts: dict[str, Layout]) -> None:
        www = layouts["www"]
        # Pages without any <img>: the cheap gate drops them before extraction.
        for _ in range(3):
            writer = self.writer()
            title = writer.title()
            b = PageBuilder(f"https://www.sample-web.test/columns/{self.unique_slug(title)}.html", title)
            for index in range(5):
                b.paragraph(writer.opening() if index == 0 else writer.paragraph())
            self.add_page(b, "no_images", None, expected=_expect(extract="no_img_tag"), tags=["no_img_tag"])
        # Only boilerplate images (logo, icons, pixel): nothing left after extraction.
        writer = self.writer()
        title = writer.title()
        b = PageBuilder(f"https://www.sample-web.test/columns/{self.unique_slug(title)}.html", title)
        for index in range(5):
            b.paragraph(writer.opening() if index == 0 else writer.paragraph())
        self.add_page(b, "boilerplate_only", www, expected=_expect(extract="no_images"),
                      tags=["boilerplate_images_only"])
        # An English page in ISO-8859-1 with its charset declared in the HTTP header and a meta tag.
        writer = self.writer(text.TOPICS[1])
        title = "Caf\u00e9 notes: " + writer.title()
        b = PageBuilder(f"https://www.sample-web.test/food/{self.unique_slug(title)}.html", title)
        latin = ("At the caf\u00e9 beside the old fa\u00e7ade, the cr\u00e8me br\u00fbl\u00e9e cost \u00a34 and "
                 "the ros\u00e9 came in a small glass.")
        figures = [self.figure_markup(self.content_image(), writer, "figure") for _ in range(2)]
        self.article_body(b, writer, 5, figures)
        b.paragraph(latin + " " + writer.paragraph((2, 3)))
        self.add_page(b, "article", www, content_type="text/html; charset=ISO-8859-1", encoding="iso-8859-1",
                      meta_charset="iso-8859-1", tags=["latin1", "boilerplate_layout"])
        # Opt-out pages: <meta name="robots" content="noai, noimageai"> and an X-Robots-Tag header.
        for how in ("meta", "header"):
            writer = self.writer()
            title = writer.title()
            b = PageBuilder(f"https://news.sample-web.test/private/{self.unique_slug(title)}.html", title)
            figures = [self.figure_markup(self.content_image(), writer, "figure") for _ in range(2)]
            self.article_body(b, writer, 6, figures)
            for url in b.images:
                self.assets[url].never_requested = True
            self.add_page(b, "opt_out", layouts["news"], expected=_expect(images_="no_images"),
                          meta_robots="noai, noimageai" if how == "meta" else None,
                          extra_headers=[("X-Robots-Tag", "noai")] if how == "header" else [],
                          tags=["opt_out", f"opt_out_{how}"])
        # Spam: keyword-stuffed sales pages.
        for index in range(2):
            rng = random.Random(self.rng.getrandbits(64))
            title = f"Buy now cheap {rng.choice(text.SPAM_PRODUCTS)} best price {2024 + index}"
            b = PageBuilder(f"https://shop.sample-web.test/deals/{self.unique_slug(title)}.html", title)
            product = self.content_image()
            for k in range(5):
                b.paragraph(text.spam_text(rng, 90))
                if k == 1:
                    b.image(figure(img_tag(product.url, "product"), "Best price buy now cheap."), product.url)
            self.add_page(b, "spam", layouts["shop"], expected=_expect(filters="spam"), tags=["spam"])
        # Profanity: ordinary prose salted with words from better_profanity's list (read at run time).
        flagged = text.profanity_words()
        writer = self.writer()
        title = writer.title()
        b = PageBuilder(f"https://forum.sample-web.test/threads/{self.unique_slug(title)}.html", title)
        for k in range(6):
            b.paragraph(text.profane_paragraph(writer, flagged))
            if k in (1, 3):
                asset = self.content_image()
                b.image(figure(img_tag(asset.url, writer.alt_text()), None), asset.url)
        self.add_page(b, "profane", layouts["forum"], expected=_expect(filters="flagged_words"), tags=["flagged_words"])
        # A page on a domain of the UT1 adult blocklist (its text is harmless: only the URL decides).
        writer = self.writer()
        title = writer.title()
        b = PageBuilder(f"https://www.{BLOCKLISTED_DOMAIN}/pages/{self.unique_slug(title)}.html", title)
        figures = [self.figure_markup(self.content_image(), writer, "figure") for _ in range(2)]
        self.article_body(b, writer, 6, figures)
        self.add_page(b, "blocklisted", layouts["adult"], expected=_expect(filters="url_blocklist"),
                      tags=["url_blocklist"])

    def image_trouble(self, layout: Layout) -> None:
        """Pages whose images fail to download or are filtered after download."""
        for kind in FAIL_KINDS:
            writer = self.writer()
            title = writer.title()
            b = PageBuilder(f"https://news.sample-web.test/reports/{self.unique_slug(title)}.html", title)
            ext = "png" if kind == "bomb" else "jpg"
            failing = f"{IMG_HOST}/fail/{kind}/{self.hexname()}.{ext}"
            self.add_asset(failing, "photo", failure=kind, fmt=ext)
            good = self.content_image()
            figures = [self.figure_markup(self.assets[failing], writer, "plain"),
                       self.figure_markup(good, writer, "figure")]
            self.rng.shuffle(figures)
            self.article_body(b, writer, 6, figures)
            self.add_page(b, "image_failure", layout, tags=["image_failure", f"failure_{kind}"])
        # Every image fails: nothing survives the download.
        writer = self.writer()
        title = writer.title()
        b = PageBuilder(f"https://news.sample-web.test/reports/{self.unique_slug(title)}.html", title)
        figures = []
        for kind in ("404", "500"):
            failing = f"{IMG_HOST}/fail/{kind}/{self.hexname()}.jpg"
            self.add_asset(failing, "photo", failure=kind, fmt="jpg")
            figures.append(self.figure_markup(self.assets[failing], writer, "plain"))
        self.article_body(b, writer, 6, figures)
        self.add_page(b, "image_failure", layout, expected=_expect(images_="no_images"),
                      tags=["image_failure", "all_images_fail"])
        # Served but filtered after download: too small (no size attributes to warn the node rules)
        # and a panorama outside the 0.5-2 aspect ratio; one good image keeps the page.
        writer = self.writer()
        title = writer.title()
        b = PageBuilder(f"https://news.sample-web.test/reports/{self.unique_slug(title)}.html", title)
        rng = random.Random(self.rng.getrandbits(64))
        tiny = self.add_asset(f"{IMG_HOST}/thumbs/{self.hexname()}.jpg", "generated",
                              images.generated_image(rng, 120, 90), "jpg", filter="min_side", source="generated")
        wide = self.add_asset(f"{IMG_HOST}/panoramas/{self.hexname()}.jpg", "photo",
                              images.fit(images.load_photo("rocket").crop((0, 150, 640, 330)), 640), "jpg",
                              filter="aspect_ratio", source="skimage.data.rocket")
        tall = self.add_asset(f"{IMG_HOST}/panoramas/{self.hexname()}.jpg", "generated",
                              images.generated_image(rng, 200, 520), "jpg", filter="aspect_ratio", source="generated")
        figures = [self.figure_markup(a, writer, "plain") for a in (tiny, wide, tall)]
        figures.append(self.figure_markup(self.content_image(), writer, "figure"))
        self.article_body(b, writer, 6, figures)
        self.add_page(b, "image_filters", layout, tags=["image_filters"])

    def foreign(self, layouts: dict[str, Layout]) -> None:
        sections = {"de": "artikel", "fr": "articles", "es": "articulos"}
        for lang, writer_class in text.FOREIGN_WRITERS.items():
            for _ in range(2):
                writer = writer_class(random.Random(self.rng.getrandbits(64)))
                title = writer.title()
                url = f"https://{lang}.sample-web.test/{sections[lang]}/{self.unique_slug(title)}.html"
                b = PageBuilder(url, title, lang)
                figures = [(figure(img_tag(a.url, writer.alt_text()), writer.caption()), a.url)
                           for a in (self.content_image(), self.content_image())]
                self.article_body(b, writer, 6, figures, headings=True)
                self.add_page(b, "non_english", layouts[lang], lang=lang, expected=_expect(filters="language"),
                              tags=["non_english"])

    def german_news(self, layout: Layout, count: int = 3) -> None:
        """German local news with German's own word statistics (german.py): kept by German's cut-offs, dropped by
        English's. Drawn from a random source of their own and last in the WARC, so the rest stays as it was."""
        for index in range(count):
            rng = random.Random(f"m3w-sample-german:{self.seed}:{index}")
            writer = german.GermanNewsWriter(rng)
            title = writer.title()
            b = PageBuilder(f"https://de.sample-web.test/nachrichten/{_slug(title)}-{index}.html", title, "de")
            for k in range(6):
                if k in (2, 4):
                    image, bits = self._distinct(lambda rng=rng: images.generated_image(rng, 480, 320))
                    self.remember(bits)
                    asset = self.add_asset(f"{IMG_HOST}/nachrichten/{rng.getrandbits(40):010x}.jpg", "generated",
                                           image, "jpg", source="generated")
                    b.image(*self.figure_markup(asset, writer))
                b.paragraph(writer.paragraph())
            moment = self.base_date + timedelta(days=rng.randint(0, 150), seconds=rng.randint(0, 86399))
            self.appended.append(self.add_page(
                b, "non_english", layout, lang="de", date=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                expected=_expect(filters="language"), tags=["non_english", "german_news"]))

    def canary_pages(self, layout: Layout) -> None:
        variant = self.seed * 100_000
        for index in range(self.n_canary_pages):
            writer = self.writer()
            title = writer.title()
            url = f"https://{canaries.CANARY_PAGE_HOST}/notes/{self.unique_slug(title)}.html"
            b = PageBuilder(url, title)

            def picture(cls: str, index: int = index) -> str:
                def make() -> Image.Image:
                    nonlocal variant
                    variant += 1
                    return canaries.render_canary(cls, variant, canaries.CANARY_SIZE)

                image, bits = self._distinct(make)
                self.remember(bits)
                asset_url = f"{IMG_HOST}{canaries.CANARY_IMAGE_PREFIX}{index:03d}/{self.hexname()}.jpg"
                self.add_asset(asset_url, "canary", image, "jpg", cls=cls, source="generated")
                return asset_url

            page_classes = canary_article(b, writer, self.rng, self.canary_classes, picture)
            self.add_page(b, "canary", layout, tags=["canary"], canary_classes=page_classes)

    def other_records(self) -> None:
        """Responses the reader must skip: non-HTML, an error page, a redirect."""
        jpeg_asset = next(a for a in self.assets.values() if a.kind == "photo" and a.data and a.fmt == "jpg")
        self.pages.append(PageRecord(url=jpeg_asset.url, kind="non_html", lang="", warc_date=self.date(),
                                     body=jpeg_asset.data, content_type="image/jpeg", is_html_page=False,
                                     expected_read="not_html"))
        self.pages.append(PageRecord(url="https://www.sample-web.test/assets/site.css", kind="non_html", lang="",
                                     warc_date=self.date(), body=b"body { font-family: serif; margin: 0 auto; }\n",
                                     content_type="text/css", is_html_page=False, expected_read="not_html"))
        self.pages.append(PageRecord(url="https://www.sample-web.test/files/annual-report.pdf", kind="non_html",
                                     lang="", warc_date=self.date(), body=_tiny_pdf(), content_type="application/pdf",
                                     is_html_page=False, expected_read="not_html"))
        self.pages.append(PageRecord(url="https://www.sample-web.test/robots.txt", kind="non_html", lang="",
                                     warc_date=self.date(), body=b"User-agent: *\nDisallow: /private/\n",
                                     content_type="text/plain", is_html_page=False, expected_read="not_html"))
        writer = self.writer()
        missing = PageBuilder("https://www.sample-web.test/articles/missing-page.html", "Page not found")
        missing.paragraph("Sorry, the page you asked for does not exist. " + writer.sentence())
        asset = self.content_image()
        missing.image(figure(img_tag(asset.url, ""), None), asset.url)
        self.pages.append(PageRecord(url=missing.url, kind="error_page", lang="en", warc_date=self.date(),
                                     body=missing.render(None).encode(), content_type="text/html; charset=utf-8",
                                     status="404 Not Found", is_html_page=False, expected_read="http_status"))
        asset.pages.append(missing.url)
        self.pages.append(PageRecord(url="https://blog.sample-web.test/old-address/", kind="redirect", lang="",
                                     warc_date=self.date(), body=b"", content_type="text/html",
                                     status="301 Moved Permanently",
                                     extra_headers=[("Location", "https://blog.sample-web.test/")],
                                     is_html_page=False, expected_read="http_status"))

    def bulk_pages(self, layout: Layout) -> None:
        """Plain articles in volume for scale runs: `BULK_PAGES_PER_SITE` per site, each with its own pictures.

        Linear in the page count: no perceptual-distinctness search against every earlier image and no image
        file; the local image host draws each picture from its URL (distinct per URL, `BULK_IMAGE_SIZE`).
        """
        width, height = BULK_IMAGE_SIZE
        for index in range(self.n_bulk_pages):
            writer = self.writer()
            title = writer.title()
            site = f"https://site{index // BULK_PAGES_PER_SITE:05d}.sample-web.test"
            b = PageBuilder(f"{site}/articles/{index:06d}-{_slug(title)}.html", title)
            figures = []
            for k in range(self.bulk_images_per_page):
                url = f"{IMG_HOST}/bulk/{index:06d}/size/{width}x{height}/{self.hexname()}-{k}.jpg"
                asset = self.add_asset(url, "photo", fmt="jpg", host_generated=True, source="image_host")
                asset.size = BULK_IMAGE_SIZE
                figures.append(self.figure_markup(asset, writer, "figure"))
            self.article_body(b, writer, self.rng.randint(4, 6), figures)
            self.add_page(b, "article", layout, tags=["bulk"])

    # -- output ----------------------------------------------------------------------------
    def ordered_records(self) -> list[PageRecord]:
        """WARC order: shuffled (duplicates are not neighbours), but a newer crawl of a URL comes first,
        so "keep the most recent" cannot be confused with "keep the first seen"."""
        appended = {id(record) for record in self.appended}
        records = [record for record in self.pages if id(record) not in appended]
        random.Random(f"m3w-sample-order:{self.seed}").shuffle(records)
        old = [r for r in records if r.kind == "old_crawl"]
        for record in old:
            records.remove(record)
            newer = next(i for i, r in enumerate(records) if r.url == record.url)
            records.insert(newer + 1 + self.rng.randint(0, 5), record)
        return records + self.appended

    def write_warc(self, path: Path, records: list[PageRecord]) -> None:
        with open(path, "wb") as handle:
            write_crawl_warc(handle, records, filename=path.name, is_part_of=f"m3w-sample-{self.seed}",
                             software="m3w sample crawl generator",
                             date=self.base_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             ids=random.Random(f"m3w-sample-ids:{self.seed}"))

    def write_images(self, root: Path) -> None:
        written: dict[Path, bytes] = {}
        for url in sorted(self.assets):
            asset = self.assets[url]
            if asset.data is None or asset.failure is not None:
                continue
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                continue
            path = root / parts.hostname / parts.path.lstrip("/")
            if path in written:
                if written[path] != asset.data:
                    raise ValueError(f"two different images map to {path}")
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(asset.data)
            written[path] = asset.data

    def ground_truth(self, records: list[PageRecord]) -> dict[str, Any]:
        pages = [r.truth(self.assets) for r in records if r.is_html_page]
        others = [{"url": r.url, "status": int(r.status.split()[0]), "content_type": r.content_type,
                   "warc_date": r.warc_date, "expected_read": r.expected_read, "kind": r.kind}
                  for r in records if not r.is_html_page]
        shared = sorted({p for r in records if r.is_html_page for p in r.shared_paragraphs})
        return {
            "seed": self.seed,
            "generator": "pipeline.sampledata.crawl",
            "warc": "crawl.warc.gz",
            "image_host": IMG_HOST,
            "canary_classes": list(self.canary_classes),
            "blocklisted_domain": BLOCKLISTED_DOMAIN,
            "shared_paragraphs": [
                {"text": p, "pages": sorted(r.url for r in records if r.is_html_page and p in r.shared_paragraphs)}
                for p in shared],
            "pages": pages,
            "other_records": others,
            "images": {url: self.assets[url].truth() for url in sorted(self.assets)},
        }


def _small_edits(html_text: str, blocks: list[str], rng: random.Random, n_blocks: int = 1) -> tuple[str, dict]:
    """Change two words in each of a few middle paragraphs (a near copy); returns the HTML and the edits."""
    candidates = [b for b in blocks[1:-1] if len(b.split()) > 30 and b not in (SHARED_BYLINE, COOKIE_NOTICE)]
    rng.shuffle(candidates)
    edits = {}
    for block in candidates[:n_blocks]:
        words = block.split()
        for position in rng.sample(range(3, len(words) - 3), 2):
            words[position] = rng.choice(("quite", "really", "simply", "perhaps"))
        edited = " ".join(words)
        assert html_text.count(esc(block)) == 1
        html_text = html_text.replace(esc(block), esc(edited), 1)
        edits[block] = edited
    return html_text, edits


def _svg() -> bytes:
    return (b'<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200"><rect width="320" height="200" '
            b'fill="#eee"/><path d="M20 180 L120 60 L200 120 L300 30" stroke="#246" fill="none" stroke-width="6"/>'
            b'</svg>\n')


def _tiny_pdf() -> bytes:
    return (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
            b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def generate_sample_crawl(out_dir: str | Path, seed: int = 0, n_canary_pages: int = 48,
                          canary_classes: tuple[str, ...] = canaries.CANARY_CLASSES, bulk_pages: int = 0,
                          bulk_images_per_page: int = 1) -> dict[str, Any]:
    """Write the sample crawl (WARC, images, ground truth) into `out_dir`; return the ground truth.

    Deterministic: the same seed, canary count and canary classes give byte-identical files. Fewer
    canary classes are easier to learn (the demo's CPU smoke run uses four). `bulk_pages` adds that many
    plain articles (tag `bulk`) with `bulk_images_per_page` pictures each, served by the local image host
    without files: the volume for scale runs (`benchmarks/scale.py`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_root = out / "images"
    if image_root.exists():
        if not (out / "ground_truth.json").exists():
            raise FileExistsError(f"{image_root} exists and is not from a previous sample crawl; not replacing it")
        shutil.rmtree(image_root)
    web = SampleWeb(seed, n_canary_pages, tuple(canary_classes), bulk_pages, bulk_images_per_page)
    web.build()
    records = web.ordered_records()
    web.write_warc(out / "crawl.warc.gz", records)
    web.write_images(image_root)
    truth = web.ground_truth(records)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return truth


