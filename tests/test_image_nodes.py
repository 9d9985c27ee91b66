"""Node-level image rules (before download), each reason at and around its threshold."""

from __future__ import annotations

import pytest

from filters.base import ImageItem, Verdict
from filters.image_nodes import (
    ImageNodeRules,
    ImageNodeSettings,
    ImagePlaceRules,
    links_elsewhere,
    name_words,
    picture_key,
    url_extension,
)
from pipeline.settings import load_config


def node_rules(*overrides: str) -> ImageNodeRules:
    return ImageNodeRules(ImageNodeSettings.from_config(load_config(overrides=overrides)["image_nodes"]))


RULES = node_rules()


def judge(url: str, width=None, height=None, rules: ImageNodeRules = RULES) -> Verdict:
    return rules(ImageItem(url=url, declared_width=width, declared_height=height))


@pytest.mark.parametrize(
    ("url", "width", "height", "reason"),
    [
        ("data:image/png;base64,AAAA", None, None, "data_uri"),
        ("ftp://host.example/a.jpg", None, None, "bad_scheme"),
        ("javascript:alert(1)", None, None, "bad_scheme"),
        ("https://host.example/a.gif", None, None, "bad_format"),
        ("https://host.example/a.svg", None, None, "bad_format"),
        ("https://host.example/a.jpg", "149", "600", "tiny_declared"),
        ("https://host.example/a.jpg", "1", "1", "tiny_declared"),
        ("https://host.example/static/logo.png", None, None, "url_pattern"),
        ("https://host.example/icons/share.png", None, None, "url_pattern"),
        ("https://pixel.tracker.example/p.jpg", None, None, "url_pattern"),
        ("https://host.example/" + "a" * 2100 + ".jpg", None, None, "url_too_long"),
        ("https:///nohost.jpg", None, None, "bad_url"),
    ],
)
def test_drops_with_reason(url, width, height, reason):
    verdict = judge(url, width, height)
    assert (verdict.keep, verdict.reason) == (False, reason)


@pytest.mark.parametrize(
    ("url", "width", "height"),
    [
        ("https://host.example/photo.jpg", "150", "150"),  # exactly at the threshold: kept
        ("https://host.example/photo.JPEG", "800px", None),
        ("https://host.example/photo.webp", "100%", "auto"),  # not pixels: no size evidence
        ("https://cdn.example/image/upload/abc123", None, None),  # no extension: checked after download
        ("https://host.example/a.png?w=300", None, None),
    ],
)
def test_keeps_content_images(url, width, height):
    assert judge(url, width, height).keep


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://host.example/licence-88x31.png", "tiny_in_url"),  # WxH ending the file name
        ("https://host.example/88x31.png", "tiny_in_url"),
        ("https://host.example/photo-149x600.jpg", "tiny_in_url"),
        ("https://host.example/photo-150x150.jpg", None),  # exactly at min_declared_side: kept
        ("https://host.example/photo-16x9.jpg", None),  # an aspect ratio (one digit): no size
        ("https://host.example/photo_150311_16x9_992.jpg", None),  # not the name's end
        ("https://cdn.example/i/p.jpg?w=149", "tiny_in_url"),
        ("https://cdn.example/i/p.jpg?w=150&h=600", None),
        ("https://cdn.example/dims?thumbnail=130%2C87&image_uri=x", "tiny_in_url"),  # W,H
        ("https://cdn.example/i/p.jpg?resize=600x140", "tiny_in_url"),
        ("https://cdn.example/i/p.jpg?w=0", None),  # a CDN's "as is"
        ("https://cdn.example/i/p.jpg?w=100%25", None),  # not pixels
        ("https://cdn.example/i/p.jpg?q=20", None),  # quality: no size parameter
        ("https://host.example/banner-ad-728x90.jpg", "url_pattern"),  # the URL's words are judged first
    ],
)
def test_a_size_the_url_declares(url, reason):
    verdict = judge(url)
    assert verdict.keep if reason is None else verdict.reason == reason


def test_url_sizes_come_from_the_config():
    assert judge("https://cdn.example/p.jpg?w=20", rules=node_rules("image_nodes.url_sizes=false")).keep
    off = node_rules("image_nodes.url_size_params=[]")
    assert judge("https://cdn.example/p.jpg?w=20", rules=off).keep
    assert judge("https://cdn.example/p-20x20.jpg", rules=off).reason == "tiny_in_url"  # the name still says it


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("https://h.example/2019/04/photo-1560x979.jpg", "https://h.example/2019/04/photo-1020x640.jpg", True),
        ("https://h.example/t/0x0:2040x1360/2400x2400/f:focal(1x2:3x4)/u/DSC1.jpg",
         "https://h.example/t/0x0:2040x1360/2400x1600/f:focal(1x2:3x4)/u/DSC1.jpg", True),  # a resizing proxy
        ("https://h.example/p.jpg?w=800&fit=crop", "https://h.example/p.jpg?fit=crop&w=1600", True),
        ("https://h.example/img?id=1&w=800", "https://h.example/img?id=2&w=800", False),
        ("https://h.example/photo-1.jpg", "https://h.example/photo-2.jpg", False),
        ("http://h.example/p.jpg", "https://h.example/p.jpg", False),
    ],
)
def test_one_picture_at_two_sizes_has_one_key(first, second, same):
    params = RULES.size_params
    assert (picture_key(first, params) == picture_key(second, params)) is same


