"""Outbound safety, fetch-URL mapping and drop reasons of the downloader (pipeline/images/download.py).

The guarded opener is exercised against the local image host only; addresses outside 127.0.0.1 are
judged by pure functions or refused before any connection (an audit hook proves no socket reached them).
"""

from __future__ import annotations

import ipaddress
import sys
import urllib.error
import urllib.request

import pytest

from filters.images import ImageFilterSettings
from pipeline.images.download import (
    DownloadSettings,
    OutboundPolicy,
    download_reason,
    fetch_url,
    guarded_opener,
    is_public_address,
    results_fingerprint,
    shard_basename,
    urlopen_through,
)
from pipeline.sampledata.imagehost import ImageHost
from pipeline.settings import load_config

UNSAFE = ["127.0.0.1", "127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
          "100.100.100.200", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.0.192", "::1", "::",
          "fe80::1", "fd00:ec2::254", "fc00::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
          "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "ff02::1"]
PUBLIC = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e"]
CONNECTS: list[tuple] = []


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect":
        CONNECTS.append(args[1])


sys.addaudithook(_audit)


@pytest.mark.parametrize("address", UNSAFE)
def test_private_loopback_link_local_and_metadata_addresses_are_not_public(address):
    assert not is_public_address(ipaddress.ip_address(address))
    assert not OutboundPolicy().allows(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_public(address):
    assert is_public_address(ipaddress.ip_address(address))


def test_allow_loopback_admits_127_0_0_1_and_nothing_else():
    policy = OutboundPolicy(allow_loopback=True)
    assert policy.allows(ipaddress.ip_address("127.0.0.1"))
    for address in ("127.0.0.2", "::1", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1"):
        assert not policy.allows(ipaddress.ip_address(address)), address


@pytest.mark.parametrize("url,expected", [
    ("https://img.example.com/a.jpg", ""),
    ("http://10.0.0.8/a.jpg", "unsafe_address"),
    ("http://[::1]:8080/a.jpg", "unsafe_address"),
    ("http://[fd00:ec2::254]/latest/meta-data", "unsafe_address"),
    ("http://169.254.169.254/latest/meta-data", "unsafe_address"),
    ("http://2130706433/a.jpg", "unsafe_address"),  # 127.0.0.1 spelled as one number
    ("http://0x7f.1/a.jpg", "unsafe_address"),
    ("http://localhost:8000/a.jpg", "unsafe_address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "unsafe_address"),
    ("ftp://img.example.com/a.jpg", "unsupported_scheme"),
    ("file:///etc/passwd", "unsupported_scheme"),
    ("https:///a.jpg", "invalid_url"),
    ("https://img.example.com:99999/a.jpg", "invalid_url"),
])
def test_url_check_without_dns(url, expected):
    assert OutboundPolicy().check_url(url) == expected


def test_fetch_url_rewrites_to_the_local_host_and_keeps_path_and_query():
    base = "http://127.0.0.1:8123"
    assert fetch_url("https://img.example.com/a/b.jpg", base) == f"{base}/img.example.com/a/b.jpg"
    assert fetch_url("https://u:p@img.example.com:8443/a b.jpg?w=1#frag", base + "/") == \
        f"{base}/img.example.com:8443/a b.jpg?w=1"
    assert fetch_url("https://img.example.com", base) == f"{base}/img.example.com/"
    assert fetch_url("https://img.example.com/a.jpg", None) == "https://img.example.com/a.jpg"
    # The check applies to what is fetched: a private original is harmless once rewritten to the host.
    assert OutboundPolicy(True).check_url(fetch_url("http://10.0.0.1/a.jpg", base)) == ""


@pytest.mark.parametrize("message,expected", [
    ("HTTP Error 404: Not Found", "http_404"),
    ("HTTP Error 503: Service Unavailable", "http_503"),
    ("timed out", "timeout"),
    ("<urlopen error timed out>", "timeout"),
    ("The read operation timed out", "timeout"),
    ("Use of image disallowed by X-Robots-Tag directive", "opted_out_header"),
    ("<urlopen error unsafe_address: x.test resolves to 10.0.0.1>", "unsafe_address"),
    ("<urlopen error wrong_content_type: text/html>", "wrong_content_type"),
    ("too_large: more than 100 bytes", "too_large"),
    ("<urlopen error [Errno -2] Name or service not known>", "dns_error"),
    ("<urlopen error [Errno 111] Connection refused>", "connection_error"),
    ("<urlopen error unknown url type: ftp>", "unsupported_scheme"),
    ("something odd", "download_error"),
    (None, "download_error"),
])
def test_download_reasons(message, expected):
    assert download_reason(message) == expected


def _open(opener, url: str) -> bytes:
    with urlopen_through(opener), urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_guarded_opener_refuses_loopback_unless_allowed_and_sends_our_user_agent():
    agent = "m3w-test/1 (+https://example.invalid)"
    before = getattr(urllib.request, "_opener", None)
    with ImageHost() as host:
        url = f"{host.base_url}/img.example.com/a.jpg"
        with pytest.raises(urllib.error.URLError, match="unsafe_address"):
            _open(guarded_opener(OutboundPolicy(False), agent, 10_000_000), url)
        assert host.requests == []  # refused before connecting: nothing reached the host
        data = _open(guarded_opener(OutboundPolicy(True), agent, 10_000_000), url)
        assert data.startswith(b"\xff\xd8") and host.requests[0].user_agent == agent
    assert getattr(urllib.request, "_opener", None) is before  # urlopen's own opener is back


def test_redirect_to_the_metadata_address_is_refused_without_connecting():
    opener = guarded_opener(OutboundPolicy(True), "m3w-test", 10_000_000)
    with ImageHost() as host:
        CONNECTS.clear()
        with pytest.raises(urllib.error.URLError, match="unsafe_address"):
            _open(opener, f"{host.base_url}/img.example.com/fail/redirect_metadata/a.jpg")
        assert _open(opener, f"{host.base_url}/img.example.com/fail/redirect/a.jpg").startswith(b"\xff\xd8")
        assert [r.target for r in host.requests] == ["/img.example.com/fail/redirect_metadata/a.jpg",
                                                     "/img.example.com/fail/redirect/a.jpg", "/img.example.com/a.jpg"]
    assert CONNECTS and all(address[0] == "127.0.0.1" for address in CONNECTS)


def test_wrong_content_type_and_size_cap_are_refused():
    with ImageHost() as host:
        with pytest.raises(urllib.error.URLError, match="wrong_content_type"):
            _open(guarded_opener(OutboundPolicy(True), "m3w-test", 10_000_000),
                  f"{host.base_url}/img.example.com/fail/wrong_type/a.jpg")
        with pytest.raises(urllib.error.URLError, match="too_large"):
            _open(guarded_opener(OutboundPolicy(True), "m3w-test", 1000), f"{host.base_url}/img.example.com/b.jpg")


def test_ftp_and_file_urls_have_no_handler():
    opener = guarded_opener(OutboundPolicy(True), "m3w-test", 1000)
    for url in ("file:///etc/hostname", "ftp://127.0.0.1/a.jpg", "data:image/png;base64,AAAA"):
        with pytest.raises(urllib.error.URLError, match="unknown url type"):
            _open(opener, url)


def fingerprint_of(*overrides: str) -> str:
    """`results_fingerprint` of the defaults with `overrides`."""
    config = load_config(overrides=list(overrides))
    return results_fingerprint(DownloadSettings.from_config(config["download"], "download"),
                               ImageFilterSettings.from_config(config["image_filters"], "image_filters"))


def test_shard_identity_ignores_runtime_settings_but_not_what_changes_a_fetch_or_its_result():
    fingerprint = fingerprint_of()
    assert fingerprint_of("download.thread_count=3", "image_filters.nsfw.batch_size=2") == fingerprint
    for override in ("download.image_size=224", "download.resize_mode=border", "image_filters.min_side=100",
                     "image_filters.nsfw.threshold=0.5", "download.timeout_s=1"):
        assert fingerprint_of(override) != fingerprint, override
    urls = ["https://a.test/1.jpg", "https://a.test/2.jpg"]
    assert shard_basename(0, 2, urls, fingerprint) == shard_basename(0, 2, list(urls), fingerprint)
    assert shard_basename(0, 2, urls, fingerprint) != shard_basename(0, 2, urls[:1], fingerprint)
