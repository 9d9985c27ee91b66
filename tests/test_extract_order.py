"""DOM-order repair on small hand-written pages: lead figures above and below their headline, a captioned
<figure> inside a list, images inside tables; what happens when trafilatura moves an image or a paragraph;
paragraphs that cannot be found; the DOM gaps recorded in each image's metadata."""

from __future__ import annotations

import pytest
from lxml import etree

import pipeline.extract.pages as extract_module
from pipeline.extract.content import main_content
from pipeline.extract.html_images import dom_text, mark_images, normalise, parse_html
from pipeline.extract.order import Collector, dom_order, locate
from pipeline.extract.settings import ExtractSettings
from pipeline.jobs.stages import extract_page
from pipeline.read.crawl import Page
from pipeline.settings import load_config

CONFIG = load_config(overrides=["extract.timeout_s=0"])
URL = "https://news.example/park.html"
HEADLINE = "Council expands the river park"
P = [
    "The city council voted on Tuesday to expand the river park by twelve hectares, after a decade of debate.",
    "Residents had asked for more green space since the factory closed, and the plan adds trails and a wetland.",
    "The mayor said construction will start next spring and should be finished within two years.",
    "Critics argued that the money could have gone to housing, but the vote passed with a clear majority.",
    "Local schools plan to use the wetland for science lessons, and volunteers have signed up to plant trees.",
]
CAPTION = "The old factory site seen from above."
FIGURE = (f'<figure><img src="https://img.example/park-aerial.jpg" width="800" height="500" alt="aerial">'
          f"<figcaption>{CAPTION}</figcaption></figure>")


def html(article: str) -> bytes:
    return (f"<html><head><title>Park</title></head><body><nav><a href='/'>Home</a> <a href='/city'>City</a></nav>"
            f"<article>{article}</article><footer>Contact us</footer></body></html>").encode()


def paragraphs(*texts: str) -> str:
    return "".join(f"<p>{t}</p>" for t in texts)


def sequence(document) -> list[str]:
    """The document as a list: 'IMG:<file name>' per image, the first 24 characters per paragraph."""
    out = []
    for node in document.nodes:
        if node.image is not None:
            out.append("IMG:" + node.image.url.rsplit("/", 1)[1])
        else:
            out.extend(p[:24] for p in node.text.split("\n\n"))
    return out


def extract(body: bytes, config=CONFIG):
    return extract_page(Page(url=URL, body=body, charset="utf-8", source="hand"), config)


def test_lead_figure_below_its_headline_stays_below():
    result = extract(html(f"<h1>{HEADLINE}</h1><p>{P[0]}</p>{FIGURE}" + paragraphs(*P[1:])))
    got = sequence(result.document)
    assert got[:3] == [HEADLINE[:24], P[0][:24], "IMG:park-aerial.jpg"]
    assert got[3:] == [p[:24] for p in P[1:]]


def test_lead_figure_above_its_headline_stays_above():
    result = extract(html(f"{FIGURE}<h1>{HEADLINE}</h1><p>{P[0]}</p>" + paragraphs(*P[1:])))
    got = sequence(result.document)
    assert got[0] == "IMG:park-aerial.jpg"
    assert got[1:3] == [HEADLINE[:24], P[0][:24]]


def test_captioned_figure_inside_a_list_sits_between_its_items():
    body = html(f"<h1>{HEADLINE}</h1><p>{P[0]}</p><ul><li>{P[1]}</li><li>{FIGURE}</li><li>{P[2]}</li></ul>"
                + paragraphs(P[3], P[4]))
    got = sequence(extract(body).document)
    at = got.index("IMG:park-aerial.jpg")
    assert got[at - 1] == P[1][:24]
    assert got[at + 1].startswith(CAPTION[:24]) and P[2][:24] in "\n".join(
        n.text for n in extract(body).document.nodes if n.text)


def test_images_inside_table_cells_keep_their_cell_order():
    img = "<img src='https://img.example/{}.jpg' width='400' height='300'>"
    table = (f"<table><tr><td>{P[1]}</td><td>{img.format('plan-a')}</td></tr>"
             f"<tr><td>{img.format('plan-b')}</td><td>{P[2]}</td></tr></table>")
    result = extract(html(f"<h1>{HEADLINE}</h1><p>{P[0]}</p>{table}" + paragraphs(P[3], P[4])))
    nodes = result.document.nodes
    kinds = ["IMG:" + n.image.url.rsplit("/", 1)[1] if n.image else n.text for n in nodes]
    a, b = kinds.index("IMG:plan-a.jpg"), kinds.index("IMG:plan-b.jpg")
    assert a < b
    assert kinds[a - 1].endswith(P[1])  # the cell text before the first image
    assert kinds[b + 1].startswith(P[2])  # the cell text after the second
    assert " " in kinds[b + 1] and "trails and a wetland." not in kinds[b + 1]


