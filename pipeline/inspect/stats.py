"""`m3w inspect stats`: what the shards hold — sequences, tokens, images per sequence, φ coverage,
languages and domains — as a table (or JSON), with the fill rates of the token positions and of the image
slots (how much of each training step is `<pad>` or an empty slot). A packed row counts each of its
documents for the documents, languages, domains and chunk-boundary figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline.inspect.common import format_table, open_shard_set
from schemas.shards import iter_tar_groups, loss_target_mask, sample_from_members


def compute_stats(source: str, top: int = 10, tokenizer_path: str | None = None) -> dict[str, Any]:
    """Aggregate figures over every sample of a shard, a directory of shards or a manifest."""
    shard_set = open_shard_set(source, tokenizer_path)
    special = shard_set.special
    sequences = real = padding = targets = covered = covered_next = at_boundary = parts = slots = 0
    images_per_sequence: Counter = Counter()
    languages: Counter = Counter()
    domains: Counter = Counter()
    documents: set[str] = set()
    samples_per_shard: dict[str, int] = {}
    for path in shard_set.shards:
        samples_per_shard[path] = 0
        for key, members in iter_tar_groups(path):
            sample = sample_from_members(key, members, shard=path)
            meta = sample.metadata
            mask = sample.attention_mask.astype(bool)
            sequences += 1
            samples_per_shard[path] += 1
            real += int(mask.sum())
            padding += int((~mask).sum())
            covered += int((sample.phi[mask] > 0).sum())
            covered_next += int((sample.phi_next[mask] > 0).sum())
            if special is not None:
                targets += int(loss_target_mask(sample.input_ids, mask, special.image, special.pad,
                                                sample.doc_index).sum())
            images_per_sequence[len(sample.image_bytes)] += 1
            slots += int(meta.get("max_images") or len(sample.image_bytes))
            for part in meta["documents"] if sample.is_packed else [{**meta, "doc_id": meta.get("doc_id", key)}]:
                parts += 1
                at_boundary += bool(part.get("starts_at_boundary"))
                languages[part.get("language") or "unknown"] += 1
                domains[part.get("domain") or "unknown"] += 1
                documents.add(part.get("doc_id"))
    images = sum(n * count for n, count in images_per_sequence.items())
    return {
        "source": source,
        "shards": len(shard_set.shards),
        "sequences": sequences,
        "documents": len(documents),
        "sequences_per_document": round(sequences / len(documents), 3) if documents else 0.0,
        "real_tokens": real,
        "padding_tokens": padding,
        "padding_share": round(padding / (real + padding), 4) if real + padding else 0.0,
        "token_fill": round(real / (real + padding), 4) if real + padding else 0.0,
        "image_slot_fill": round(images / slots, 4) if slots else 0.0,
        "documents_per_sequence": round(parts / sequences, 3) if sequences else 0.0,
        "mode": (shard_set.manifest or {}).get("mode"),
        "loss_targets": targets,
        "images": images,
        "images_per_sequence_mean": round(images / sequences, 3) if sequences else 0.0,
        "images_per_sequence": {str(n): images_per_sequence[n] for n in sorted(images_per_sequence)},
        "phi_coverage": round(covered / real, 4) if real else 0.0,
        "phi_next_coverage": round(covered_next / real, 4) if real else 0.0,
        "starts_at_boundary_share": round(at_boundary / parts, 4) if parts else 0.0,
        "languages": dict(languages.most_common(top)),
        "top_domains": dict(domains.most_common(top)),
        "samples_per_shard": {path: n for path, n in samples_per_shard.items()},
        "manifest": shard_set.manifest_file,
    }


def _share(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "-"


def format_stats(stats: dict[str, Any]) -> str:
    """The stats as plain-text tables a person reads in a terminal."""
    overview = [
        ("shards", stats["shards"]),
        ("mode", stats["mode"] or "-"),
        ("sequences", stats["sequences"]),
        ("documents", stats["documents"]),
        ("sequences per document", stats["sequences_per_document"]),
        ("real tokens", stats["real_tokens"]),
        ("padding tokens", f"{stats['padding_tokens']} ({100 * stats['padding_share']:.1f}%)"),
        ("token fill (real tokens / positions)", f"{100 * stats['token_fill']:.1f}%"),
        ("image-slot fill (images / slots)", f"{100 * stats['image_slot_fill']:.1f}%"),
        ("documents per sequence (packed rows hold several)", stats["documents_per_sequence"]),
        ("loss targets", stats["loss_targets"]),
        ("images", stats["images"]),
        ("images per sequence (mean)", stats["images_per_sequence_mean"]),
        ("phi coverage (real tokens that see an image)", f"{100 * stats['phi_coverage']:.1f}%"),
        ("phi_next coverage", f"{100 * stats['phi_next_coverage']:.1f}%"),
        ("sequences starting at a chunk boundary", f"{100 * stats['starts_at_boundary_share']:.1f}%"),
    ]
    total = stats["sequences"]
    per_sequence = [(n, count, _share(count, total)) for n, count in stats["images_per_sequence"].items()]
    languages = [(lang, count, _share(count, total)) for lang, count in stats["languages"].items()]
    domains = [(domain, count, _share(count, total)) for domain, count in stats["top_domains"].items()]
    parts = [
        format_table(overview, ("figure", "value")),
        format_table(per_sequence, ("images in sequence", "sequences", "share")),
        format_table(languages, ("language", "sequences", "share")),
        format_table(domains, ("top domain", "sequences", "share")),
    ]
    return "\n\n".join(part for part in parts if part)
