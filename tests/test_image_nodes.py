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


def test_url_extension():
    assert url_extension("https://h.example/a/B.JPG?x=1#f") == "jpg"
    assert url_extension("https://h.example/a/file") == ""
