"""The training-shard layout (webdataset tar + manifest) and a dependency-light reader.

The meaning of every array is fixed by the M3W contract (`m3w-format.md`); this module fixes how it is
carried on disk, so the writer (`pipeline/shards/writer.py`), the validator (`m3w inspect`) and the
trainer (`train_smoke`) share one definition.

Output directory of `m3w shard` / `m3w build`::

    manifest.json                 written last; its presence means the shard set is complete
    tokenizer.json                the Hugging Face `tokenizers` file the ids refer to (sha256 in the manifest)
    shards/shard-000000.tar ...   webdataset shards, members sorted, fixed mtime/uid/gid/uname
    canaries/shard-000000.tar ... `m3w build`'s alignment canaries: the same layout, their own files, listed apart
    docs/docs-00000-of-00004.parquet ...  the same documents in the OBELICS layout (never a canary)

The training data is `shards/` alone (a plain webdataset glob over `shards/*.tar`, or the manifest's `shards`):
the canaries a build carries for `m3w smoke` sit in `canaries/`, listed in the manifest's `canaries` entry,
which only the smoke trainer and `m3w inspect` read (`canary_shard_paths`).

One sample (= one training sequence) is a group of tar members sharing a key (webdataset convention:
the key is the member name up to its first dot). Key = `{doc_id}-{window:04d}`; no dots, unique::

    KEY.input_ids.npy        int32 [L]   token ids, right-padded with <pad>
    KEY.attention_mask.npy   uint8 [L]   1 for real tokens, 0 for padding (a prefix of ones)
    KEY.phi.npy              int16 [L]   1-based index of the last image at or before l (inclusive); 0 if none/padding
    KEY.phi_next.npy         int16 [L]   1-based index of the first image at or after l; 0 if none/padding
    KEY.img0.jpg ... KEY.img{n-1}.jpg    the n filled image slots, in the order of their <image> tokens
                                         (`.webp` when the config says so); slots n..N-1 are empty: no member
    KEY.json                 metadata (see SAMPLE_JSON_FIELDS): source url, doc_id, window index, image URLs,
                             per-slot sha256, n_images, language, image size, resize mode...

All `.npy` members are `numpy.save` output (little-endian, C order), readable by webdataset's default
decoder. `Sample.image_mask()` gives the N-slot "filled" flags; `Sample.decode_images()` gives uint8
[N, H, W, 3] with zeros in empty slots.

Packed rows (`shards.packing: true`, manifest `"mode": "packed"`, format version 2): one sample holds the
windows of several documents, one after another, then `<pad>`. Key = `{first window's key}-packed`. The
arrays above keep their meaning per document (φ and φ_next name row slots, 0 before a document's first
image and after its last, never an image of another document; a document's first token is no target), and
three more members say where the documents are::

    KEY.doc_index.npy        int32 [L]   1-based index of the token's document in the row; 0 on padding
    KEY.position_ids.npy     int32 [L]   position within its document (restarts at 0 per document); 0 on padding
    KEY.cu_seqlens.npy       int32 [D+1] document boundaries: 0, end of document 1, ..., real tokens (flash-attn)

`KEY.json` of a packed row has `PACKED_SAMPLE_JSON_FIELDS`, its `documents` list one entry per document
(`DOCUMENT_JSON_FIELDS`: the window's key, doc_id, url, ... and `first_slot`, its first image's row slot).
Version 1 shard sets (no packed rows) read unchanged.

`manifest.json` (paths relative to the manifest's directory)::

    {"format": "m3w-shards", "format_version": 2,
     "seq_len": 256, "max_images": 5, "image_size": [320, 320], "resize_mode": "center_crop",
     "image_format": "jpeg", "mode": "chunked",   # or "random_window", or "packed"
     "tokenizer": {"file": "tokenizer.json", "sha256": "...", "vocab_size": 4096,
                   "special_tokens": {"image": {"token": "<image>", "id": 1}, "eoc": {...}, "eos": {...},
                                      "pad": {...}}},
     "shards": [{"file": "shards/shard-000000.tar", "samples": 812, "bytes": 268000000, "sha256": "..."}, ...],
     "total_samples": 812, "total_documents": 301,
     "config": {... the `shards` config section used ...},
     "canaries": {"pages": 400, "shards": [{"file": "canaries/shard-000000.tar", ...}], "samples": 410,
                  "documents": 398, "exemptions": [...], "lost": [...]}}   # `m3w build` (pipeline/report/canaries.py)

`canaries` is there when the writer was given canary documents (marked `canary` in their metadata) or a build's
note about them: `pages` asked for (0: `m3w build --canaries 0`), the exceptions to the user's config they ran
under, and every drop of a canary before the shard stage (`lost`: stage, unit, reason, count, setting, text).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

FORMAT_NAME = "m3w-shards"
FORMAT_VERSION = 2  # 2: packed rows (`mode: packed`); the chunked and random-window layouts are those of 1
READABLE_FORMAT_VERSIONS = (1, 2)
PACKED_MODE = "packed"

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
SHARDS_DIR = "shards"
CANARY_SHARDS_DIR = "canaries"
DOCS_DIR = "docs"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".tar"

# Member suffixes (everything after the key's first dot).
INPUT_IDS = "input_ids.npy"
ATTENTION_MASK = "attention_mask.npy"
PHI = "phi.npy"
PHI_NEXT = "phi_next.npy"
METADATA = "json"
ARRAY_MEMBERS = (INPUT_IDS, ATTENTION_MASK, PHI, PHI_NEXT)
DOC_INDEX = "doc_index.npy"
POSITION_IDS = "position_ids.npy"
CU_SEQLENS = "cu_seqlens.npy"
PACKED_ARRAY_MEMBERS = (DOC_INDEX, POSITION_IDS, CU_SEQLENS)  # packed rows only
IMAGE_EXTENSIONS = {"jpeg": "jpg", "webp": "webp"}  # config image_format → member extension
IMAGE_MEMBER_RE = re.compile(r"^img(\d+)\.(jpg|webp)$")

INPUT_IDS_DTYPE = np.dtype("<i4")
MASK_DTYPE = np.dtype("u1")
PHI_DTYPE = np.dtype("<i2")
PACKED_DTYPE = np.dtype("<i4")  # doc_index, position_ids, cu_seqlens (flash-attn takes int32 cu_seqlens)
MEMBER_DTYPES = {INPUT_IDS: INPUT_IDS_DTYPE, ATTENTION_MASK: MASK_DTYPE, PHI: PHI_DTYPE, PHI_NEXT: PHI_DTYPE,
                 DOC_INDEX: PACKED_DTYPE, POSITION_IDS: PACKED_DTYPE, CU_SEQLENS: PACKED_DTYPE}

# Fixed tar header fields: the same samples always give the same bytes.
TAR_MTIME = 0
TAR_MODE = 0o644

# Special tokens by role; the ids live in the manifest (`tokenizer.special_tokens`).
SPECIAL_ROLES = ("image", "eoc", "eos", "pad")

SAMPLE_JSON_FIELDS = (
    "key",            # the sample key (also the member prefix)
    "doc_id",         # document id (schemas.document.make_doc_id)
    "url",            # source page URL
    "domain",         # host of the source URL
    "language",       # document language ("" when unknown)
    "window",         # 0-based index of this window within its document
    "n_windows",      # windows the document yielded before drops
    "token_start",    # offset of the window's first token in the document's token stream
    "n_tokens",       # real (unpadded) tokens
    "n_targets",      # loss targets (see loss_target_mask)
    "starts_at_boundary",  # True when the window starts at the document start or at an <image>
    "n_images",       # filled slots (= <image> tokens in input_ids)
    "max_images",     # N
    "image_urls",     # URL of the image in each filled slot
    "image_sha256",   # sha256 of each filled slot's member bytes (detects swapped / altered slots)
    "image_size",     # [height, width] every slot decodes to
    "resize_mode",    # how source pixels were fitted to image_size
    "image_format",   # jpeg | webp
    "seq_len",        # L
    "mode",           # "chunked" (chunk-boundary windows) or "random_window" (Flamingo-faithful)
)
PACKED_SAMPLE_JSON_FIELDS = (
    "key", "mode",    # the row's key; "packed"
    "n_documents",    # documents (windows) in the row: D
    "n_tokens", "n_targets", "n_images", "max_images",   # of the whole row
    "image_urls", "image_sha256",   # per row slot, documents in order
    "image_size", "resize_mode", "image_format", "seq_len",
    "documents",      # one entry per document, in row order (DOCUMENT_JSON_FIELDS)
)
DOCUMENT_JSON_FIELDS = (
    "key",            # the window's own key (what the chunked layout would have named the sample)
    "doc_id", "url", "domain", "language", "window", "n_windows", "token_start",
    "n_tokens", "n_targets", "n_images", "starts_at_boundary",   # of this document's part of the row
    "first_slot",     # 0-based row slot of its first image (its images fill first_slot .. first_slot + n_images - 1)
)


@dataclass(frozen=True)
class SpecialTokens:
    image: int
    eoc: int
    eos: int
    pad: int

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> SpecialTokens:
        ids = manifest["tokenizer"]["special_tokens"]
        return cls(**{role: int(ids[role]["id"]) for role in SPECIAL_ROLES})


@dataclass
class Sample:
    """One training sequence as stored; arrays as saved, images as encoded bytes (decoded on request)."""

    key: str
    input_ids: np.ndarray
    attention_mask: np.ndarray
    phi: np.ndarray
    phi_next: np.ndarray
    image_bytes: list[bytes]
    metadata: dict[str, Any]
    shard: str = ""
    members: dict[str, bytes] = field(default_factory=dict, repr=False)  # raw members (for validation)
    images: np.ndarray | None = None  # uint8 [N, H, W, 3] when read with decode_images=True
    doc_index: np.ndarray | None = None  # packed rows: int32 [L], 1-based document per token, 0 on padding
    position_ids: np.ndarray | None = None  # packed rows: int32 [L]
    cu_seqlens: np.ndarray | None = None  # packed rows: int32 [D+1]

    @property
    def is_packed(self) -> bool:
        return self.doc_index is not None

    @property
    def max_images(self) -> int:
        return int(self.metadata.get("max_images", len(self.image_bytes)))

    def image_mask(self, max_images: int | None = None) -> np.ndarray:
        """bool [N]: True for filled slots (always a prefix: slots follow the <image> tokens in order)."""
        n = self.max_images if max_images is None else max_images
        mask = np.zeros(n, dtype=bool)
        mask[: len(self.image_bytes)] = True
        return mask

    def decode_images(self, max_images: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 [N, H, W, 3]; empty slots are zeros. `size` defaults to the metadata's image_size."""
        n = self.max_images if max_images is None else max_images
        height, width = size or tuple(self.metadata["image_size"])
        out = np.zeros((n, height, width, 3), dtype=np.uint8)
        for slot, data in enumerate(self.image_bytes[:n]):
            pixels = decode_image(data)
            if pixels.shape != (height, width, 3):
                expected = (height, width, 3)
                raise ValueError(f"{self.key}: image slot {slot} decodes to {pixels.shape}, expected {expected}")
            out[slot] = pixels
        return out


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes → uint8 RGB [H, W, 3]."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- φ and targets


