"""The pictures and text a careful reader keeps: m3w vs bare `trafilatura.extract` on Mozilla Readability's
labelled pages, in one run.

    python -m benchmarks.readability [--pages NAME ...] [--quiet] [--tiny]

Pages: `../shared/fixtures/readability/test-pages/NAME/` (130 pages, read in place), each `source.html` with
`expected.html`, what Readability keeps of it. Each page is extracted as `m3w extract` extracts it (the
extract step in-process, `extract.timeout_s=0`, every language: the gate keeps every page of this set) with
URL `http://fakehost/test/page.html?page=NAME`, and by bare `trafilatura.extract(include_images=True)`.

Pictures (issue 25's definitions):
  - a *picture* is an `<img>` of `expected.html` with a `src` (not inline data), resolved against
    `http://fakehost/test/page.html` (as the labels were written), one per URL and page: 421 on 66 pages;
  - *content pictures* are those not declared smaller than 150 px on a side (a `width`/`height` attribute that
    is a whole number below 150) and not SVG: 371; *recall* is the share of them kept;
  - a picture is matched by its `<img>` element: every URL that element names (`src`, each `srcset`
    candidate, lazy-loading `data-*` attributes, its `<picture>`'s sources) and those of the source page's
    `<img>` that names one of them and no other picture's (a larger `srcset` variant, a lazy original);
  - *precision*: the share of all kept pictures, on all 130 pages, that are pictures of `expected.html`
    (any size; also an `<img>` the label gives only a `srcset` or `data-src`, not counted in recall);
  - *order*: per page, the share of pairs of matched pictures kept in the label's order; the mean over the
    pages with at least one pair.
Text: word multisets (`\\w+`, lower-cased) of the kept text against `expected.html`'s text; per-page precision
and recall, means over the pages m3w keeps (bare trafilatura on the same pages).
`--tiny`: a few pages (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/readability.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import gzip
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._fixture_warc import FIXTURES

READABILITY = FIXTURES / "readability" / "test-pages"
LABEL_BASE = "http://fakehost/test/page.html"
CONTENT_MIN_SIDE = 150  # issue 25: smaller declared pictures are not content pictures
TINY_PAGES = ("base-url", "bug-1255978", "ehow-2", "lazy-image-1", "salon-1", "wordpress")
_WORDS = re.compile(r"\w+")


def page_url(name: str) -> str:
    return f"{LABEL_BASE}?page={name}"


def page_names() -> list[str]:
    return sorted(path.name for path in READABILITY.iterdir() if (path / "source.html.gz").exists())


def _read(name: str, file: str) -> str:
    return gzip.decompress((READABILITY / name / file).read_bytes()).decode("utf-8", "replace")


def source_html(name: str) -> bytes:
    return gzip.decompress((READABILITY / name / "source.html.gz").read_bytes())


# ---------------------------------------------------------------- labels
def element_urls(img, bases: Iterable[str]) -> set[str]:
    """Every http(s) URL an `<img>` names (src, srcset candidates, data-* attributes, its <picture>'s sources),
    resolved against each of `bases`; inline data and placeholders left out."""
    from pipeline.extract.html_images import absolutize, is_placeholder, parse_srcset

    raw: list[str] = []
    for name, value in img.attrib.items():
        if "srcset" in name:
            raw.extend(url for url, _ in parse_srcset(value))
        elif name == "src" or name.startswith("data-"):
            raw.append(value.strip())
    picture = next(img.iterancestors("picture"), None)
    if picture is not None:
        for source in picture.iter("source"):
            for name in ("srcset", "data-srcset"):
                raw.extend(url for url, _ in parse_srcset(source.get(name) or ""))
    urls = set()
    for value in raw:
        if not value or " " in value or value.lower().startswith("data:") or is_placeholder(value):
            continue
        for base in bases:
            url = absolutize(value, base)
            if url.startswith(("http://", "https://")):
                urls.add(url)
    return urls


def _declared(value: str | None) -> int | None:
    try:
        return int((value or "").strip())
    except ValueError:
        return None


@dataclass
class Picture:
    url: str  # its identity: the label's src (or first URL), resolved
    urls: set[str]  # every URL that matches it
    counted: bool  # a picture as the issue counts them (a src, not inline data)
    content: bool  # counted, not declared < 150 px on a side, not SVG


@dataclass
class Labels:
    name: str
    pictures: list[Picture]
    text: str

    @property
    def content(self) -> list[int]:
        return [i for i, picture in enumerate(self.pictures) if picture.content]


def load_labels(name: str) -> Labels:
    """`expected.html`'s pictures (each matched by its own URLs and those of the source `<img>` naming it
    alone) and text."""
    from lxml import html

    from filters.image_nodes import url_extension
    from pipeline.extract.html_images import absolutize, base_url, parse_html

    expected = html.fromstring(_read(name, "expected.html.gz"))
    pictures: list[Picture] = []
    seen: set[str] = set()
    for img in expected.iter("img"):
        own = element_urls(img, (LABEL_BASE,))
        src = (img.get("src") or "").strip()
        counted = bool(src) and not src.lower().startswith("data:")
        identity = absolutize(src, LABEL_BASE) if counted else min(own, default="")
        if not identity or identity in seen:
            continue
        seen.add(identity)
        sides = [side for side in (_declared(img.get("width")), _declared(img.get("height"))) if side is not None]
        small = bool(sides) and min(sides) < CONTENT_MIN_SIDE
        content = counted and not small and url_extension(identity) != "svg"
        pictures.append(Picture(identity, own | {identity}, counted, content))
    source = parse_html(source_html(name).decode("utf-8", "replace"))
    url = page_url(name)
    bases = {url, base_url(source, url)}
    for img in source.iter("img"):
        urls = element_urls(img, bases)
        owners = [picture for picture in pictures if picture.urls & urls]
        if len(owners) == 1:
            owners[0].urls |= urls
    return Labels(name, pictures, expected.text_content())


# ---------------------------------------------------------------- scores
@dataclass
class PageScore:
    kept_document: bool
    recalled: set[int] = field(default_factory=set)  # content pictures kept (label indices)
    kept: int = 0  # pictures kept
    right: int = 0  # ... that are label pictures
    missed: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    order: float | None = None  # share of matched picture pairs in the label's order
    text_precision: float | None = None
    text_recall: float | None = None


def pair_order(sequence: list[int]) -> float | None:
    agree = total = 0
    for i, first in enumerate(sequence):
        for second in sequence[i + 1:]:
            if first != second:
                total += 1
                agree += first < second
    return agree / total if total else None


def score_page(labels: Labels, output: list[tuple[str, str]] | None) -> PageScore:
    """One page's output ([(kind, value)]: "image" with its URL, "text" with a paragraph; None: no document)."""
    score = PageScore(kept_document=output is not None)
    by_url: dict[str, list[int]] = {}
    for index, picture in enumerate(labels.pictures):
        for url in picture.urls:
            by_url.setdefault(url, []).append(index)
    matched: list[int] = []
    for kind, url in output or []:
        if kind != "image":
            continue
        score.kept += 1
        candidates = by_url.get(url, [])
        if not candidates:
            score.extras.append(url)
            continue
        score.right += 1
        fresh = [i for i in candidates if i not in matched]
        if fresh:
            matched.append(fresh[0])
    score.recalled = set(matched) & set(labels.content)
    score.missed = [labels.pictures[i].url for i in labels.content if i not in score.recalled]
    score.order = pair_order(matched)
    if output is not None:
        got = Counter(_WORDS.findall("\n".join(v for k, v in output if k == "text").lower()))
        want = Counter(_WORDS.findall(labels.text.lower()))
        common = sum((got & want).values())
        score.text_recall = common / sum(want.values()) if want else None
        score.text_precision = common / sum(got.values()) if got else None
    return score


