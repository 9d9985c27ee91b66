"""trafilatura's main content of a parsed page, with its readability/jusText comparison only where needed.

trafilatura decides *what* is main content. Its comparison with readability and jusText costs a third of its
time and changes the result only where its own extractor found little, so m3w runs trafilatura's fast pass
first and the comparison only when the fast pass found less than `extract.fallback_below_chars` characters,
no paragraph text or mostly tables (the cases where trafilatura's comparison prefers another extractor).

The cascade is trafilatura 2.3.1's `trafilatura_sequence` with reader comments off (m3w never keeps them),
run on m3w's own parse of the page without `bare_extraction`'s copy of it, and sharing the work both passes
need: the raw-tree prunes and the page's text length (the recall escalation's measure) are computed once; a
page that needs the comparison starts again from the raw tree's cleaning (the fast pass reads the raw tree only
through copies, so cleaning it again gives the first pass's cleaned tree, and the fast pass keeps no copy of it).
`tests/test_extract_content.py` checks that the result is trafilatura's own, pass by pass.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from copy import copy
from functools import cache, partial
from typing import Any

from pipeline.core.failures import preload
from pipeline.extract.settings import ExtractSettings

log = logging.getLogger(__name__)

# What extraction imports; loaded in the driver, in every worker's setup() and in the timeout child, so a
# broken install (trafilatura's jusText path needs lxml_html_clean) stops the run at once, by name.
EXTRACT_DEPENDENCIES: tuple[tuple[str, Callable[[], Any]], ...] = tuple(
    (name, partial(importlib.import_module, name)) for name in ("trafilatura", "justext.core", "lxml.html.clean")
)


def load_extract_dependencies() -> None:
    preload(EXTRACT_DEPENDENCIES)


@cache
def _options(fast: bool, include_tables: bool, favor_precision: bool):
    from trafilatura.settings import Extractor

    return Extractor(output_format="xml", fast=fast, precision=favor_precision, comments=False, images=True,
                     tables=include_tables, dedup=False, with_metadata=False)


def trafilatura_options(url: str | None, fast: bool, settings: ExtractSettings):
    """trafilatura's extraction options for one page (built once per process, then given the page's URL):
    images on; comments, metadata and dedup off."""
    options = copy(_options(fast, settings.include_tables, settings.favor_precision))
    options.url = options.source = url
    return options


class PageText:
    """The page's text length by trafilatura's measure (`html2txt`), computed at most once per page."""

    def __init__(self, tree):
        self.tree = tree
        self._length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            from trafilatura.baseline import html2txt

            self._length = len(html2txt(self.tree))
        return self._length


# trafilatura 2.3.1's raw-tree prunes (RAW_TREE_PRUNE_XPATH, REMOVE_COMMENTS_AND_LISTS_XPATH), whitespace
# collapsed: `raw_prunes` selects what they select with Python's `re` directly where trafilatura's expressions
# are these. lxml runs an XPath `re:test` as a call back into Python for every element it tests, which made
# these three expressions a sixth of the extraction's time; the selections are the same elements in the same
# order (tests/test_extract_content.py), and any other text of them is evaluated as trafilatura's XPath.
_COMMENTS_XPATH = (
    ".//*[self::div or self::list or self::section or self::details or self::ol or self::ul][ re:test(@id, "
    "'^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)') or re:test(@class, '^[Cc]omment(?!ary)|"
    "(?:article|post)-comments')][ not(self::ol or self::ul) or re:test(@id, '^(?:[Cc]omment(?!ary)|comol)') "
    "or re:test(@class, '^[Cc]omment(?!ary)|(?:article|post)-comments')]")
_APPENDED_XPATH = (
    ".//*[self::div or self::section or self::aside][ re:test(@id, 'mvp-post-add-(?:box|wrap)|infinite-?scroll') "
    "or re:test(@class, 'mvp-post-add-(?:box|wrap)|infinite-?scroll')][ not(.//h1) or re:test(@id, "
    "'mvp-post-add-(?:box|wrap)') or re:test(@class, 'mvp-post-add-(?:box|wrap)')]")
_SHARE_BUTTONS_XPATH = ".//*[self::div or self::section or self::aside][contains(@class, 'elementor-share-buttons')]"
_COMMENTS_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENTS_LIST_ID = re.compile(r"^(?:[Cc]omment(?!ary)|comol)")
_COMMENTS_CLASS = re.compile(r"^[Cc]omment(?!ary)|(?:article|post)-comments")
_APPENDED = re.compile(r"mvp-post-add-(?:box|wrap)|infinite-?scroll")
_APPENDED_SURE = re.compile(r"mvp-post-add-(?:box|wrap)")


def _comment_sections(tree) -> list:
    found = []
    for element in tree.iterdescendants("div", "list", "section", "details", "ol", "ul"):
        ident, names = element.get("id") or "", element.get("class") or ""
        if _COMMENTS_ID.search(ident) or _COMMENTS_CLASS.search(names):
            if element.tag not in ("ol", "ul") or _COMMENTS_LIST_ID.search(ident) or _COMMENTS_CLASS.search(names):
                found.append(element)
    return found


def _appended_articles(tree) -> list:
    found = []
    for element in tree.iterdescendants("div", "section", "aside"):
        ident, names = element.get("id") or "", element.get("class") or ""
        if (_APPENDED.search(ident) or _APPENDED.search(names)) and (
                element.find(".//h1") is None or _APPENDED_SURE.search(ident) or _APPENDED_SURE.search(names)):
            found.append(element)
    return found


def _appended_and_share_buttons(tree) -> list:
    """trafilatura's two expressions, one after the other: the appended articles, then the share buttons."""
    return _appended_articles(tree) + [element for element in tree.iterdescendants("div", "section", "aside")
                                       if "elementor-share-buttons" in (element.get("class") or "")]