def _moved_by_trafilatura(monkeypatch, reorder):
    """Make trafilatura's output move items: `reorder` rearranges the children of its real body."""
    def moved_main_content(tree, url, settings):
        body = main_content(tree, url, settings)
        children = list(body)
        for child in children:
            body.remove(child)
        for child in reorder(children):
            body.append(child)
        return body

    monkeypatch.setattr(extract_module, "main_content", moved_main_content)


def test_an_image_trafilatura_moves_above_the_headline_goes_back(monkeypatch):
    page = html(f"<h1>{HEADLINE}</h1><p>{P[0]}</p>{FIGURE}" + paragraphs(*P[1:]))
    before = sequence(extract(page).document)

    def image_first(children):
        graphic = next(c for c in children if c.tag == "graphic" or c.find(".//graphic") is not None)
        return [graphic] + [c for c in children if c is not graphic]

    _moved_by_trafilatura(monkeypatch, image_first)
    assert sequence(extract(page, load_config(overrides=["extract.timeout_s=0", "extract.dom_order=false"])).document
                    )[0] == "IMG:park-aerial.jpg"
    repaired = extract(page)
    assert sequence(repaired.document) == before
    assert repaired.items_moved["images"] + repaired.items_moved["paragraphs"] >= 1


def test_a_paragraph_trafilatura_moves_goes_back(monkeypatch):
    page = html(f"<h1>{HEADLINE}</h1>" + paragraphs(*P[:2]) + FIGURE + paragraphs(*P[2:]))
    before = sequence(extract(page).document)

    def pull_quote_last(children):  # P[0] (a "pull quote") lands at the end
        quote = next(c for c in children if (c.text or "").startswith(P[0][:20]))
        return [c for c in children if c is not quote] + [quote]

    _moved_by_trafilatura(monkeypatch, pull_quote_last)
    repaired = extract(page)
    assert sequence(repaired.document) == before
    assert repaired.items_moved["paragraphs"] == 1


def test_unlocatable_paragraph_stays_where_trafilatura_put_it_and_is_counted():
    tree = parse_html(html(f"<h1>{HEADLINE}</h1>" + paragraphs(*P[:2]) + FIGURE + paragraphs(*P[2:])).decode())
    images = mark_images(tree, URL)
    dom = dom_text(images)
    items = [("text", P[0]), ("text", "Text written by no one on this page at all."), ("image", 0), ("text", P[1])]
    placed = locate(items, dom, 40)
    assert [p.pos is None for p in placed] == [False, True, False, False]
    ordered = dom_order(placed)
    # P[1] stands before the figure in the page: it moves up; the unknown paragraph stays right after P[0].
    assert [p.value for p in ordered] == [P[0], "Text written by no one on this page at all.", P[1], 0]
    result = extract_page(Page(url=URL, body=html(f"<h1>{HEADLINE}</h1>" + paragraphs(*P)), charset="utf-8",
                               source="hand"), load_config(overrides=["extract.timeout_s=0",
                                                                      "extract.require_images=false"]))
    assert result.paragraphs_unlocated == 0


def test_repeated_heading_takes_the_place_between_its_neighbours():
    """A headline also in the menu: the copy between the paragraphs around it is the one that counts."""
    page = (f"<html><body><nav><a href='/a'>{HEADLINE}</a></nav><article><p>{P[0]}</p><h2>{HEADLINE}</h2>"
            f"<p>{P[1]}</p></article></body></html>")
    images = mark_images(parse_html(page), URL)
    dom = dom_text(images)
    placed = locate([("text", P[0]), ("text", HEADLINE), ("text", P[1])], dom, 40)
    assert len(dom.occurrences(normalise(HEADLINE))) == 2
    assert placed[0].pos < placed[1].pos < placed[2].pos


def test_dom_gaps_measure_page_text_between_an_image_and_its_neighbours():
    skipped = "A sidebar note that trafilatura leaves out."
    page = html(f"<h1>{HEADLINE}</h1><p>{P[0]}</p><aside>{skipped}</aside>{FIGURE}" + paragraphs(*P[1:]))
    tree = parse_html(page.decode())
    mark_images(tree, URL)
    body = main_content(tree, URL, ExtractSettings.from_config(CONFIG["extract"]))
    collector = Collector()
    collector.walk(body)
    items = collector.finish()
    (image,) = [n.image for n in extract(page).document.nodes if n.image]
    assert skipped not in etree.tostring(body, encoding=str)
    assert image.meta["dom_gap_before"] == len(normalise(skipped))
    caption_kept = any(kind == "text" and value.startswith(CAPTION) for kind, value in items)
    assert image.meta["dom_gap_after"] == (0 if caption_kept else len(normalise(CAPTION)))


@pytest.mark.parametrize("dom_order_on", [True, False])
def test_dom_order_switch_keeps_the_same_content(dom_order_on):
    page = html(f"{FIGURE}<h1>{HEADLINE}</h1>" + paragraphs(*P))
    config = load_config(overrides=["extract.timeout_s=0", f"extract.dom_order={str(dom_order_on).lower()}"])
    document = extract(page, config).document
    assert sorted(sequence(document)) == sorted(sequence(extract(page).document))
