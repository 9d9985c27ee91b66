"""The `extract` section, typed: what the extract unit (`pages.PageExtractor`, `transforms.ExtractDoFn`) reads."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveInt

from pipeline.config import Section, Share


@dataclass(frozen=True)
class ExtractSettings(Section):
    """`extract`: the gates around extraction, trafilatura's options, the article's pictures, the DOM-order repair,
    the per-page timeout."""

    require_img_tag: bool
    require_images: bool
    timeout_s: NonNegativeFloat  # 0: in-process, no timeout
    include_tables: bool
    favor_precision: bool
    fast: bool
    fallback_below_chars: NonNegativeInt
    article_pictures: bool
    article_share: Share
    article_min_paragraph_chars: NonNegativeInt
    lead_chars: NonNegativeInt
    lead_levels: NonNegativeInt
    dom_order: bool
    locate_prefix_chars: PositiveInt
    min_text_chars: NonNegativeInt
