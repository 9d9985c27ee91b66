"""Deduplication on Beam, built only on grouping by keys (no global table, no single-worker step).

Documents in, documents out; every step counts what it removes and why (stage, unit, reason):

- `DedupUrls`           dedup_url         documents  duplicate_url
- `DedupExact`          dedup_exact       documents  exact_duplicate
- `DedupNear`           dedup_near        documents  near_duplicate (cluster sizes under clusters|info)
- `DedupParagraphs`     dedup_paragraphs  paragraphs boilerplate; documents no_text
- `DedupDocuments`      the four above in that order
- `DropFrequentImageUrls` dedup_image_urls images frequent_url; documents no_images
- `DedupImages`         dedup_images      images undecodable, duplicate_in_document, exact_duplicate,
                                          perceptual_duplicate, identical_image_set;
                                          documents identical_image_set, no_images
- `ConnectedComponents` edges → (node, smallest node of its component), large-star / small-star

Each step takes its own typed subsection of `dedup` (`DedupSettings`, built by the jobs from the config).
"""

from pipeline.core.stages import STAGES as _REGISTRY
from pipeline.dedup.components import ConnectedComponents
from pipeline.dedup.documents import DedupDocuments, DedupExact, DedupSettings
from pipeline.dedup.images import DedupImages, DropFrequentImageUrls
from pipeline.dedup.minhash import DedupNear
from pipeline.dedup.paragraphs import DedupParagraphs
from pipeline.dedup.urls import DedupUrls

# The dedup steps on the document flow, in order (from the stage registry).
STAGES = [s.name for s in _REGISTRY if s.folder == "dedup" and s.in_flow and not s.job_reader]

__all__ = [
    "STAGES",
    "ConnectedComponents",
    "DedupDocuments",
    "DedupExact",
    "DedupImages",
    "DedupNear",
    "DedupParagraphs",
    "DedupSettings",
    "DedupUrls",
    "DropFrequentImageUrls",
]
