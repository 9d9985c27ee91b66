"""The article's pictures from the page's structure (pipeline/extract/article.py, filters/image_nodes.py
`ImagePlaceRules`), on small hand-written pages: figures, lazy-loaded and noscript pictures and the lead picture
are kept in their place; share bars, related stories, teasers, bylines and hidden elements are dropped with their
reason; every <img> of a page is counted once; the thresholds at their boundaries."""

from __future__ import annotations

import pytest

from pipeline.extract.html_images import parse_html
from pipeline.jobs.stages import extract_page
from pipeline.read.crawl import Page
from pipeline.settings import load_config

CONFIG = load_config(overrides=["extract.timeout_s=0"])
URL = "https://news.example/2024/park.html"
P = [
    "The city council voted on Tuesday to expand the river park by twelve hectares, after a decade of debate.",
    "Residents had asked for more green space since the factory closed, and the plan adds trails and a wetland.",
    "The mayor said construction will start next spring and should be finished within two years at the most.",
    "Critics argued that the money could have gone to housing, but the vote passed with a clear majority.",
    "Local schools plan to use the wetland for science lessons, and volunteers have signed up to plant trees.",
]


def img(name: str, **attrs: str) -> str:
    extra = "".join(f' {key.replace("_", "-")}="{value}"' for key, value in attrs.items())
    return f'<img src="https://img.example/{name}" alt="{name}"{extra}>'


def page(article: str, before: str = "", after: str = "") -> bytes:
    return (f"<html><head><title>Park</title></head><body><nav><a href='/'>Home</a> <a href='/city'>City</a>"
            f"</nav>{before}<article>{article}</article>{after}<footer>Contact us</footer></body></html>").encode()


def prose(*texts: str) -> str:
    return "".join(f"<p>{text}</p>" for text in texts)


def extract(body: bytes, *overrides: str):
    config = load_config(overrides=["extract.timeout_s=0", *overrides]) if overrides else CONFIG
    return extract_page(Page(url=URL, body=body, charset="utf-8", source="hand"), config)


def sequence(result) -> list[str]:
    """'IMG:<file>' per picture, the first 12 characters per paragraph."""
    out = []
    for node in result.document.nodes:
        if node.image is not None:
            out.append("IMG:" + node.image.url.rsplit("/", 1)[1])
        else:
            out.extend(paragraph[:12] for paragraph in node.text.split("\n\n"))
    return out


def pictures(result) -> list[str]:
    return [item[4:] for item in sequence(result) if item.startswith("IMG:")] if result.document else []


def accounted(result) -> bool:
    """Every <img> of the page is kept or counted under one drop reason."""
    kept = len(result.document.images) if result.document else 0
    return result.images_in == kept + sum(result.image_drops.values())


def test_figures_between_paragraphs_are_kept_in_place():
    gallery = f'<div class="gallery"><figure>{img("a.jpg")}</figure><figure>{img("b.jpg")}</figure></div>'
    result = extract(page(prose(*P[:2]) + gallery + prose(*P[2:])))
    assert sequence(result) == [P[0][:12], P[1][:12], "IMG:a.jpg", "IMG:b.jpg", P[2][:12], P[3][:12], P[4][:12]]
    assert accounted(result)


def test_lazy_loaded_picture_is_kept_with_its_real_source():
    lazy = '<figure><img src="data:image/gif;base64,R0lGOD" data-src="https://img.example/lazy.jpg"></figure>'
    result = extract(page(prose(*P[:2]) + lazy + prose(*P[2:])))
    assert pictures(result) == ["lazy.jpg"]


def test_noscript_copy_and_its_stand_ins_are_one_picture_with_the_copys_source():
    lazy = ('<figure><div><div class="blur"><img src="https://img.example/tiny.jpg?q=20"></div><img>'
            '<noscript><img src="https://img.example/full.jpg"></noscript></div></figure>')
    result = extract(page(prose(*P[:2]) + lazy + prose(*P[2:])))
    assert pictures(result) == ["full.jpg"]
    assert result.image_drops["lazy_copy"] == 2 and accounted(result)


def test_lead_picture_stands_before_the_first_paragraph():
    """The headline and the lead picture sit above the article's body; trafilatura keeps neither the picture
    nor anything that would place it."""
    header = f'<header><h1>Council expands the river park</h1><div class="hero">{img("lead.jpg")}</div></header>'
    result = extract(page(header + f'<div class="body">{prose(*P)}</div>'))
    got = sequence(result)
    assert "IMG:lead.jpg" in got
    assert got.index("IMG:lead.jpg") < got.index(P[0][:12])


