"""The `extract` section, typed: what the extract unit (`pages.PageExtractor`, `transforms.ExtractDoFn`) reads."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import Section


@dataclass(frozen=True)
class ExtractSettings(Section):
    """`extract`: the gates around extraction, trafilatura's options, the DOM-order repair, the per-page timeout."""

    require_img_tag: bool
    require_images: bool
    timeout_s: float
    include_tables: bool
    favor_precision: bool
    fast: bool
    fallback_below_chars: int
    dom_order: bool
    locate_prefix_chars: int
    min_text_chars: int
