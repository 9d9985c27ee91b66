"""The URL/domain blocklist (UT1 lists from datatrove's wheel, datatrove's URL words) and the gate's URL check."""

from __future__ import annotations

import dataclasses

import pytest

from filters.base import TextItem
from filters.safety import UrlBlocklist, UrlBlocklistSettings, parent_domains, ut1_lists
from pipeline.settings import load_config

SETTINGS = UrlBlocklistSettings.from_config(load_config()["filters"]["safety"]["url_blocklist"])


@pytest.fixture(scope="module")
def blocklist() -> UrlBlocklist:
    return UrlBlocklist(SETTINGS)


def only(**changes) -> UrlBlocklist:
    return UrlBlocklist(dataclasses.replace(SETTINGS, **changes))


def at(url: str) -> TextItem:
    """What the blocklist reads of a page or document: its URL."""
    return TextItem(text="", url=url)


def test_ut1_lists_load_offline_from_datatrove_wheel():
    domains, urls = ut1_lists()
    assert len(domains) > 4_000_000  # UT1 adult + malware + phishing ... as FineWeb used them
    assert (domains[:-1] <= domains[1:]).all()  # sorted for binary search
    assert len(urls) > 10_000


@pytest.mark.parametrize("url", [
    "https://00sex.com/",  # listed in UT1
    "http://www.00sex.com/pages/a.html",  # its subdomains too
    "https://a.b.00sex.com:8080/x?y=1",
    "HTTPS://WWW.00SEX.COM/",  # host names are case-insensitive
])
def test_listed_domains_and_their_subdomains_are_blocked(blocklist, url):
    verdict = blocklist(at(url))
    assert verdict.reason == "url_blocklist" and verdict.scores == {"rule": "domain", "match": "00sex.com"}


def test_listed_url_blocks_itself_and_below_but_not_its_siblings(blocklist):
    _, urls = ut1_lists()
    entry = sorted(urls)[0]  # e.g. 'somehost.fr/some-path'
    host, _, path = entry.partition("/")
    assert path
    plain = only(url_words=False)
    assert plain(at(f"https://{host}/{path}")).scores["rule"] == "url"
    assert plain(at(f"http://www.{host}/{path}/deeper/page.html#top")).scores["rule"] == "url"
    assert plain(at(f"https://{host}/{path}-not-the-same")).keep


@pytest.mark.parametrize("url", [
    "https://www.sample-web.test/articles/a-bright-gravel.html",
    "https://en.wikipedia.org/wiki/Sussex",  # 'sex' inside a word is no URL word
    "https://news.example/2024/essex-county-council",
    "http://[::1]:8080/page", "http://127.0.0.1/", "not a url at all", "",
])
def test_ordinary_and_odd_urls_pass(blocklist, url):
    assert blocklist(at(url)).keep


def test_datatrove_url_word_rules(blocklist):
    assert blocklist(at("https://example.com/watch/hentai-episode-1")).scores["rule"] == "banned_word"
    # soft-banned words need two of them (soft_word_threshold = 2)
    one, two = "https://example.com/party/lingerie-shop", "https://example.com/party/lingerie-escort"
    assert blocklist(at(one)).keep
    assert blocklist(at(two)).scores["rule"] == "soft_banned_words"
    assert only(soft_word_threshold=3)(at(two)).keep
    assert blocklist(at("https://example.com/videos/bigtitsround")).scores["rule"] == "banned_subword"
    assert only(url_words=False)(at("https://example.com/watch/hentai-episode-1")).keep


def test_extra_domains_and_urls_from_config():
    rules = only(ut1=False, url_words=False, extra_domains=["bad.example"], extra_urls=["good.example/private/"])
    assert rules(at("https://cdn.bad.example/x.html")).scores == {"rule": "domain", "match": "bad.example"}
    assert rules(at("https://good.example/private/notes")).scores["rule"] == "url"
    assert rules(at("https://good.example/public/notes")).keep
    assert rules(at("https://00sex.com/")).keep  # UT1 switched off


def test_parent_domains():
    assert parent_domains("a.b.example.co.uk") == ["a.b.example.co.uk", "b.example.co.uk", "example.co.uk", "co.uk"]
    assert parent_domains("1.2.3.4") == ["1.2.3.4"]
    assert parent_domains("localhost") == ["localhost"]
    assert parent_domains("") == []