def test_lead_picture_boundary_in_letters_before_the_first_paragraph():
    """`extract.lead_chars`: a picture exactly that many letters/digits of page text before the first
    paragraph is the lead; one letter more and it is outside the article."""
    def lead(byline: str, *overrides: str) -> list[str]:
        header = f'<header><div class="hero">{img("lead.jpg")}</div><p class="meta">{byline}</p></header>'
        return pictures(extract(page(header + f'<div class="body">{prose(*P)}</div>'), *overrides))

    text = "x" * 40  # 40 letters between the picture and the first paragraph (a short dateline, not kept)
    assert lead(text, "extract.lead_chars=40") == ["lead.jpg"]
    assert lead(text, "extract.lead_chars=39") == []


def test_share_bar_icons_inside_the_article_are_dropped():
    share = ('<div class="share-buttons">' + "".join(f'<a href="https://{site}.example/share?u=x">'
                                                     f'{img(site + ".png")}</a>' for site in ("mail", "chat"))
             + "</div>")
    result = extract(page(prose(*P[:2]) + share + prose(*P[2:]) + f"<figure>{img('photo.jpg')}</figure>"
                          + prose("The park will open to the public once the last section of the trail is done.")))
    assert pictures(result) == ["photo.jpg"]
    assert result.image_drops["in_share_bar"] == 2 and accounted(result)


def test_related_story_thumbnails_are_dropped():
    related = ('<ul class="story-list">' + "".join(
        f'<li><a href="/2024/story-{n}.html">{img(f"thumb{n}.jpg")}</a><a href="/2024/story-{n}.html">Another story '
        f"number {n}</a></li>" for n in (1, 2, 3)) + "</ul>")
    aside = f'<div class="related-posts">{img("related.jpg")}</div>'
    result = extract(page(prose(*P[:3]) + f"<figure>{img('photo.jpg')}</figure>" + aside + prose(*P[3:]) + related))
    assert pictures(result) == ["photo.jpg"]
    assert result.image_drops["in_related"] == 1
    assert result.image_drops["teaser_link"] + result.image_drops["outside_article"] == 3


def test_a_linked_picture_inside_a_kept_paragraph_is_no_teaser():
    linked = f'<p>{P[2]} <a href="https://shop.example/bench">{img("bench.jpg")}</a></p>'
    result = extract(page(prose(*P[:2]) + linked + prose(*P[3:])))
    assert pictures(result) == ["bench.jpg"]


def test_byline_and_hidden_pictures_are_dropped():
    byline = f'<div class="author-box">{img("portrait.jpg")}<span>By Ann Example</span></div>'
    hidden = f'<div style="display: none">{img("hidden.jpg")}</div>'
    result = extract(page(byline + prose(*P[:2]) + hidden + f"<figure>{img('photo.jpg')}</figure>" + prose(*P[2:])))
    assert pictures(result) == ["photo.jpg"]
    assert result.image_drops["in_byline"] == 1 and result.image_drops["hidden"] == 1


def test_pictures_in_the_sidebar_and_the_site_header_are_outside_the_article():
    sidebar = f'<div class="column">{img("banner.jpg")}<p>Subscribe to our weekly letter.</p></div>'
    result = extract(page(prose(*P[:2]) + f"<figure>{img('photo.jpg')}</figure>" + prose(*P[2:]),
                          before=f'<div class="masthead">{img("masthead.jpg")}</div>', after=sidebar))
    assert pictures(result) == ["photo.jpg"]
    assert result.image_drops["outside_article"] == 2 and accounted(result)


STEPS = "".join(f'<div class="step"><p>{text}</p><div class="slide">{img(f"step{n}.jpg")}</div></div>'
                for n, text in enumerate(P))


def test_a_page_whose_pictures_trafilatura_drops_keeps_them():
    """Each step's picture in a slide, which trafilatura's cleaning removes: with its pictures only, the page
    would vanish as `no_images`; its structure keeps them, each after its step."""
    result = extract(page(STEPS))
    assert result.drop is None
    assert sequence(result) == [item for n, text in enumerate(P) for item in (text[:12], f"IMG:step{n}.jpg")]


def test_without_article_pictures_only_trafilaturas_pictures_are_candidates():
    off = extract(page(STEPS), "extract.article_pictures=false")
    assert off.drop == "no_images" and off.image_drops == {"outside_article": len(P)}


def test_same_picture_twice_is_kept_once():
    photo = f"<figure>{img('photo.jpg')}</figure>"
    result = extract(page(prose(*P[:2]) + photo + prose(*P[2:4]) + photo + prose(P[4])))
    assert pictures(result) == ["photo.jpg"] and result.image_drops["repeated"] == 1


