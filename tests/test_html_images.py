"""Image URL resolution before extraction: srcset, <picture>, lazy-load attributes, <base href>, relative URLs."""

from __future__ import annotations

import pytest

from pipeline.extract.html_images import (
    best_srcset,
    mark_images,
    marker_index,
    parse_html,
    parse_srcset,
    robots_opt_out,
)


def resolve(body: str, url: str = "https://site.example/a/page.html") -> list[str]:
    return [c.url for c in mark_images(parse_html(f"<html><head></head><body>{body}</body></html>"), url)]


def test_srcset_width_descriptors_pick_the_widest():
    assert best_srcset("s.jpg 320w, m.jpg 640w, l.jpg 1280w, xs.jpg 100w") == "l.jpg"


def test_srcset_density_descriptors_and_commas_inside_urls():
    assert best_srcset("a.jpg 1x, b.jpg 2x") == "b.jpg"
    small, large = "https://cdn.example/i/w_300,h_200/a.jpg", "https://cdn.example/i/w_600,h_400/a.jpg"
    assert parse_srcset(f"{small} 300w, {large} 600w") == [(small, 300.0), (large, 600.0)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('<img src="pic.jpg">', "https://site.example/a/pic.jpg"),
        ('<img src="/root.jpg">', "https://site.example/root.jpg"),
        ('<img src="../up.jpg">', "https://site.example/up.jpg"),
        ('<img src="//cdn.example/p.jpg">', "https://cdn.example/p.jpg"),
        ('<img src="small.jpg" srcset="small.jpg 300w, big.jpg 900w">', "https://site.example/a/big.jpg"),
        ('<img src="data:image/gif;base64,R0lGOD" data-src="lazy.jpg">', "https://site.example/a/lazy.jpg"),
        ('<img src="/img/placeholder.png" data-lazy-src="real.webp">', "https://site.example/a/real.webp"),
        ('<img data-srcset="a.jpg 1x, b.jpg 2x">', "https://site.example/a/b.jpg"),
        ('<picture><source type="image/avif" srcset="x.avif"><source srcset="p.webp 800w, q.webp 1600w">'
         '<img src="fallback.jpg"></picture>', "https://site.example/a/q.webp"),
    ],
)
def test_image_url_resolution(body, expected):
    assert resolve(body) == [expected]


def test_base_href_wins_over_page_url():
    tree = parse_html('<html><head><base href="https://static.example/media/"></head>'
                      '<body><img src="x.png"><img src="/abs.png"></body></html>')
    assert [c.url for c in mark_images(tree, "https://site.example/a/")] == [
        "https://static.example/media/x.png", "https://static.example/abs.png"]


def test_alt_caption_and_declared_size_are_kept():
    tree = parse_html('<html><body><figure><img src="f.jpg" alt=" A  dog " width="640" height="480">'
                      "<figcaption>The dog, <b>asleep</b>.</figcaption></figure></body></html>")
    (candidate,) = mark_images(tree, "https://s.example/")
    assert (candidate.alt, candidate.caption, candidate.width, candidate.height) == ("A dog", "The dog, asleep.",
                                                                                    "640", "480")


def test_markers_replace_sources_in_order():
    tree = parse_html('<html><body><img src="a.jpg" srcset="b.jpg 2x" data-src="c.jpg"><img src="d.jpg"></body></html>')
    mark_images(tree, "https://s.example/")
    imgs = list(tree.iter("img"))
    assert [marker_index(i.get("src")) for i in imgs] == [0, 1]
    assert all(set(i.attrib) == {"src"} for i in imgs)


def test_robots_opt_out_from_meta_and_header():
    tree = parse_html('<html><head><meta name="robots" content="index, NoAI"></head><body></body></html>')
    assert robots_opt_out(tree) == ["noai"]
    assert robots_opt_out(tree, "noimageai") == ["noai", "noimageai"]
    assert robots_opt_out(parse_html("<html><body>x</body></html>")) == []


def test_noscript_copy_beside_a_lazy_img_is_the_same_picture():
    tree = parse_html('<html><body><p>Text <img src="a.jpg"></p><figure><img data-src="" class="lazy">'
                      '<noscript><img src="real.jpg"></noscript></figure><p><img src="b.jpg"></p></body></html>')
    images = mark_images(tree, "https://s.example/")
    assert [c.url.rsplit("/", 1)[1] for c in images] == ["a.jpg", "real.jpg", "real.jpg", "b.jpg"]
    assert images.copy_of == {2: 1}


def test_noscript_in_a_textless_wrapper_stands_for_every_stand_in():
    tree = parse_html('<html><body><div><div class="blur"><img src="tiny.jpg"></div><img>'
                      '<noscript><img src="full.jpg"></noscript></div></body></html>')
    images = mark_images(tree, "https://s.example/")
    assert images[0].url.endswith("/full.jpg") and images.copy_of == {1: 0, 2: 0}


def test_declared_size_from_the_inline_style():
    tree = parse_html('<html><body><img src="a.png" style="margin: 0; width: 32px; height:32.5px">'
                      '<img src="b.png" style="max-width: 100%" width="640"></body></html>')
    first, second = mark_images(tree, "https://s.example/")
    assert (first.width, first.height, second.width, second.height) == ("32", "32.5", "640", None)