@dataclass
class Summary:
    recall: float
    precision: float
    precision_pictured: float  # over the pages whose label has pictures
    order: float
    pages_kept: int
    text_precision: float
    text_recall: float


def summarize(scores: dict[str, PageScore], labels: dict[str, Labels], text_pages: set[str]) -> Summary:
    content = sum(len(labels[name].content) for name in scores)
    kept = sum(s.kept for s in scores.values())
    pictured = [s for name, s in scores.items() if any(p.counted for p in labels[name].pictures)]
    kept_pictured = sum(s.kept for s in pictured)
    orders = [s.order for s in scores.values() if s.order is not None]
    text = [scores[name] for name in sorted(text_pages)]
    return Summary(
        recall=sum(len(s.recalled) for s in scores.values()) / max(1, content),
        precision=sum(s.right for s in scores.values()) / kept if kept else 0.0,
        precision_pictured=sum(s.right for s in pictured) / kept_pictured if kept_pictured else 0.0,
        order=statistics.fmean(orders) if orders else 1.0,
        pages_kept=sum(s.kept_document for s in scores.values()),
        text_precision=statistics.fmean(s.text_precision or 0.0 for s in text) if text else 0.0,
        text_recall=statistics.fmean(s.text_recall or 0.0 for s in text) if text else 0.0,
    )


# ---------------------------------------------------------------- the two extractors
def m3w_extractor(overrides: Iterable[str] = ()) -> Callable[[str, bytes], list[tuple[str, str]] | None]:
    """m3w's extract step in-process (as `m3w extract` with every language: `pipeline.jobs.stages.page_extractor`)."""
    from pipeline.jobs.stages import page_extractor
    from pipeline.read.crawl import Page
    from pipeline.settings import load_config

    extractor = page_extractor(load_config(overrides=["extract.timeout_s=0", "filters.language.languages=[]",
                                                      *overrides]))

    def run(url: str, body: bytes) -> list[tuple[str, str]] | None:
        document = extractor(Page(url=url, body=body, charset=None, source="readability")).document
        if document is None:
            return None
        return [("image", node.image.url) if node.image is not None else ("text", node.text) for node in document.nodes]

    return run


