"""m3w's parse and trafilatura cascade give trafilatura's own results, on real pages, pass by pass.

m3w parses with trafilatura's parser settings but lxml's C-level element classes, and runs trafilatura's
cascade itself (comments off) so the fast pass and the comparison share one cleaning of the page: the trees and
the main content must be exactly what `trafilatura.utils.load_html` and `trafilatura.bare_extraction` give.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

import pytest
import trafilatura
from lxml import etree
from trafilatura.utils import load_html

from pipeline.extract.content import _needs_fallbacks, main_content
from pipeline.extract.html_images import mark_images, parse_html
from pipeline.extract.settings import ExtractSettings
from pipeline.read.decode import decode_html
from pipeline.settings import load_config

DEFAULTS = ExtractSettings.from_config(load_config()["extract"])
SAMPLE_EVERY = 6  # 31 of the 181 article pages: the suite's time budget


def xml(body) -> bytes | None:
    return None if body is None else etree.tostring(body)


def trafilatura_body(tree, url: str, fast: bool):
    result = trafilatura.bare_extraction(tree, url=url, fast=fast, include_images=True, include_comments=False,
                                         include_tables=DEFAULTS.include_tables,
                                         favor_precision=DEFAULTS.favor_precision, with_metadata=False,
                                         deduplicate=False, output_format="xml")
    return None if result is None else result.body, "" if result is None else result.raw_text


@pytest.fixture(scope="module")
def sample(article_pages) -> list[tuple[str, object]]:
    """(url, marked tree) of every SAMPLE_EVERY-th article page, as m3w hands them to trafilatura."""
    out = []
    for _, url, body in article_pages[::SAMPLE_EVERY]:
        tree = parse_html(decode_html(body)[0])
        mark_images(tree, url)
        out.append((url, tree))
    return out


def test_parse_builds_trafilaturas_tree(article_pages):
    for _, url, body in article_pages[::SAMPLE_EVERY]:
        text = decode_html(body)[0]
        assert etree.tostring(parse_html(text)) == etree.tostring(load_html(text)), url


@pytest.mark.parametrize(("mode", "overrides"), [("fast", {"fast": True}), ("full", {"fallback_below_chars": 0})])
def test_each_pass_is_trafilaturas(sample, mode, overrides):
    settings = replace(DEFAULTS, **overrides)
    for url, tree in sample:
        expected, _ = trafilatura_body(deepcopy(tree), url, fast=mode == "fast")
        assert xml(main_content(deepcopy(tree), url, settings)) == xml(expected), url


def test_the_comparison_runs_where_the_fast_pass_falls_short_with_trafilaturas_result(sample):
    fallbacks = 0
    for url, tree in sample:
        fast, text = trafilatura_body(deepcopy(tree), url, fast=True)
        needed = _needs_fallbacks(fast, text, DEFAULTS.fallback_below_chars)
        fallbacks += needed
        expected = trafilatura_body(deepcopy(tree), url, fast=False)[0] if needed else fast
        assert xml(main_content(deepcopy(tree), url, DEFAULTS)) == xml(expected), url
    assert 0 < fallbacks < len(sample)  # both branches ran
