"""Canary shard sets built in memory, correct or broken on purpose: the evidence that the verdict works.

`build_canary_shards` writes a small shard set through the project's own shard writer
(`pipeline.shard_sink.BuildSamplesDoFn` → `schemas.shards.tar_bytes` → `write_manifest`), from documents
that look like the sample crawl's canary pages: each image is a `render_canary` picture and the text right
after it starts with its class word. No crawl, download or Beam pipeline is involved, so a test or a
benchmark gets shards in seconds.

`mutation` breaks the shards the way a buggy builder would, after the writer did its job, in a seeded
`fraction` of the sequences (partial corruption is what a real bug often looks like):

- `phi_shift`: φ moved one position later (φ + 1: every token sees what its predecessor saw, so the
  `<image>` position names the previous image);
- `phi_exclusive`: φ at each `<image>` position names the previous image (an "exclusive" φ);
- `phi_next_shift`: φ_next moved one position earlier (at each `<image>` it names the following image);
- `shuffle_images`: each image slot gets an image of another document;
- `permute_images`: the images of a sequence rotated among its own slots.
"""

from __future__ import annotations

import io
import os
import random
from typing import Any

import numpy as np

from pipeline.samplecrawl.canaries import (
    CANARY_CLASSES,
    CANARY_IMAGE_HOST,
    CANARY_IMAGE_PREFIX,
    CANARY_PAGE_HOST,
    canary_note,
    canary_paragraph,
)
from schemas.document import Document, Image, Node
from schemas.shards import (
    ATTENTION_MASK,
    IMAGE_MEMBER_RE,
    INPUT_IDS,
    PHI,
    PHI_DTYPE,
    PHI_NEXT,
    SHARDS_DIR,
    npy_array,
    npy_bytes,
    sha256_bytes,
    shard_file_name,
    tar_bytes,
)

MUTATIONS = ("phi_shift", "phi_exclusive", "phi_next_shift", "shuffle_images", "permute_images")
# The partial-strength corruptions the verdict must catch (FAIL, at worst "inconclusive", never PASS):
# (name, mutation, share of sequences). `benchmarks/smoke.py --mutations` and tests/test_smoke_mutations.py run it.
MUTATION_TABLE = (
    ("shuffled_5pct", "shuffle_images", 0.05),
    ("shuffled_10pct", "shuffle_images", 0.10),
    ("shuffled_20pct", "shuffle_images", 0.20),
    ("rotated_5pct", "permute_images", 0.05),
    ("rotated_10pct", "permute_images", 0.10),
    ("phi_next_shifted_10pct", "phi_next_shift", 0.10),
    ("phi_plus_1_10pct", "phi_shift", 0.10),
)
PHI_MUTATIONS = ("phi_shift", "phi_exclusive", "phi_next_shift")  # the trainer's input check stops these first


def _jpeg(image) -> bytes:
    """JPEG as the shard writer encodes slots, so a picture already at slot size passes through unchanged."""
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, subsampling=0)
    return out.getvalue()


def canary_documents(n_docs: int, images_per_doc: tuple[int, int] = (3, 3), classes: tuple[str, ...] | None = None,
                     image_size: int = 64, seed: int = 0, words_after: tuple[int, int] = (3, 6),
                     page_host: str = CANARY_PAGE_HOST) -> list[Document]:
    """Canary pages: an opening sentence, then per image its picture and "<Class>. <a few words>".

    Classes are drawn independently and uniformly, so the text before an image says nothing about its class.
    With another `page_host` the same pages are ordinary web data to the trainer (not recognised as canaries).
    """
    from pipeline.samplecrawl.canaries import render_canary

    classes = tuple(classes or CANARY_CLASSES)
    rng = random.Random(f"m3w-canary-shards:{seed}")
    docs = []
    variant = seed * 1_000_000
    for index in range(n_docs):
        nodes = [Node(text=canary_note(rng, 4, 8))]
        for _ in range(rng.randint(*images_per_doc)):
            cls = rng.choice(classes)
            variant += 1
            image_host = CANARY_IMAGE_HOST if page_host == CANARY_PAGE_HOST else f"img.{page_host}"
            url = f"https://{image_host}{CANARY_IMAGE_PREFIX}{index:04d}/{variant}.jpg"
            nodes.append(Node(image=Image(url=url, data=_jpeg(render_canary(cls, variant, image_size)))))
            nodes.append(Node(text=canary_paragraph(cls, rng, *words_after)))
        docs.append(Document(doc_id=f"canary{seed:02d}{index:05d}", url=f"https://{page_host}/notes/{index}.html",
                             nodes=nodes, metadata={"language": "en"}))
    return docs


