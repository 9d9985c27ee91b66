"""Extraction on real pages: images stay where they stand in the main content, with the right text before them."""

from __future__ import annotations

import copy
import re

import pytest

from pipeline.config import load_config
from pipeline.decode import decode_html
from pipeline.extract import extract_page
from pipeline.html_images import mark_images, parse_html
from pipeline.read import Page

CONFIG = load_config()
_WS = re.compile(r"\s+")


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
    key, url, body = next(p for p in article_pages if p[0].startswith("06ee193de4bd"))
    names = [n.image.url.rsplit("/", 1)[1] for n in extract(url, body).document.nodes if n.image]
    assert names[:3] == ["vw-id-space-vizzion-concept-6-1.jpg", "vw-id-space-vizzion-concept-27.jpg",
                         "vw-id-space-vizzion-concept-0-1.jpg"]


def test_all_article_pages_keep_image_order_and_preceding_text(article_pages):
    """For every real article page: extracted images follow the raw HTML's order, each preceded by page text."""
    docs = images = text_checks = text_hits = 0
    for key, url, body in article_pages:
        result = extract(url, body)
        if result.document is None:
            continue
        docs += 1
        order, before = raw_order(url, body)
        last = -1
        previous_text = ""
        for node in result.document.nodes:
            if node.text is not None:
                previous_text = node.text
                continue
            images += 1
            position = next((i for i in range(last + 1, len(order)) if order[i] == node.image.url), None)
            assert position is not None, f"{key}: {node.image.url} out of page order"
            last = position
            if previous_text:
                snippet = norm(previous_text)[-25:]
                text_checks += 1
                text_hits += snippet in before[position]
            previous_text = ""
    assert docs >= 90 and images >= 300
    # trafilatura rewrites a little text (quotes, spacing); nearly every snippet must still be found before its image.
    print(f"{docs} docs, {images} images, preceding text found for {text_hits}/{text_checks}")
    assert text_hits >= 0.9 * text_checks, (text_hits, text_checks)


def test_common_crawl_warc_documents_follow_page_order(fixtures_dir):
    from warcio.archiveiterator import ArchiveIterator

    from pipeline.read import charset_of

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