@pytest.mark.parametrize(
    ("url", "blocked"),
    [
        ("https://static.example/v1/ln/imgs/logoprint.jpg", True),  # `logo*`: words a page glues to it
        ("https://static.example/logotype_white.png", True),
        ("https://static.example/fotos/catalogo-2024.jpg", False),  # a word that only ends in it
    ],
)
def test_a_starred_pattern_takes_every_word_it_begins(url, blocked):
    assert (judge(url).reason == "url_pattern") is blocked


def test_missing_extension_can_be_refused_by_config():
    rules = node_rules("image_nodes.allow_missing_extension=false")
    assert judge("https://cdn.example/image/abc", rules=rules).reason == "bad_format"


@pytest.mark.parametrize(
    "url",
    [
        "https://www.example.org/wp-content/themes/news/images/logo.png",
        "https://www.example.org/static/social-icons_01.png",
        "https://secure.gravatar.com/avatar/205e460b479e2e5b48aec07710c08d50?s=96",
        "https://www.gravatar.com/205e460b479e2e5b48aec07710c08d50.jpg",
        "https://stats.example.org/piwik.php?idsite=3&rec=1",
        "https://analytics.example.org/piwik/piwik.php?idsite=1",
        "https://analytics.example.org/matomo.php?idsite=1&rec=1",
        "https://www.example.org/img/pixel.jpg",
        "https://pixel.tracker.example/p.jpg",
        "https://www.example.org/img/banner-ad-728x90.jpg",
        "https://www.example.org/img/Share_Buttons2.png",
    ],
)
def test_url_patterns_hit_whole_words(url):
    verdict = judge(url)
    assert (verdict.keep, verdict.reason) == (False, "url_pattern"), url


@pytest.mark.parametrize(
    "url",
    [
        # photo credits and subjects that merely contain a pattern: the old substring match dropped these
        "https://www.example.de/wp-content/uploads/2019/05/wald_by_creantion_pixelio-de.jpg",
        "https://www.example.com/uploads/eye-tracking-1791845_1920-1024x683.jpg",
        "https://cdn.example.com/2019/iconic-bridge-at-dusk.jpg",
        "https://cdn.example.com/photos/the-badger-family.jpg",
    ],
)
def test_url_patterns_do_not_hit_content_images(url):
    assert judge(url).keep, url


def test_url_pattern_list_comes_from_the_config():
    rules = node_rules("image_nodes.blocked_url_patterns=[bridge]")
    assert judge("https://cdn.example.com/2019/iconic-bridge-at-dusk.jpg", rules=rules).reason == "url_pattern"
    assert judge("https://www.example.org/static/logo.png", rules=rules).keep


def test_the_rule_counts_what_it_keeps_and_drops_by_reason():
    rules = node_rules()
    for url in ("https://host.example/photo.jpg", "data:image/png;base64,AAAA", "https://host.example/logo.png",
                "https://host.example/b/logo.png"):
        judge(url, rules=rules)
    assert rules.stats == {"kept": 1, "dropped": 3, "dropped/data_uri": 1, "dropped/url_pattern": 2}
    assert rules.filter(ImageItem(url="https://host.example/logo.png")).reason == "url_pattern"
    assert rules.stats["dropped"] == 3  # `filter` alone judges without counting


def test_url_extension():
    assert url_extension("https://h.example/a/B.JPG?x=1#f") == "jpg"
    assert url_extension("https://h.example/a/file") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("c-related-content__image", ["c", "related", "content", "image"]),
        ("relatedContentUpper", ["related", "content", "upper"]),
        ("fig--has-shares element-image", ["fig", "element", "image"]),  # a state modifier says nothing
        ("postMetaInline--avatar", ["post", "meta", "inline", "avatar"]),  # a kind modifier does
        ("has-comments no-sidebar is-sticky share-bar", ["share", "bar"]),
        ("b9ad e1hr934v0 css-1i2y565", ["css"]),  # generated codes name nothing: `b9ad` is no "ad"
        ("sidebar2 col-8-of-12", ["sidebar", "col", "of"]),  # a number ending or making a part is no word
    ],
)
def test_class_and_id_words(value, expected):
    assert name_words(value) == expected


@pytest.mark.parametrize(
    ("href", "elsewhere"),
    [
        ("/2024/other-story.html", True),
        ("https://shop.example/bench", True),
        ("/media/photo-large.JPG", False),  # the picture itself (a lightbox)
        ("/wiki/File:Park.jpg", False),
        ("#gallery", False),
        ("javascript:void(0)", False),
        ("https://news.example/2024/park.html", False),  # this page
        ("", False),
    ],
)
def test_links_elsewhere(href, elsewhere):
    assert links_elsewhere(href, "https://news.example/2024/park.html") is elsewhere


