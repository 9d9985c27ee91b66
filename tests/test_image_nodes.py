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


def test_place_rules_stop_at_the_given_element():
    img = first_img('<div class="sidebar"><div class="article"><img src="a.jpg"></div></div>')
    assert place_rules().judge(img).reason == "in_related"
    assert place_rules().judge(img, stop=img.getparent().getparent()).keep