def shard_config(seq_len: int = 64, max_images: int = 3, image_size: int = 64, num_shards: int = 2,
                 vocab_size: int = 400) -> dict[str, Any]:
    from pipeline.config import load_config

    return load_config(overrides=[f"shards.seq_len={seq_len}", f"shards.max_images={max_images}",
                                  f"shards.image_size={image_size}", f"shards.num_shards={num_shards}",
                                  f"shards.bpe_vocab_size={vocab_size}", "shards.docs_parquet_images=none"])


def build_records(docs: list[Document], config: dict[str, Any]) -> tuple[list[tuple[str, dict[str, bytes]]], Any]:
    """Documents → (sample records as the shard writer emits them, with the image slots read back from its
    image store, and the tokenizer trained on their text)."""
    import tempfile

    from pipeline.imagestore import ImageStore
    from pipeline.shard_sink import BuildSamplesDoFn, StoredMember
    from pipeline.tokenizer import train_bpe

    shards = config["shards"]
    tokenizer = train_bpe((d.text for d in docs), int(shards["bpe_vocab_size"]), int(shards["bpe_min_frequency"]))
    records = []
    with tempfile.TemporaryDirectory(prefix="m3w-canary-store-") as store_dir:
        store = ImageStore(store_dir)
        builder = BuildSamplesDoFn(config, store)
        builder.setup()
        for doc in docs:
            for item in builder.process(doc, tokenizer):
                if isinstance(item, tuple):
                    key, members = item
                    records.append((key, {suffix: store.get(data.sha256) if isinstance(data, StoredMember) else data
                                          for suffix, data in members.items()}))
    return records, tokenizer


def mutate(records: list[tuple[str, dict[str, bytes]]], mutation: str, image_token: int, seed: int = 0,
           fraction: float = 1.0) -> list[tuple[str, dict[str, bytes]]]:
    """A copy of `records` in which a seeded `fraction` of the sequences is broken the way `mutation` names
    (see the module docstring)."""
    if mutation not in MUTATIONS:
        raise ValueError(f"unknown mutation {mutation!r} (known: {', '.join(MUTATIONS)})")
    out = [(key, dict(members)) for key, members in records]
    rng = random.Random(f"m3w-mutation:{mutation}:{seed}:{fraction}")
    chosen = sorted(rng.sample(range(len(out)), round(fraction * len(out))))
    if mutation in ("phi_shift", "phi_exclusive", "phi_next_shift"):
        for index in chosen:
            members = out[index][1]
            ids = npy_array(members[INPUT_IDS])
            mask = npy_array(members[ATTENTION_MASK]).astype(bool)
            name = PHI_NEXT if mutation == "phi_next_shift" else PHI
            values = npy_array(members[name]).astype(np.int64)
            if mutation == "phi_exclusive":
                broken = np.where((ids == image_token) & mask, values - 1, values)
            else:
                broken = np.zeros_like(values)
                if mutation == "phi_shift":
                    broken[1:] = values[:-1]
                else:
                    broken[:-1] = values[1:]
            members[name] = npy_bytes(np.where(mask, broken, 0), PHI_DTYPE)
        return out
    if mutation == "shuffle_images":
        slots = [(i, suffix) for i, (_, members) in enumerate(out) for suffix in sorted(members)
                 if IMAGE_MEMBER_RE.match(suffix)]
        payloads = [out[i][1][suffix] for i, suffix in slots]
        doc_of = [out[i][0].rsplit("-", 1)[0] for i, _ in slots]
        for index in chosen:
            doc = out[index][0].rsplit("-", 1)[0]
            for suffix in sorted(s for s in out[index][1] if IMAGE_MEMBER_RE.match(s)):
                source = rng.randrange(len(slots))
                while doc_of[source] == doc:  # never an image of its own document
                    source = rng.randrange(len(slots))
                out[index][1][suffix] = payloads[source]
        return out
    for index in chosen:  # permute_images
        members = out[index][1]
        names = sorted((s for s in members if IMAGE_MEMBER_RE.match(s)),
                       key=lambda s: int(IMAGE_MEMBER_RE.match(s).group(1)))
        if len(names) >= 2:
            payloads = [members[s] for s in names]
            for s, data in zip(names, payloads[1:] + payloads[:1]):
                members[s] = data
    return out


