"""Extraction on real pages: images stay where they stand in the main content, with the right text before them."""

from __future__ import annotations

import copy
import re

import pytest

from pipeline.extract.html_images import mark_images, parse_html
from pipeline.jobs.stages import extract_page
from pipeline.read.crawl import Page
from pipeline.read.decode import decode_html
from pipeline.settings import load_config

CONFIG = load_config()
_WS = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[\W_]+")


def norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def extract(url: str, body: bytes):
    return extract_page(Page(url=url, body=body, charset=None, source="fixture"), CONFIG)


def raw_order(url: str, body: bytes) -> tuple[list[str], list[str]]:
    """Oracle from the raw HTML alone: every <img>'s resolved URL in document order, and the page text before it."""
    tree = parse_html(decode_html(body)[0])
    candidates = mark_images(copy.deepcopy(tree), url)
    for bad in tree.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    for index, img in enumerate(tree.iter("img")):
        img.tail = f" \u2063M3W{index}\u2063 " + (img.tail or "")
    text = tree.text_content()
    before = []
    for index in range(len(candidates)):
        cut = text.find(f"\u2063M3W{index}\u2063")
        before.append(norm(re.sub("\u2063M3W\\d+\u2063", " ", text[:cut])) if cut >= 0 else "")
    return [c.url for c in candidates], before


# Hand-checked against the raw HTML: the image that follows a sentence in the article body.
HAND_CHECKED = [
    ("06ee193de4bd", "a potential production version for North America and Europe.",
     "https://scdn.slashgear.com/wp-content/uploads/2019/11/vw-id-space-vizzion-concept-6-1.jpg"),
    ("33fe2471fd55", "previews",
     "https://www.inexhibit.com/wp-content/uploads/2018/09/Amsterdam-Light-Festival-2018-2019-Light-a-Wish"),
]


@pytest.mark.parametrize(("key_prefix", "text_before", "image_prefix"), HAND_CHECKED)
def test_hand_checked_image_follows_its_sentence(article_pages, key_prefix, text_before, image_prefix):
    key, url, body = next(p for p in article_pages if p[0].startswith(key_prefix))
    doc = extract(url, body).document
    assert doc is not None
    for i, node in enumerate(doc.nodes):
        if node.image is not None and node.image.url.startswith(image_prefix):
            assert i > 0 and doc.nodes[i - 1].text is not None
            assert norm(doc.nodes[i - 1].text).endswith(text_before)
            return
    pytest.fail(f"image {image_prefix} not extracted from {url}")


def test_slashgear_images_keep_page_order(article_pages):
    """The lead picture (above the first paragraph, which trafilatura leaves out), then the article's own."""
    key, url, body = next(p for p in article_pages if p[0].startswith("06ee193de4bd"))
    nodes = extract(url, body).document.nodes
    names = [n.image.url.rsplit("/", 1)[1] for n in nodes if n.image]
    assert names[:4] == ["vw-id-space-vizzion-concept-2-1-1280x720.jpg", "vw-id-space-vizzion-concept-6-1.jpg",
                         "vw-id-space-vizzion-concept-27.jpg", "vw-id-space-vizzion-concept-0-1.jpg"]
    assert nodes[0].image is not None and nodes[1].text.startswith("Volkswagen’s first ID.3")


def page_stream(url: str, body: bytes) -> tuple[str, dict[str, list[int]]]:
    """Oracle from the raw HTML alone: the page's text (letters and digits, lower-cased) and where each image
    URL stands in it."""
    tree = parse_html(decode_html(body)[0])
    urls = [c.url for c in mark_images(copy.deepcopy(tree), url)]
    for code in tree.xpath("//script|//style"):
        code.text = None
    for index, img in enumerate(tree.iter("img")):
        img.tail = f" \u2063M3W{index}\u2063 " + (img.tail or "")
    parts = re.split("\u2063M3W(\\d+)\u2063", tree.text_content())
    text, at = "", {}
    for i, part in enumerate(parts):
        if i % 2:
            at.setdefault(urls[int(part)], []).append(len(text))
        else:
            text += _NOT_WORD.sub("", part.lower())
    return text, at


def flat(document) -> list[tuple[str, str]]:
    items = []
    for node in document.nodes:
        if node.image is not None:
            items.append(("image", node.image.url))
        else:
            items.extend(("text", p) for p in node.text.split("\n\n"))
    return items