@cache
def raw_prunes() -> tuple[Callable[[Any], list], Callable[[Any], list]]:
    """(appended articles and share buttons, comment sections): what trafilatura's raw-tree prunes select in a
    tree, expression after expression, each in document order; Python's `re` where trafilatura's expressions
    are the ones above, else theirs."""
    from trafilatura.xpaths import RAW_TREE_PRUNE_XPATH, REMOVE_COMMENTS_AND_LISTS_XPATH

    def text(expressions) -> list[str]:
        return [" ".join(expression.path.split()) for expression in expressions]

    def evaluate(expressions) -> Callable[[Any], list]:
        return lambda tree: [element for expression in expressions for element in expression(tree)]

    appended = evaluate(RAW_TREE_PRUNE_XPATH)
    if text(RAW_TREE_PRUNE_XPATH) == [_APPENDED_XPATH, _SHARE_BUTTONS_XPATH]:
        appended = _appended_and_share_buttons
    comments = evaluate(REMOVE_COMMENTS_AND_LISTS_XPATH)
    if text(REMOVE_COMMENTS_AND_LISTS_XPATH) == [_COMMENTS_XPATH]:
        comments = _comment_sections
    return appended, comments


def _prune(tree, selected: list) -> None:
    """trafilatura's `prune_unwanted_nodes` without backup: each selected element deleted, its tail kept."""
    from trafilatura.xml import delete_element

    for element in selected:
        delete_element(element)


def main_content(tree, url: str, settings: ExtractSettings):
    """trafilatura's main-content body (XML) of a parsed page, or None.

    Changes `tree` as trafilatura does (its raw-tree prunes of comment sections and appended articles): read
    what the page says elsewhere first.
    """
    from trafilatura.core import _forum_thread_page
    from trafilatura.htmlprocessing import tree_cleaning

    min_chars = settings.fallback_below_chars
    lazy = not settings.fast and min_chars > 0
    url = url if url.startswith("http") else None
    options = trafilatura_options(url, settings.fast or lazy, settings)
    try:
        is_forum = _forum_thread_page(tree)
        appended, comments = raw_prunes()
        _prune(tree, appended(tree))
        if options.focus == "precision" or not is_forum:
            _prune(tree, comments(tree))
        cleaned = tree_cleaning(copy(tree), options)
        backup = None if options.fast else copy(cleaned)  # the comparison's input (a fast pass reads none)
        page_text = PageText(tree)
        body, text = _cascade(cleaned, backup, tree, options, url, is_forum, page_text)
        if lazy and _needs_fallbacks(body, text, min_chars):
            full = trafilatura_options(url, False, settings)
            backup = tree_cleaning(copy(tree), full)  # cleaned again: the fast pass leaves the raw tree as it was
            body, text = _cascade(copy(backup), backup, tree, full, url, is_forum, page_text)
    except (TypeError, ValueError):  # as bare_extraction: trafilatura's "nothing usable here"
        return None
    if len(text) < options.min_output_size:
        return None
    return body


def _cascade(cleaned, backup, tree, options, url: str | None, is_forum: bool, page_text: PageText):
    """trafilatura_sequence from the cleaned tree on, comments off: main extractor (and, unless fast, the
    comparison), baseline rescue, recall escalation."""
    from trafilatura.baseline import baseline
    from trafilatura.core import (
        ESCALATION_ACCEPT_RATIO,
        ESCALATION_JUSTEXT_RATIO,
        ESCALATION_MAX_LENGTH,
        ESCALATION_PAGE_SHARE,
        _extract_and_compare,
        _recall_retry,
    )
    from trafilatura.external import justext_rescue
    from trafilatura.htmlprocessing import convert_tags, prune_unwanted_nodes
    from trafilatura.xpaths import REMOVE_COMMENTS_XPATH

    cleaned = convert_tags(cleaned, options, url)
    if options.focus == "precision" and not is_forum:
        cleaned = prune_unwanted_nodes(cleaned, REMOVE_COMMENTS_XPATH)
    body, text = _extract_and_compare(cleaned, backup, tree, options)
    if len(text) < options.min_extracted_size and options.focus != "precision":
        b_body, b_text, b_len = baseline(tree)
        if b_len > len(text):
            body, text = b_body, b_text
    if options.focus == "balanced" and 0 < len(text) < ESCALATION_MAX_LENGTH \
            and len(text) < ESCALATION_PAGE_SHARE * len(page_text):
        recall = copy(options)
        recall.focus = "recall"
        r_text = j_text = ""
        try:
            r_body, r_text = _recall_retry(tree, recall, url)
        except Exception as err:  # as trafilatura: a failed retry keeps the first result
            log.warning("trafilatura recall retry failed: %s %s", err, url)
        if not options.fast:
            try:
                j_body, j_text = justext_rescue(copy(tree), options)
            except Exception as err:  # as trafilatura
                log.warning("trafilatura justext candidate failed: %s %s", err, url)
        if len(j_text) > len(r_text) and len(j_text) > ESCALATION_JUSTEXT_RATIO * len(text):
            body, text = j_body, j_text
        elif len(r_text) >= options.min_extracted_size and len(r_text) > ESCALATION_ACCEPT_RATIO * len(text):
            body, text = r_body, r_text
    return body, text


def _needs_fallbacks(body, text: str, min_chars: int) -> bool:
    """Where trafilatura's own comparison may prefer another extractor: little text, none in paragraphs, or
    more tables than paragraphs."""
    if body is None or len(text) < min_chars:
        return True
    paragraphs = list(body.iter("p"))
    has_text = any(part.strip() for p in paragraphs for part in p.itertext())
    return not has_text or sum(1 for _ in body.iter("table")) > len(paragraphs)