def compute_phi(
    input_ids: np.ndarray, image_token_id: int, attention_mask: np.ndarray | None = None,
    doc_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(phi, phi_next) per the contract, over the last axis (works on [L] and on batches [B, L]).

    phi[l]      = number of <image> tokens at positions ≤ l (= 1-based index of the last image at or
                  before l, inclusive: the <image> position carries its own index); 0 on padding.
    phi_next[l] = 1-based index of the first image at or after l, 0 if none; 0 on padding.

    With `doc_index` (packed rows) both are computed per document and name row slots: 0 before the
    token's document has shown an image (whatever came before it in the row) and, for φ_next, after its
    document's last image; never an image of another document.
    """
    ids = np.asarray(input_ids)
    real = np.ones(ids.shape, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    is_image = (ids == image_token_id) & real
    upto = np.cumsum(is_image, axis=-1)
    before = upto - is_image
    if doc_index is None or not ids.shape[-1]:
        opened = np.zeros_like(upto)
        closed = upto[..., -1:] if ids.shape[-1] else upto
    else:
        first, last = document_edges(np.asarray(doc_index))
        opened = np.take_along_axis(before, first, axis=-1)  # images of earlier documents
        closed = np.take_along_axis(upto, last, axis=-1)  # images up to the end of the token's document
    phi = np.where(real & (upto > opened), upto, 0).astype(PHI_DTYPE)
    phi_next = np.where(real & (before < closed), before + 1, 0).astype(PHI_DTYPE)
    return phi, phi_next


def document_starts(doc_index: np.ndarray) -> np.ndarray:
    """bool [..., L]: True where a document (a run of equal `doc_index`) begins; position 0 always does."""
    doc = np.asarray(doc_index)
    starts = np.ones(doc.shape, dtype=bool)
    starts[..., 1:] = doc[..., 1:] != doc[..., :-1]
    return starts


def document_edges(doc_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) [..., L]: the positions where each token's document begins and ends (runs of `doc_index`)."""
    doc = np.asarray(doc_index)
    length = doc.shape[-1]
    positions = np.broadcast_to(np.arange(length), doc.shape)
    starts = document_starts(doc)
    ends = np.ones(doc.shape, dtype=bool)
    ends[..., :-1] = doc[..., :-1] != doc[..., 1:]
    first = np.maximum.accumulate(np.where(starts, positions, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, positions, length - 1), axis=-1), axis=-1), axis=-1)
    return first, last


