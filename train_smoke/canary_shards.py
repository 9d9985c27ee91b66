"""Canary shard sets built in memory, correct or broken on purpose: the evidence that the verdict works.

`build_canary_shards` writes a small shard set from documents that look like the sample crawl's canary pages:
each image is a `render_canary` picture and the text right after it starts with its class word. No crawl,
download or Beam pipeline is involved, so a test, a benchmark or a bare GPU machine (no Apache Beam there) gets
shards in seconds. The samples, tokenizer and manifest are those of the project's shard writer
(`pipeline.shards.writer`: BPE of `pipeline.shards.tokenizer.train_bpe`, windows of `pipeline.shards.sequences`,
members, metadata and manifest of `BuildSamplesDoFn.record` and `write_manifest`), rebuilt here from the writer's pure
parts because its Beam DoFn cannot run without Beam; tests/test_smoke_data.py checks that both give the same
bytes for the same documents.

`mutation` breaks the shards the way a buggy builder would, after the writer did its job, in a seeded
`fraction` of the sequences (partial corruption is what a real bug often looks like):

- `phi_shift`: φ moved one position later (φ + 1: every token sees what its predecessor saw, so the
  `<image>` position names the previous image);
- `phi_exclusive`: φ at each `<image>` position names the previous image (an "exclusive" φ);
- `phi_next_shift`: φ_next moved one position earlier (at each `<image>` it names the following image);
- `shuffle_images`: each image slot gets an image of another document;
- `permute_images`: the images of a sequence rotated among its own slots;
- `corrupt_images`: every image of a sequence replaced by as many zero bytes, which no decoder accepts (the
  trainer skips such samples up to `smoke.data.max_undecodable_share`, then refuses the shards).

Every file is written atomically (`pipeline.core.files`), the manifest last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pipeline.canaries.shapes import (
    CANARY_CLASSES,
    CANARY_IMAGE_HOST,
    CANARY_IMAGE_PREFIX,
    CANARY_PAGE_HOST,
    canary_note,
    canary_paragraph,
)
from pipeline.core.files import write_atomically
from schemas.document import Document, Image, Node
from schemas.shards import (
    ATTENTION_MASK,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_EXTENSIONS,
    IMAGE_MEMBER_RE,
    INPUT_IDS,
    INPUT_IDS_DTYPE,
    MANIFEST_NAME,
    MASK_DTYPE,
    METADATA,
    PHI,
    PHI_DTYPE,
    PHI_NEXT,
    SHARDS_DIR,
    TOKENIZER_NAME,
    npy_array,
    npy_bytes,
    sha256_bytes,
    shard_file_name,
    tar_bytes,
)

# The contract's special tokens in the order `pipeline.shards.tokenizer.train_bpe` gives them ids 0-3.
SPECIAL_TOKENS = {"pad": "<pad>", "eos": "<eos>", "image": "<image>", "eoc": "<EOC>"}
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

MUTATIONS = ("phi_shift", "phi_exclusive", "phi_next_shift", "shuffle_images", "permute_images", "corrupt_images")
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
    from pipeline.canaries.shapes import render_canary

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
                 vocab_size: int = 400, packing: bool = False, packing_max_images: int = 10) -> dict[str, Any]:
    from pipeline.config import merge_config

    # Unchecked here (the whole config's check imports Beam): `build_records` checks the `shards` section.
    return merge_config(overrides=[f"shards.seq_len={seq_len}", f"shards.max_images={max_images}",
                                  f"shards.image_size={image_size}", f"shards.num_shards={num_shards}",
                                  f"shards.bpe_vocab_size={vocab_size}", "shards.docs_parquet_images=none",
                                  f"shards.packing={str(packing).lower()}",
                                  f"shards.packing_max_images={packing_max_images}"])


@dataclass(frozen=True)
class CanaryTokenizer:
    """The trained BPE as the shard writer describes it (`pipeline.shards.tokenizer.TokenizerInfo`'s fields)."""

    json: str
    sha256: str
    vocab_size: int
    special_tokens: dict[str, dict[str, Any]]  # role → {"token", "id"}

    def id_of(self, role: str) -> int:
        return int(self.special_tokens[role]["id"])

    def manifest_entry(self, file_name: str) -> dict[str, Any]:
        return {"file": file_name, "sha256": self.sha256, "vocab_size": self.vocab_size,
                "special_tokens": self.special_tokens}


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int) -> CanaryTokenizer:
    """Byte-level BPE with NFC normalisation and the special tokens first, as `train_bpe` trains it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[AddedToken(token, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                   special=True) for token in SPECIAL_TOKENS.values()], show_progress=False))
    text = tokenizer.to_str()
    return CanaryTokenizer(json=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                           vocab_size=int(tokenizer.get_vocab_size(with_added_tokens=True)),
                           special_tokens={role: {"token": token, "id": int(tokenizer.token_to_id(token))}
                                           for role, token in SPECIAL_TOKENS.items()})


def build_records(docs: list[Document], config: dict[str, Any]) -> tuple[list[tuple[str, dict[str, bytes]]],
                                                                          CanaryTokenizer]:
    """Documents → (their sample records, each window as the shard writer emits it; the tokenizer)."""
    from tokenizers import Tokenizer

    from pipeline.shards import sequences
    from pipeline.shards.settings import ShardSettings

    shards = config["shards"]
    window_config = sequences.WindowConfig.from_config(ShardSettings.from_config(shards, "shards"))
    tokenizer = train_tokenizer([d.text for d in docs], shards["bpe_vocab_size"], shards["bpe_min_frequency"])
    encoder = Tokenizer.from_str(tokenizer.json)
    encoder.encode_special_tokens = True  # text that says "<image>" stays text
    special = sequences.SpecialIds(*(tokenizer.id_of(role) for role in ("image", "eoc", "eos", "pad")))
    size = sequences.parse_image_size(shards["image_size"])
    extension = IMAGE_EXTENSIONS[shards["image_format"]]
    records = []
    for doc in docs:
        fitted: list[tuple[str, bytes]] = []
        pieces: list[list[str] | int] = [[]]  # text nodes between images form one chunk
        for node in doc.nodes:
            if node.image is not None:
                fitted.append((node.image.url, sequences.fit_image(node.image.data, size, shards["resize_mode"],
                                                         shards["image_format"], shards["image_quality"])))
                pieces += [len(fitted) - 1, []]
            elif node.text:
                pieces[-1].append(node.text)
        chunks = iter(encoder.encode_batch(["\n\n".join(p).strip() for p in pieces if not isinstance(p, int)],
                                           add_special_tokens=False))
        parts = [p if isinstance(p, int) else list(next(chunks).ids) for p in pieces]
        ids, image_at = sequences.token_stream([p for p in parts if isinstance(p, int) or p], special)
        windows = sequences.build_windows(ids, image_at, window_config, special, doc.doc_id)
        for window in windows:
            if sequences.drop_reason(window, window_config):
                continue
            key = f"{_KEY_UNSAFE.sub('_', doc.doc_id)}-{window.index:04d}"
            slots = [fitted[index] for index in window.image_indices]
            members = {INPUT_IDS: npy_bytes(window.input_ids, INPUT_IDS_DTYPE),
                       ATTENTION_MASK: npy_bytes(window.attention_mask, MASK_DTYPE),
                       PHI: npy_bytes(window.phi, PHI_DTYPE), PHI_NEXT: npy_bytes(window.phi_next, PHI_DTYPE)}
            for slot, (_, data) in enumerate(slots):
                members[f"img{slot}.{extension}"] = data
            metadata = {
                "key": key, "doc_id": doc.doc_id, "url": doc.url,
                "domain": (urlsplit(doc.url).hostname or "").lower(),
                "language": str(doc.metadata.get("language") or ""), "window": window.index,
                "n_windows": len(windows), "token_start": window.token_start, "n_tokens": window.n_tokens,
                "n_targets": window.n_targets, "starts_at_boundary": window.starts_at_boundary,
                "n_images": len(slots), "max_images": window_config.max_images,
                "image_urls": [url for url, _ in slots], "image_sha256": [sha256_bytes(data) for _, data in slots],
                "image_size": list(size), "resize_mode": shards["resize_mode"],
                "image_format": shards["image_format"], "seq_len": window_config.seq_len,
                "mode": "random_window" if window_config.random_window else "chunked",
            }
            members[METADATA] = json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")
            records.append((key, members))
    return records, tokenizer


def mutate(records: list[tuple[str, dict[str, bytes]]], mutation: str, image_token: int, seed: int = 0,
           fraction: float = 1.0) -> list[tuple[str, dict[str, bytes]]]:
    """A copy of `records` in which a seeded `fraction` of the sequences is broken the way `mutation` names
    (see the module docstring)."""
    if mutation not in MUTATIONS:
        raise ValueError(f"unknown mutation {mutation!r} (known: {', '.join(MUTATIONS)})")
    out = [(key, dict(members)) for key, members in records]
    rng = random.Random(f"m3w-mutation:{mutation}:{seed}:{fraction}")
    if mutation == "corrupt_images":  # among sequences with an image, so that each chosen one is undecodable
        with_images = [i for i, (_, members) in enumerate(out) if any(IMAGE_MEMBER_RE.match(s) for s in members)]
        for index in sorted(rng.sample(with_images, round(fraction * len(out)))):
            members = out[index][1]
            for suffix in [s for s in members if IMAGE_MEMBER_RE.match(s)]:
                members[suffix] = bytes(len(members[suffix]))
        return out
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


def write_shard_set(records: list[tuple[str, dict[str, bytes]]], tokenizer: CanaryTokenizer,
                    config: dict[str, Any], out_dir: str, documents: int) -> str:
    """Records → tar shards (placed by key hash, as the Beam sink does) + tokenizer + manifest (last), laid out
    as `pipeline.shards.writer.write_manifest` lays them out. Returns out_dir."""
    from pipeline.shards.packing import layout_mode, sample_slots
    from pipeline.shards.sequences import WindowConfig, parse_image_size
    from pipeline.shards.settings import ShardSettings

    shards = config["shards"]
    count = shards["num_shards"] or 1
    groups: dict[int, list] = {}
    for record in records:
        groups.setdefault(int(hashlib.sha256(record[0].encode("utf-8")).hexdigest()[:16], 16) % count,
                          []).append(record)
    entries = []
    for number, index in enumerate(sorted(groups)):
        data = tar_bytes(groups[index])
        name = shard_file_name(number)
        write_atomically(os.path.join(out_dir, SHARDS_DIR, name), data)
        entries.append({"file": f"{SHARDS_DIR}/{name}", "samples": len(groups[index]), "bytes": len(data),
                        "sha256": sha256_bytes(data)})
    write_atomically(os.path.join(out_dir, TOKENIZER_NAME), tokenizer.json.encode("utf-8"))
    window = WindowConfig.from_config(ShardSettings.from_config(shards, "shards"))
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "seq_len": window.seq_len,
        "max_images": sample_slots(shards["packing"], window.max_images, shards["packing_max_images"]),
        "image_size": list(parse_image_size(shards["image_size"])),
        "resize_mode": shards["resize_mode"], "image_format": shards["image_format"],
        "mode": layout_mode(shards["packing"], window.random_window),
        "tokenizer": tokenizer.manifest_entry(TOKENIZER_NAME), "shards": entries,
        "total_samples": sum(entry["samples"] for entry in entries), "total_documents": documents,
        "config": shards,
    }
    write_atomically(os.path.join(out_dir, MANIFEST_NAME),
                     json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return out_dir


def build_canary_shards(out_dir: str, n_docs: int = 300, mutation: str | None = None, seed: int = 0,
                        classes: tuple[str, ...] | None = None, images_per_doc: tuple[int, int] = (3, 3),
                        seq_len: int = 64, image_size: int = 64, words_after: tuple[int, int] = (3, 6),
                        fraction: float = 1.0, num_shards: int = 2, packing: bool = False,
                        packing_max_images: int = 10) -> str:
    """A canary shard set in `out_dir` (optionally `mutation` in a `fraction` of its sequences; with `packing`, the
    windows packed into rows of several documents and `packing_max_images` slots as the shard writer packs them,
    after the mutation); returns `out_dir`."""
    config = shard_config(seq_len=seq_len, max_images=max(images_per_doc), image_size=image_size,
                          num_shards=num_shards, packing=packing, packing_max_images=packing_max_images)
    docs = canary_documents(n_docs, images_per_doc, classes, image_size, seed, words_after)
    records, tokenizer = build_records(docs, config)
    if mutation:
        records = mutate(records, mutation, tokenizer.id_of("image"), seed, fraction)
    if packing:
        from pipeline.shards.packing import pack_records

        shards = config["shards"]
        records = pack_records(records, shards["seq_len"], shards["packing_max_images"], tokenizer.id_of("image"),
                               tokenizer.id_of("pad"))
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