@pytest.mark.parametrize(("share", "teaser"), [(0.9, True), (0.91, False)])
def test_teaser_card_boundary_at_its_share_of_link_text(share, teaser):
    """`image_nodes.place.teaser_link_share`: a linked picture whose card's text is 90% link text (the headline
    is a link, a tenth of the text is not) is a teaser at 0.9 and not at 0.91, even though trafilatura kept it.
    (The headline links elsewhere than the picture: a card whose headline opens the picture's page is a teaser
    at any share, below.)"""
    headline, rest = "h" * 90, "r" * 10
    card = (f'<div class="card"><a href="/2024/other.html">{img("card.jpg")}</a>'
            f'<p><a href="/2024/another.html">{headline}</a> {rest}</p></div>')
    result = extract(page(prose(*P[:2]) + card + prose(*P[2:])), f"image_nodes.place.teaser_link_share={share}")
    kept = "card.jpg" in (pictures(result) if result.document else [])
    assert kept is not teaser


def test_place_rules_are_judged_below_the_article_container_only():
    """A word on the article's own container (or above it) says nothing about its pictures."""
    body = (f'<div class="post has-sidebar social-article">{prose(*P[:2])}<figure>{img("photo.jpg")}</figure>'
            f"{prose(*P[2:])}</div>")
    assert pictures(extract(page(body))) == ["photo.jpg"]


def test_dom_text_spans_each_element_that_holds_a_picture():
    from pipeline.extract.html_images import dom_text, mark_images

    tree = parse_html(f"<html><body><p>abc</p><div id='d'><span>de{img('x.jpg')}f</span></div>gh</body></html>")
    images = mark_images(tree, URL)
    dom = dom_text(images)
    assert dom.text == "abcdefgh" and dom.image_at == {0: 5}
    spans = {element.tag: span for element, span in dom.spans.items()}
    assert spans == {"span": (3, 6), "div": (3, 6), "body": (0, 8)}


def test_pictures_trafilatura_did_not_keep_are_placed_even_in_trafilaturas_order():
    """With `extract.dom_order=false` the paragraphs keep trafilatura's order; the added pictures still go where
    they stand in the page."""
    result = extract(page(STEPS), "extract.dom_order=false")
    assert sequence(result) == [item for n, text in enumerate(P) for item in (text[:12], f"IMG:step{n}.jpg")]


def test_a_page_has_one_lead_picture():
    """Outside the article's container only the first lead picture kept is the article's: a second one (a strip
    of print and PDF buttons, another slide of a header gallery) is outside it."""
    header = (f'<header><h1>Council expands the river park</h1><div class="hero">{img("lead.jpg")}</div>'
              f'<div class="tools">{img("second.jpg")}</div></header>')
    body = f'<div class="body">{prose(*P[:2])}<figure>{img("photo.jpg")}</figure>{prose(*P[2:])}</div>'
    result = extract(page(header + body))  # the body holds the prose and a picture: it is the container
    assert pictures(result) == ["lead.jpg", "photo.jpg"]
    assert result.image_drops["outside_article"] == 1 and accounted(result)
    alone = extract(page(header.replace(img("lead.jpg"), "") + body))
    assert pictures(alone) == ["second.jpg", "photo.jpg"]  # the first of them is the lead


def test_the_same_picture_at_another_size_is_repeated():
    """A page's copies of one picture for small and large screens are one picture (`picture_key`)."""
    large, small = img("photo-1024x768.jpg"), img("photo-300x200.jpg")
    result = extract(page(prose(*P[:2]) + f"<figure>{large}</figure>" + prose(*P[2:4]) + f"<figure>{small}</figure>"
                          + prose(P[4])))
    assert pictures(result) == ["photo-1024x768.jpg"] and result.image_drops["repeated"] == 1


@pytest.mark.parametrize(("sizes", "kept"),
                         [("150px", True), ("149px", False), ("(max-width: 600px) 100vw, 40px", True)])
def test_a_picture_shown_at_a_fixed_small_width_is_tiny(sizes, kept):
    """`sizes` of one length in pixels is the width the picture is shown at, whatever its `srcset` offers;
    below `image_nodes.min_declared_side` (150) it is `tiny_declared`; a list with media conditions says none."""
    avatar = (f'<figure><img src="https://img.example/face-40.jpg" srcset="https://img.example/face-40.jpg 40w, '
              f'https://img.example/face-1600.jpg 1600w" sizes="{sizes}"></figure>')
    result = extract(page(prose(*P[:2]) + avatar + prose(*P[2:])))
    assert (pictures(result) == ["face-1600.jpg"]) is kept
    assert (result.image_drops["tiny_declared"] == 1) is not kept