def neighbour_checks(items: list[tuple[str, str]], text: str, at: dict[str, list[int]]) -> tuple[int, int]:
    """(checks, hits): for each image, is the paragraph right before it in the document the last of the
    document's paragraphs before it in the page, and the one right after it the first after it in the page?
    Only images and paragraphs found exactly once in the page are judged."""
    def place(kind, value):
        if kind == "image":
            found = at.get(value, [])
        else:
            key = _NOT_WORD.sub("", value.lower())[:40]
            found = [m.start() for m in re.finditer(re.escape(key), text)] if len(key) >= 8 else []
        return found[0] if len(found) == 1 else None

    places = [place(kind, value) for kind, value in items]
    paragraph_places = sorted(p for (kind, _), p in zip(items, places) if kind == "text" and p is not None)
    checks = hits = 0
    for i, (kind, _) in enumerate(items):
        if kind != "image" or places[i] is None:
            continue
        here = places[i]
        if i > 0 and items[i - 1][0] == "text" and places[i - 1] is not None:
            checks += 1
            hits += places[i - 1] == max((p for p in paragraph_places if p < here), default=None)
        if i + 1 < len(items) and items[i + 1][0] == "text" and places[i + 1] is not None:
            checks += 1
            hits += places[i + 1] == min((p for p in paragraph_places if p >= here), default=None)
    return checks, hits


def one_block_early(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every image moved above the paragraph before it: what the placement check must catch."""
    out = list(items)
    for i in range(1, len(out)):
        if out[i][0] == "image" and out[i - 1][0] == "text":
            out[i - 1], out[i] = out[i], out[i - 1]
    return out


@pytest.fixture(scope="module")
def article_results(article_pages):
    """(key, url, raw html, Extracted) of every article page, extracted once for the tests below."""
    return [(key, url, body, extract(url, body)) for key, url, body in article_pages]


def test_each_image_sits_between_the_paragraphs_around_it_in_the_page(article_results):
    """On every real article page: the text block immediately before and after each image is the one the
    page has there (among the extracted paragraphs); moving every image one block early must fail."""
    docs = checks = hits = early_checks = early_hits = 0
    for _key, url, body, result in article_results:
        if result.document is None:
            continue
        docs += 1
        text, at = page_stream(url, body)
        items = flat(result.document)
        c, h = neighbour_checks(items, text, at)
        checks, hits = checks + c, hits + h
        c, h = neighbour_checks(one_block_early(items), text, at)
        early_checks, early_hits = early_checks + c, early_hits + h
    print(f"{docs} docs: {hits}/{checks} neighbours right; moved one block early: {early_hits}/{early_checks}")
    assert docs >= 90 and checks >= 350
    assert hits >= 0.99 * checks, (hits, checks)
    assert early_hits < 0.5 * early_checks, (early_hits, early_checks)


def test_images_keep_page_order_on_every_article_page(article_results):
    for key, url, body, result in article_results:
        if result.document is None:
            continue
        order, _ = raw_order(url, body)
        last = -1
        for image in result.document.images:
            position = next((i for i in range(last + 1, len(order)) if order[i] == image.url), None)
            assert position is not None, f"{key}: {image.url} out of page order"
            last = position


def test_common_crawl_warc_documents_follow_page_order(fixtures_dir):
    from warcio.archiveiterator import ArchiveIterator

    from pipeline.read.crawl import charset_of

    docs = 0
    with open(fixtures_dir / "warc" / "warcfile.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            if record.rec_type != "response" or "html" not in (record.http_headers.get_header("Content-Type") or ""):
                continue
            url = record.rec_headers.get_header("WARC-Target-URI")
            body = record.content_stream().read()
            result = extract_page(Page(url=url, body=body, charset=charset_of(
                record.http_headers.get_header("Content-Type")), source="warcfile"), CONFIG)
            if result.document is None:
                continue
            docs += 1
            order, _ = raw_order(url, body)
            positions = [order.index(n.image.url) for n in result.document.nodes if n.image]
            assert positions == sorted(positions)
            assert all(n.image.url.startswith(("http://", "https://")) for n in result.document.nodes if n.image)
    assert docs >= 3