def packed_layout(doc_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position_ids [L], cu_seqlens [D+1]) of a packed row from its `doc_index` (1-based, 0 on padding)."""
    doc = np.asarray(doc_index)
    first, _ = document_edges(doc)
    real = doc > 0
    position_ids = np.where(real, np.arange(len(doc)) - first, 0)
    starts = np.flatnonzero(document_starts(doc) & real)
    cu_seqlens = np.append(starts, int(real.sum()))
    return position_ids.astype(PACKED_DTYPE), cu_seqlens.astype(PACKED_DTYPE)


def loss_target_mask(
    input_ids: np.ndarray, attention_mask: np.ndarray, image_token_id: int, pad_token_id: int,
    doc_index: np.ndarray | None = None,
) -> np.ndarray:
    """bool [..., L]: True where token l is a next-token target (predicted from the logits at l-1).

    Position 0 is never a target (nothing in the sequence predicts it), nor (packed rows, `doc_index`) the
    first token of any document: the previous document's last token must not predict it. `<pad>` and
    `<image>` never are; `<EOC>` and `<eos>` are. A trainer uses it as
    `cross_entropy(logits[..., :-1, :], input_ids[..., 1:])` weighted by `targets[..., 1:]`.
    """
    ids = np.asarray(input_ids)
    real = np.asarray(attention_mask).astype(bool)
    targets = real & (ids != image_token_id) & (ids != pad_token_id)
    targets[..., 0] = False
    targets[..., 1:] &= real[..., :-1]
    if doc_index is not None:
        targets &= ~document_starts(doc_index)
    return targets


# ------------------------------------------------------------------------------------------------- encoding


def npy_bytes(array: np.ndarray, dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def member_name(key: str, suffix: str) -> str:
    return f"{key}.{suffix}"


def split_member(name: str) -> tuple[str, str]:
    """`dir/KEY.a.b` → (KEY, a.b), the webdataset convention (first dot of the base name)."""
    base = name.rsplit("/", 1)[-1]
    key, _, suffix = base.partition(".")
    return key, suffix


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open_binary(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tar_bytes(samples: Iterable[tuple[str, dict[str, bytes]]]) -> bytes:
    """(key, {suffix: bytes}) pairs → a deterministic tar: samples sorted by key, members by suffix,
    fixed mtime/mode/owner, PAX format (long keys are fine)."""
    buffer = io.BytesIO()
    write_tar(buffer, sorted(samples, key=lambda item: item[0]))
    return buffer.getvalue()


def write_tar(fileobj: BinaryIO, samples: Iterable[tuple[str, dict[str, bytes]]]) -> None:
    """The tar of `tar_bytes`, streamed to `fileobj` with the samples in the order given (sorted by key by
    the caller): one sample's bytes in memory at a time, whatever the shard's size."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, members in samples:
            for suffix in sorted(members):
                data = members[suffix]
                info = tarfile.TarInfo(member_name(key, suffix))
                info.size = len(data)
                info.mtime = TAR_MTIME
                info.mode = TAR_MODE
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))


