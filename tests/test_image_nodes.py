"""Node-level image rules (before download), each reason at and around its threshold."""

from __future__ import annotations

import pytest

from filters.image_nodes import ImageNodeRules, url_extension
from pipeline.config import load_config

RULES = ImageNodeRules(load_config()["image_nodes"])


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
    verdict = RULES(url, width, height)
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
    assert RULES(url, width, height).keep


def test_missing_extension_can_be_refused_by_config():
    cfg = load_config(overrides=["image_nodes.allow_missing_extension=false"])["image_nodes"]
    assert ImageNodeRules(cfg)("https://cdn.example/image/abc").reason == "bad_format"


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
    verdict = RULES(url)
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
    assert RULES(url).keep, url


def test_url_pattern_list_comes_from_the_config():
    cfg = load_config(overrides=["image_nodes.blocked_url_patterns=[bridge]"])["image_nodes"]
    rules = ImageNodeRules(cfg)
    assert rules("https://cdn.example.com/2019/iconic-bridge-at-dusk.jpg").reason == "url_pattern"
    assert rules("https://www.example.org/static/logo.png").keep


def test_url_extension():
    assert url_extension("https://h.example/a/B.JPG?x=1#f") == "jpg"
    assert url_extension("https://h.example/a/file") == ""
