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


PRUNED = """<html><body>
<div id="comments">a</div><div id="commentary">b</div><div class="comment-list">c</div>
<section class="post-comments">d</section><ol id="comol"><li>e</li></ol><ul id="disqus_thread"><li>f</li></ul>
<ul class="Comment"><li>g</li></ul><details id="dsq-comments">h</details><div><div id="Comment-2">i</div></div>
<div class="mvp-post-add-box"><h1>x</h1></div><aside id="infinite-scroll"><p>y</p></aside>
<section class="infinitescroll"><h1>z</h1></section><div class="elementor-share-buttons infinite-scroll">w</div>
<span class="comments">not a section</span></body></html>"""


def test_raw_prunes_select_what_trafilaturas_expressions_select(sample):
    """The raw-tree prunes in Python (`raw_prunes`) select trafilatura's elements in trafilatura's order, on
    every branch of its expressions and on real pages."""
    from trafilatura.xpaths import RAW_TREE_PRUNE_XPATH, REMOVE_COMMENTS_AND_LISTS_XPATH

    from pipeline.extract.content import _appended_and_share_buttons, _comment_sections, raw_prunes

    appended, comments = raw_prunes()
    assert (appended, comments) == (_appended_and_share_buttons, _comment_sections)  # trafilatura 2.3.1's text
    trees = [parse_html(PRUNED)] + [tree for _, tree in sample]
    for tree in trees:
        assert appended(tree) == [e for expression in RAW_TREE_PRUNE_XPATH for e in expression(tree)]
        assert comments(tree) == [e for expression in REMOVE_COMMENTS_AND_LISTS_XPATH for e in expression(tree)]
    assert len(appended(trees[0])) == 4 and len(comments(trees[0])) == 7  # not commentary, the disqus <ul>, z (an h1)


def test_letters_and_digits_as_the_regex_keeps_them():
    """The ASCII pass of `normalise` (and of the page's text stream) deletes what the regex deletes."""
    import re

    from pipeline.extract.html_images import normalise

    for text in ("Plain ASCII, with_underscores & punctuation!", "Crème brûlée — “quoted” ١٢٣ 東京 a\u00a0b 😀",
                 "\ue0001\ue001 marks", ""):
        assert normalise(text) == re.sub(r"[\W_]+", "", text.lower())