def place_rules(*overrides: str) -> ImagePlaceRules:
    return ImagePlaceRules(ImageNodeSettings.from_config(load_config(overrides=overrides)["image_nodes"]).place)


def first_img(html: str):
    from pipeline.extract.html_images import parse_html

    return next(parse_html(f"<html><body>{html}</body></html>").iter("img"))


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ('<nav><ul><li><img src="a.jpg"></li></ul></nav>', "in_navigation"),
        ('<div role="navigation"><img src="a.jpg"></div>', "in_navigation"),
        ('<div class="social-links"><img src="a.jpg"></div>', "in_share_bar"),
        ('<aside><img src="a.jpg"></aside>', "in_related"),
        ('<div id="comments"><img src="a.jpg"></div>', "in_comments"),
        ('<div class="ad-slot"><img src="a.jpg"></div>', "in_ads"),
        ('<div class="byline"><img src="a.jpg"></div>', "in_byline"),
        ('<div hidden><img src="a.jpg"></div>', "hidden"),
        ('<div aria-hidden="true"><img src="a.jpg"></div>', "hidden"),
        ('<div style="visibility: hidden"><img src="a.jpg"></div>', "hidden"),
        ('<figure class="shadow"><img src="a.jpg"></figure>', ""),  # "shadow" is one word: not "ad"
        ('<div class="headline-image"><img src="a.jpg"></div>', ""),
    ],
)
def test_place_rules_name_the_element_around_the_picture(html, reason):
    assert place_rules().judge(first_img(html)).reason == reason


def test_place_words_come_from_the_config():
    html = '<div class="promo-box"><img src="a.jpg"></div>'
    assert place_rules().judge(first_img(html)).reason == "in_related"
    assert place_rules("image_nodes.place.related=[]").judge(first_img(html)).keep
    assert place_rules("image_nodes.place.hidden=false").judge(first_img('<div hidden><img src="a.jpg"></div>')).keep


def chart(labels: int) -> str:
    """A graphic's background picture with `labels` texts placed over it by their inline style."""
    placed = "".join(f'<div class="label" style="top:{10 * n}%;left:5%"><p>{n} billion</p></div>'
                     for n in range(labels))
    return f'<div class="artboard"><img src="chart.png">{placed}<div class="note"><p>Source</p></div></div>'


@pytest.mark.parametrize(("labels", "overlaid"), [(2, False), (3, True)])
def test_a_picture_under_labels_placed_over_it_is_a_graphics_background(labels, overlaid):
    """`image_nodes.place.overlay_labels` (3): three texts placed by top/left beside the picture are labels
    drawn over it (an unplaced note is none); two are not."""
    verdict = place_rules().judge(first_img(chart(labels)))
    assert (verdict.reason == "overlaid") is overlaid
    assert place_rules("image_nodes.place.overlay_labels=0").judge(first_img(chart(5))).keep


PAGE = "https://news.example/2024/park.html"


@pytest.mark.parametrize(
    ("card", "teaser"),
    [
        # a card: the thumbnail and its headline open one other page (the card's own text is no link)
        ('<div class="story"><h4><a href="/2024/fraser.html">Fraser\'s legacy</a></h4><a href="/2024/fraser.html">'
         '<img src="t.jpg"></a><p>A long standfirst that the extraction kept as the article text here.</p></div>',
         True),
        # the picture links its source, and so does the credit in its caption: a caption, no card
        ('<p><span class="wf_caption"><a href="https://nasa.example/pia1"><img src="map.jpg"></a><span>The map '
         '(<a href="https://nasa.example/pia1">NASA</a>)</span></span></p>', False),
        # a figure whose caption is nothing but a link to where the picture leads: a card with a figure
        ('<figure><figcaption><a href="https://photos.example/gallery">The presidents\' teams</a></figcaption>'
         '<a href="https://photos.example/gallery"><img src="g.jpg"></a></figure>', True),
        # a figure whose caption only credits by a link: a figure
        ('<figure><a href="https://photos.example/gallery"><img src="g.jpg"></a><figcaption>Fans at the stadium. '
         '<a href="https://photos.example/gallery">Photos</a></figcaption></figure>', False),
    ],
)
def test_a_card_whose_headline_opens_the_pictures_page_is_a_teaser(card, teaser):
    def kept_text(element) -> bool | None:  # all the page's text is the article's
        return True if element.text_content().strip() else None

    verdict = place_rules().judge(first_img(card), page_url=PAGE, kept_text=kept_text)
    assert (verdict.reason == "teaser_link") is teaser


def test_place_rules_stop_at_the_given_element():
    img = first_img('<div class="sidebar"><div class="article"><img src="a.jpg"></div></div>')
    assert place_rules().judge(img).reason == "in_related"
    assert place_rules().judge(img, stop=img.getparent().getparent()).keep
