"""Bytes → text for web pages: the declared charset first, then the page's own meta, then detection."""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None


def decode_html(body: bytes, declared: str | None = None) -> tuple[str, str]:
    """Return (text, how) where `how` names the source of the encoding (header/meta/utf-8/detected/fallback)."""
    if body.startswith(codecs.BOM_UTF8):
        return body[3:].decode("utf-8", "replace"), "bom"
    for how, name in (("header", declared), ("meta", _meta_charset(body))):
        codec = _codec(name)
        if codec:
            try:
                return body.decode(codec), how
            except (UnicodeDecodeError, LookupError):
                pass
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(body[:200_000]).best()
        if best is not None and best.encoding:
            return body.decode(best.encoding, "replace"), "detected"
    except Exception:
        pass
    return body.decode("utf-8", "replace"), "fallback"


def _meta_charset(body: bytes) -> str | None:
    match = _META_CHARSET.search(body[:4096])
    return match.group(1).decode("ascii", "ignore") if match else None


def replacement_ratio(text: str) -> float:
    if not text:
        return 0.0
    bad = text.count("\ufffd") + text.count("\x00")
    return bad / len(text)