def shard_file_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:06d}{SHARD_SUFFIX}"


# -------------------------------------------------------------------------------------------------- reading


def is_remote(path: str) -> bool:
    return "://" in path


def open_binary(path: str) -> BinaryIO:
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(path, compression_type="uncompressed")
    return open(path, "rb")


def join_path(base: str, name: str) -> str:
    if is_remote(base):
        return base.rstrip("/") + "/" + name
    return os.path.join(base, name)


def parent_dir(path: str) -> str:
    if is_remote(path):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))


def path_exists(path: str) -> bool:
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.exists(path)


def read_manifest(path: str) -> dict[str, Any]:
    """A manifest file, or the manifest of a shard directory."""
    if not path.endswith(".json"):
        path = join_path(path, MANIFEST_NAME)
    with open_binary(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """What reports say about a written shard set, from its manifest."""
    tokenizer = manifest.get("tokenizer") or {}
    return {"samples": manifest["total_samples"], "documents": manifest["total_documents"],
            "shards": len(manifest["shards"]), "seq_len": manifest.get("seq_len"),
            "max_images": manifest.get("max_images"), "image_size": manifest.get("image_size"),
            "mode": manifest.get("mode"),
            "vocab_size": tokenizer.get("vocab_size"), "tokenizer_sha256": tokenizer.get("sha256")}


def manifest_path(source: str) -> str | None:
    """The manifest that describes `source` (a manifest, a shard directory, or a shard inside one), if any."""
    if source.endswith(".json"):
        return source
    candidates = []
    if source.endswith(SHARD_SUFFIX):
        shard_dir = parent_dir(source)
        candidates = [join_path(shard_dir, MANIFEST_NAME), join_path(parent_dir(shard_dir), MANIFEST_NAME)]
    else:
        candidates = [join_path(source, MANIFEST_NAME)]
    return next((c for c in candidates if path_exists(c)), None)


def shard_paths(source: str) -> list[str]:
    """The shard files a source names: a `.tar`, a manifest (its shards, in order) or a directory
    (its manifest's shards when it has one, else every `*.tar` under it and under `shards/`, sorted)."""
    if not is_remote(source):
        source = os.path.abspath(source)
    if source.endswith(SHARD_SUFFIX):
        return [source]
    if source.endswith(".json"):
        manifest = read_manifest(source)
        base = parent_dir(source)
        return [join_path(base, shard["file"]) for shard in manifest["shards"]]
    if path_exists(join_path(source, MANIFEST_NAME)):
        return shard_paths(join_path(source, MANIFEST_NAME))
    if is_remote(source):
        from apache_beam.io.filesystems import FileSystems

        found = []
        for pattern in (join_path(source, "*.tar"), join_path(source, f"{SHARDS_DIR}/*.tar")):
            for match in FileSystems.match([pattern])[0].metadata_list:
                found.append(match.path)
        return sorted(found)
    found = []
    for folder in (source, os.path.join(source, SHARDS_DIR)):
        if os.path.isdir(folder):
            found += [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(SHARD_SUFFIX)]
    return sorted(found)


def canary_shard_paths(source: str) -> list[str]:
    """The canary shard files of a shard set's manifest (`canaries.shards`); none for a `.tar` or a set without."""
    found = None if source.endswith(SHARD_SUFFIX) else manifest_path(source)
    if found is None:
        return []
    canaries = read_manifest(found).get("canaries") or {}
    return [join_path(parent_dir(found), shard["file"]) for shard in canaries.get("shards", [])]


def iter_tar_groups(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) for each consecutive group of members sharing a key, streaming."""
    with open_binary(path) as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
        current_key: str | None = None
        members: dict[str, bytes] = {}
        for info in tar:
            if not info.isfile():
                continue
            key, suffix = split_member(info.name)
            extracted = tar.extractfile(info)
            data = extracted.read() if extracted is not None else b""
            if key != current_key:
                if current_key is not None:
                    yield current_key, members
                current_key, members = key, {}
            members[suffix] = data
        if current_key is not None:
            yield current_key, members


def sample_from_members(key: str, members: dict[str, bytes], shard: str = "", decode_images: bool = False) -> Sample:
    """Build a Sample from one key's raw members; raises KeyError/ValueError on a malformed sample."""
    arrays = {suffix: npy_array(members[suffix]) for suffix in ARRAY_MEMBERS}
    metadata = json.loads(members[METADATA].decode("utf-8"))
    slots = sorted(
        (int(m.group(1)), suffix) for suffix in members if (m := IMAGE_MEMBER_RE.match(suffix)) is not None
    )
    sample = Sample(
        key=key,
        input_ids=arrays[INPUT_IDS],
        attention_mask=arrays[ATTENTION_MASK],
        phi=arrays[PHI],
        phi_next=arrays[PHI_NEXT],
        image_bytes=[members[suffix] for _, suffix in slots],
        metadata=metadata,
        shard=shard,
        members=members,
    )
    if DOC_INDEX in members:
        sample.doc_index, sample.position_ids, sample.cu_seqlens = (
            npy_array(members[suffix]) for suffix in PACKED_ARRAY_MEMBERS)
    if decode_images:
        sample.images = sample.decode_images()
    return sample


def iter_samples(source: str, decode_images: bool = False) -> Iterator[Sample]:
    """Every sample of a shard, a shard directory or a manifest, in stored order (plain `tarfile`)."""
    for path in shard_paths(source):
        for key, members in iter_tar_groups(path):
            yield sample_from_members(key, members, shard=path, decode_images=decode_images)