def bare_trafilatura(url: str, body: bytes) -> list[tuple[str, str]] | None:
    """`trafilatura.extract(include_images=True)`, its XML read into paragraphs and image URLs (each resolved
    against the page, its first word only: trafilatura sometimes keeps a srcset descriptor)."""
    import trafilatura
    from lxml import etree

    from pipeline.extract.html_images import absolutize
    from pipeline.extract.order import Collector

    xml = trafilatura.extract(body.decode("utf-8", "replace"), url=url, include_images=True, output_format="xml")
    if not xml:
        return None
    root = etree.fromstring(xml.encode("utf-8"))
    main = root.find(".//main")
    collector = Collector(image_key=lambda src: absolutize((src or "").split(" ")[0], url) or None)
    collector.walk(main if main is not None else root)
    return collector.finish()


def run_pages(names: list[str], extract) -> tuple[dict[str, list[tuple[str, str]] | None], float]:
    """Each page's output and the CPU seconds it took."""
    bodies = {name: source_html(name) for name in names}
    started = time.process_time()
    outputs = {name: extract(page_url(name), bodies[name]) for name in names}
    return outputs, time.process_time() - started


def evaluate(names: list[str], outputs: dict[str, dict[str, list | None]], labels: dict[str, Labels],
             keeper: str) -> dict[str, tuple[Summary, dict[str, PageScore]]]:
    """Per system: its summary and page scores; text over the pages `keeper` keeps."""
    scores = {system: {name: score_page(labels[name], out[name]) for name in names}
              for system, out in outputs.items()}
    kept = {name for name, s in scores[keeper].items() if s.kept_document}
    return {system: (summarize(page_scores, labels, kept), page_scores) for system, page_scores in scores.items()}


# ---------------------------------------------------------------- report
def print_table(results: dict[str, tuple[Summary, dict[str, PageScore]]], labels: dict[str, Labels],
                seconds: dict[str, float]) -> None:
    pages = len(labels)
    with_pictures = sum(1 for label in labels.values() if any(p.counted for p in label.pictures))
    counted = sum(sum(p.counted for p in label.pictures) for label in labels.values())
    content = sum(len(label.content) for label in labels.values())
    print(f"\n{pages} labelled pages ({with_pictures} with pictures: {counted} pictures, {content} content pictures)")
    print("| | content-picture recall | precision (all kept pictures) | precision on pages with pictures "
          "| image order | pages kept | text precision | text recall | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for system, (summary, _) in results.items():
        print(f"| {system} | {summary.recall:.3f} | {summary.precision:.3f} | {summary.precision_pictured:.3f} "
              f"| {summary.order:.3f} "
              f"| {summary.pages_kept} | {summary.text_precision:.3f} | {summary.text_recall:.3f} "
              f"| {seconds[system]:.1f} |")


def print_pages(results: dict[str, tuple[Summary, dict[str, PageScore]]], labels: dict[str, Labels]) -> None:
    print("\nper page: content pictures missed and kept pictures that are not the label's "
          "(m3w, then bare where it differs)")
    systems = list(results)
    for name in labels:
        lines = []
        for system in systems:
            score = results[system][1][name]
            if not score.missed and not score.extras:
                continue
            state = "" if score.kept_document else " (no document)"
            lines.append(f"  {system}{state}: missed {len(score.missed)}/{len(labels[name].content)} "
                         f"{_short(score.missed)}; extras {len(score.extras)} {_short(score.extras)}")
        if lines:
            print(name)
            print("\n".join(lines))


def _short(urls: list[str], limit: int = 4) -> str:
    shown = [url.rsplit("/", 1)[-1][:48] or url[-48:] for url in urls[:limit]]
    return "[" + ", ".join(shown) + (", ..." if len(urls) > limit else "") + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", nargs="*", help="only these pages (names of test-pages folders)")
    parser.add_argument("--quiet", action="store_true", help="the table only, no per-page lists")
    parser.add_argument("--tiny", action="store_true", help=f"{len(TINY_PAGES)} pages: seconds")
    args = parser.parse_args()
    names = list(TINY_PAGES) if args.tiny else (args.pages or page_names())
    flags = " --tiny" if args.tiny else (" --pages " + " ".join(args.pages) if args.pages else "")
    print(f"command: python -m benchmarks.readability{flags}   ({len(names)} labelled pages)")
    labels = {name: load_labels(name) for name in names}
    systems = {"bare trafilatura.extract(include_images=True)": bare_trafilatura, "m3w extract": m3w_extractor()}
    outputs, seconds = {}, {}
    for system, extract in systems.items():
        outputs[system], seconds[system] = run_pages(names, extract)
    results = evaluate(names, outputs, labels, keeper="m3w extract")
    print_table(results, labels, seconds)
    bare, m3w = (results[system][0] for system in systems)
    print(f"\nm3w's content-picture recall - bare's: {m3w.recall - bare.recall:+.3f}")
    if not args.quiet:
        print_pages(results, labels)


if __name__ == "__main__":
    main()