def write_shard_set(records: list[tuple[str, dict[str, bytes]]], tokenizer, config: dict[str, Any], out_dir: str,
                    documents: int) -> str:
    """Records → tar shards (placed by key hash, as the Beam sink does) + tokenizer + manifest. Returns out_dir."""
    from pipeline.shard_sink import shard_index, write_manifest

    shards = config["shards"]
    count = int(shards["num_shards"] or 1)
    os.makedirs(os.path.join(out_dir, SHARDS_DIR), exist_ok=True)
    groups: dict[int, list] = {}
    for record in records:
        groups.setdefault(shard_index(record[0], count), []).append(record)
    entries = []
    for number, index in enumerate(sorted(groups)):
        data = tar_bytes(groups[index])
        name = shard_file_name(number)
        with open(os.path.join(out_dir, SHARDS_DIR, name), "wb") as handle:
            handle.write(data)
        entries.append({"file": f"{SHARDS_DIR}/{name}", "samples": len(groups[index]), "bytes": len(data),
                        "sha256": sha256_bytes(data)})
    write_manifest(entries, out_dir, tokenizer, documents, shards)
    return out_dir


def build_canary_shards(out_dir: str, n_docs: int = 300, mutation: str | None = None, seed: int = 0,
                        classes: tuple[str, ...] | None = None, images_per_doc: tuple[int, int] = (3, 3),
                        seq_len: int = 64, image_size: int = 64, words_after: tuple[int, int] = (3, 6),
                        fraction: float = 1.0) -> str:
    """A canary shard set in `out_dir` (optionally `mutation` in a `fraction` of its sequences); returns `out_dir`."""
    config = shard_config(seq_len=seq_len, max_images=max(images_per_doc), image_size=image_size)
    docs = canary_documents(n_docs, images_per_doc, classes, image_size, seed, words_after)
    records, tokenizer = build_records(docs, config)
    if mutation:
        records = mutate(records, mutation, tokenizer.id_of("image"), seed, fraction)
    return write_shard_set(records, tokenizer, config, out_dir, len(docs))


def mutation_shard_sets(root: str, n_docs: int, classes: tuple[str, ...], images_per_doc: tuple[int, int] = (4, 5),
                        seq_len: int = 64, image_size: int = 32, words_after: tuple[int, int] = (1, 3), seed: int = 0,
                        table: tuple[tuple[str, str, float], ...] = MUTATION_TABLE) -> dict[str, str]:
    """`root/correct` and one shard set per row of `table` (`root/<name>`), from the same canary documents."""
    config = shard_config(seq_len=seq_len, max_images=max(images_per_doc), image_size=image_size)
    docs = canary_documents(n_docs, images_per_doc, classes, image_size, seed, words_after)
    records, tokenizer = build_records(docs, config)
    out = {"correct": write_shard_set(records, tokenizer, config, os.path.join(root, "correct"), len(docs))}
    for name, mutation, fraction in table:
        broken = mutate(records, mutation, tokenizer.id_of("image"), seed, fraction)
        out[name] = write_shard_set(broken, tokenizer, config, os.path.join(root, name), len(docs))
    return out
