"""`m3w inspect validate`: every invariant of the M3W contract, the manifest's counts and checksums.

Each problem names the shard, the sample key and what is wrong, so a person can go straight to it.
Checked per sample: members present and well-typed; right padding (a prefix of real tokens, `<pad>`
exactly on padding); ids inside the vocabulary; `<EOC>` before every `<image>` that does not open the
sequence; `<image>` count = filled image slots ≤ N, slots numbered contiguously; `phi` and `phi_next`
equal to their recomputation from the tokens and `phi` non-decreasing over real tokens; every image
decodes to the stated size and matches its recorded sha256 (a swapped slot is named as such); at least
one loss target; metadata consistent with the arrays. Across the set: keys unique over all shards; the
manifest's per-shard sample counts, byte sizes and sha256, its totals, and the tokenizer's sha256
and special-token ids.

Packed rows (manifest `mode: packed`) are checked per document: `doc_index` runs 1..D over the real tokens
(0 on padding), `cu_seqlens` and `position_ids` agree with it, each document's `<image>` has its `<EOC>`
inside the document (or opens it) and its slot among the document's slots (image spans whole), `<eos>` ends
a document, φ and φ_next recompute per document and never name an image of another document, φ does not
decrease inside a document, a document's first token is no target, the row holds at most N images, and the
`documents` metadata matches the arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.inspect.common import ShardSet, open_shard_set
from schemas.shards import (
    ARRAY_MEMBERS,
    CANARY_SHARDS_DIR,
    CU_SEQLENS,
    DOC_INDEX,
    DOCUMENT_JSON_FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_EXTENSIONS,
    IMAGE_MEMBER_RE,
    MEMBER_DTYPES,
    METADATA,
    PACKED_ARRAY_MEMBERS,
    PACKED_MODE,
    PACKED_SAMPLE_JSON_FIELDS,
    READABLE_FORMAT_VERSIONS,
    SAMPLE_JSON_FIELDS,
    SHARDS_DIR,
    SpecialTokens,
    compute_phi,
    decode_image,
    document_starts,
    iter_tar_groups,
    join_path,
    loss_target_mask,
    npy_array,
    parent_dir,
    path_exists,
    sha256_bytes,
    sha256_file,
    shard_paths,
)


@dataclass(frozen=True)
class Problem:
    shard: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.shard or '-'}: {self.key or '-'}: {self.message}"


@dataclass
class Expected:
    """What every sample must agree with (from the manifest, else from the first sample and the tokenizer)."""

    seq_len: int | None = None
    max_images: int | None = None
    image_size: tuple[int, int] | None = None
    image_format: str | None = None
    special: SpecialTokens | None = None
    vocab_size: int | None = None
    mode: str | None = None


@dataclass
class ValidationResult:
    source: str
    problems: list[Problem] = field(default_factory=list)
    samples: int = 0
    shards: int = 0
    manifest: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _first_difference(stored: np.ndarray, recomputed: np.ndarray, real: np.ndarray) -> str:
    where = np.flatnonzero(stored != recomputed)
    first = int(where[0])
    kind = "padding" if not real[first] else "token"
    return (f"{len(where)} position(s), first at {first} ({kind}): stored {int(stored[first])}, "
            f"recomputed {int(recomputed[first])}")


def check_sample(key: str, members: dict[str, bytes], expected: Expected, check_images: bool = True) -> list[str]:
    """All contract violations of one sample, as messages (empty when the sample is sound)."""
    problems: list[str] = []
    packed = expected.mode == PACKED_MODE or DOC_INDEX in members
    array_members = (*ARRAY_MEMBERS, *PACKED_ARRAY_MEMBERS) if packed else ARRAY_MEMBERS
    missing = [suffix for suffix in (*array_members, METADATA) if suffix not in members]
    if missing:
        return [f"missing member(s) {', '.join(f'{key}.{m}' for m in missing)}"]
    image_members = {}
    for suffix in members:
        match = IMAGE_MEMBER_RE.match(suffix)
        if match:
            image_members[int(match.group(1))] = suffix
        elif suffix not in (*array_members, METADATA):
            problems.append(f"unexpected member {key}.{suffix}")

    try:
        meta = json.loads(members[METADATA].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return problems + [f"metadata {key}.json is not valid JSON: {error}"]
    absent = [name for name in (PACKED_SAMPLE_JSON_FIELDS if packed else SAMPLE_JSON_FIELDS) if name not in meta]
    if absent:
        problems.append(f"metadata lacks field(s) {', '.join(absent)}")
    if meta.get("key", key) != key:
        problems.append(f"metadata key {meta.get('key')!r} differs from the member key")
    if expected.mode is not None and meta.get("mode") != expected.mode:
        problems.append(f"metadata mode {meta.get('mode')!r}, the manifest says {expected.mode!r}")

    arrays: dict[str, np.ndarray] = {}
    seq_len = expected.seq_len or meta.get("seq_len")
    for suffix in array_members:
        name = suffix.removesuffix(".npy")
        try:
            array = npy_array(members[suffix])
        except Exception as error:  # noqa: BLE001 - any parse failure is a corrupt member
            problems.append(f"{name}: not a readable .npy array ({error})")
            continue
        if array.dtype != MEMBER_DTYPES[suffix]:
            problems.append(f"{name}: dtype {array.dtype}, expected {MEMBER_DTYPES[suffix]}")
        if suffix == CU_SEQLENS:
            if array.ndim != 1:
                problems.append(f"{name}: shape {array.shape}, expected (documents + 1,)")
                continue
        elif array.ndim != 1 or (seq_len is not None and array.shape[0] != seq_len):
            problems.append(f"{name}: shape {array.shape}, expected ({seq_len},)")
            continue
        arrays[name] = array.astype(np.int64)
    if len(arrays) < len(array_members):
        return problems  # arrays of the wrong length cannot be compared position by position

    ids, mask, phi, phi_next = arrays["input_ids"], arrays["attention_mask"], arrays["phi"], arrays["phi_next"]
    special = expected.special
    max_images = expected.max_images or meta.get("max_images")

    if not np.isin(mask, (0, 1)).all():
        problems.append("attention_mask: values other than 0 and 1")
        return problems
    real = mask.astype(bool)
    n_real = int(real.sum())
    if n_real and not real[:n_real].all():
        problems.append(f"attention_mask: not right-padded (padding at position {int(np.flatnonzero(~real)[0])} "
                        f"before real tokens)")
    if meta.get("n_tokens") is not None and meta["n_tokens"] != n_real:
        problems.append(f"metadata n_tokens = {meta['n_tokens']}, attention_mask marks {n_real} real tokens")
    if expected.vocab_size is not None:
        outside = np.flatnonzero((ids < 0) | (ids >= expected.vocab_size))
        if len(outside):
            problems.append(f"input_ids: id {int(ids[outside[0]])} at position {int(outside[0])} is outside the "
                            f"vocabulary (size {expected.vocab_size})")
    if special is None:
        problems.append("special token ids unknown (no manifest or tokenizer): token invariants not checked")
        return problems

    pad_inside = np.flatnonzero(real & (ids == special.pad))
    if len(pad_inside):
        problems.append(f"input_ids: <pad> at position {int(pad_inside[0])} inside the real tokens")
    not_pad = np.flatnonzero(~real & (ids != special.pad))
    if len(not_pad):
        problems.append(f"input_ids: padding position {int(not_pad[0])} holds id {int(ids[not_pad[0]])}, not <pad>")

    doc_index = None
    if packed:
        layout = _packed_layout_problems(arrays, real, n_real)
        problems += layout
        if layout:
            return problems  # without sound document boundaries nothing per document can be checked
        doc_index = arrays["doc_index"]
    starts = document_starts(doc_index) if doc_index is not None else np.arange(len(ids)) == 0
    ends = np.zeros(len(ids), dtype=bool)
    ends[np.flatnonzero(starts)[1:] - 1] = True
    if n_real:
        ends[n_real - 1] = True
    image_positions = np.flatnonzero(real & (ids == special.image))
    for position in image_positions:
        if not starts[position] and ids[position - 1] != special.eoc:
            problems.append(f"<image> at position {int(position)} is not preceded by <EOC>"
                            + (" of its document" if packed else ""))
            break
    eos_positions = np.flatnonzero(real & (ids == special.eos))
    for position in eos_positions:
        if not ends[position]:
            problems.append(f"<eos> at position {int(position)} is not the last real token"
                            + (" of its document" if packed else ""))
            break
        if position > 0 and ids[position - 1] != special.eoc:
            problems.append(f"<eos> at position {int(position)} is not preceded by <EOC>")

    n_image_tokens = len(image_positions)
    slots = sorted(image_members)
    if slots != list(range(len(slots))):
        problems.append(f"image slots not numbered 0..{len(slots) - 1}: {', '.join(image_members[s] for s in slots)}")
    if n_image_tokens != len(slots):
        problems.append(f"{n_image_tokens} <image> token(s) but {len(slots)} filled image slot(s)")
    if max_images is not None and n_image_tokens > max_images:
        problems.append(f"{n_image_tokens} <image> tokens exceed max_images = {max_images}")
    if meta.get("n_images") is not None and meta["n_images"] != len(slots):
        problems.append(f"metadata n_images = {meta['n_images']}, {len(slots)} filled image slot(s)")
    if isinstance(meta.get("image_urls"), list) and len(meta["image_urls"]) != len(slots):
        problems.append(f"metadata lists {len(meta['image_urls'])} image URL(s) for {len(slots)} filled slot(s)")

    if doc_index is not None:
        problems += _cross_document_problems(phi, phi_next, doc_index, image_positions, real)
        problems += _documents_metadata_problems(meta, doc_index, image_positions, len(slots))
    want_phi, want_next = compute_phi(ids, special.image, mask, doc_index)
    if (phi != want_phi).any():
        problems.append(f"phi disagrees with the tokens at {_first_difference(phi, want_phi, real)}")
    if (phi_next != want_next).any():
        problems.append(f"phi_next disagrees with the tokens at {_first_difference(phi_next, want_next, real)}")
    decreasing = np.flatnonzero((np.diff(phi) < 0) & real[1:] & ~starts[1:])
    if len(decreasing):
        at = int(decreasing[0]) + 1
        problems.append(f"phi decreases at position {at} ({int(phi[at - 1])} → {int(phi[at])})"
                        + (" inside a document" if packed else ""))
    limit = max_images if max_images is not None else n_image_tokens
    for name, values in (("phi", phi), ("phi_next", phi_next)):
        if values.min(initial=0) < 0 or values.max(initial=0) > limit:
            problems.append(f"{name}: values outside 0..{limit}")

    n_targets = int(loss_target_mask(ids, mask, special.image, special.pad, doc_index).sum())
    if n_targets == 0:
        problems.append("no loss target (a sequence without targets must not be emitted)")
    if meta.get("n_targets") is not None and meta["n_targets"] != n_targets:
        problems.append(f"metadata n_targets = {meta['n_targets']}, recomputed {n_targets}")

    problems += _check_images(members, image_members, meta, expected, check_images)
    return problems


def _packed_layout_problems(arrays: dict[str, np.ndarray], real: np.ndarray, n_real: int) -> list[str]:
    """`doc_index` runs 1..D over the real tokens and is 0 on padding; `cu_seqlens` and `position_ids` agree."""
    doc, positions, cu_seqlens = arrays["doc_index"], arrays["position_ids"], arrays["cu_seqlens"]
    problems = []
    if (doc[~real] != 0).any():
        problems.append(f"doc_index: padding position {int(np.flatnonzero(~real & (doc != 0))[0])} holds a "
                        f"document index (expected 0)")
    steps = np.diff(doc[real])
    if n_real and (doc[0] != 1 or ((steps != 0) & (steps != 1)).any()):
        problems.append("doc_index: the real tokens' document indices do not run 1, 2, ... D in order")
    if problems:
        return problems
    starts = np.flatnonzero(document_starts(doc) & real)
    want_cu = np.append(starts, n_real)
    if len(cu_seqlens) != len(want_cu) or (cu_seqlens != want_cu).any():
        problems.append(f"cu_seqlens {cu_seqlens.tolist()} disagree with doc_index (document boundaries "
                        f"{want_cu.tolist()})")
    first = np.maximum.accumulate(np.where(document_starts(doc), np.arange(len(doc)), 0))
    want_positions = np.where(real, np.arange(len(doc)) - first, 0)
    wrong = np.flatnonzero(positions != want_positions)
    if len(wrong):
        at = int(wrong[0])
        problems.append(f"position_ids do not restart at each document: position {at} holds "
                        f"{int(positions[at])}, expected {int(want_positions[at])}")
    return problems


def _cross_document_problems(phi: np.ndarray, phi_next: np.ndarray, doc_index: np.ndarray,
                             image_positions: np.ndarray, real: np.ndarray) -> list[str]:
    """Positions whose φ or φ_next names an image slot of another document of the row (a cross-document leak)."""
    problems = []
    slot_document = doc_index[image_positions]  # the document of each row slot, in <image> order
    for name, values in (("phi", phi), ("phi_next", phi_next)):
        named = real & (values > 0) & (values <= len(slot_document))
        owner = np.zeros_like(values)
        owner[named] = slot_document[values[named] - 1]
        leaking = np.flatnonzero(named & (owner != doc_index))
        if len(leaking):
            at = int(leaking[0])
            problems.append(f"{name} names an image of another document at {len(leaking)} position(s) "
                            f"(cross-document leak), first at {at}: document {int(doc_index[at])} names slot "
                            f"{int(values[at])} of document {int(owner[at])}")
    return problems


def _documents_metadata_problems(meta: dict[str, Any], doc_index: np.ndarray, image_positions: np.ndarray,
                                 n_slots: int) -> list[str]:
    """The row's `documents` entries against the arrays: one per document, its tokens, images and slots."""
    documents = meta.get("documents")
    if not isinstance(documents, list):
        return ["metadata: documents is not a list"]
    counts = np.bincount(doc_index, minlength=len(documents) + 1)[1:]
    problems = []
    if len(documents) != len(counts) or meta.get("n_documents") != len(counts):
        return [f"metadata lists {len(documents)} document(s) (n_documents {meta.get('n_documents')}), doc_index "
                f"has {len(counts)}"]
    images_of = np.bincount(doc_index[image_positions], minlength=len(documents) + 1)[1:]
    first_slot = 0
    for number, (entry, tokens, images) in enumerate(zip(documents, counts, images_of), start=1):
        absent = [name for name in DOCUMENT_JSON_FIELDS if name not in entry]
        if absent:
            problems.append(f"metadata: document {number} lacks field(s) {', '.join(absent)}")
            continue
        if entry["n_tokens"] != tokens:
            problems.append(f"metadata: document {number} n_tokens = {entry['n_tokens']}, doc_index marks {tokens}")
        if entry["n_images"] != images or entry["first_slot"] != first_slot:
            problems.append(f"metadata: document {number} images {entry['n_images']} from slot "
                            f"{entry['first_slot']}, its <image> tokens are {int(images)} from slot {first_slot} "
                            f"(image spans must stay whole in their document)")
        first_slot += int(images)
    if first_slot != n_slots:
        problems.append(f"{first_slot} <image> token(s) in the documents, {n_slots} filled slot(s)")
    return problems


def _check_images(members: dict[str, bytes], image_members: dict[int, str], meta: dict[str, Any],
                  expected: Expected, decode: bool) -> list[str]:
    problems: list[str] = []
    hashes = meta.get("image_sha256") if isinstance(meta.get("image_sha256"), list) else None
    size = expected.image_size or (tuple(meta["image_size"]) if meta.get("image_size") else None)
    extension = IMAGE_EXTENSIONS.get(expected.image_format or meta.get("image_format", ""), None)
    for slot in sorted(image_members):
        suffix = image_members[slot]
        data = members[suffix]
        if extension and not suffix.endswith("." + extension):
            problems.append(f"image slot {slot}: member {suffix}, expected .{extension}")
        if hashes is not None and slot < len(hashes):
            digest = sha256_bytes(data)
            if digest != hashes[slot]:
                if digest in hashes:
                    problems.append(f"image slot {slot}: holds the image recorded for slot {hashes.index(digest)} "
                                    f"(slots swapped or reordered)")
                else:
                    problems.append(f"image slot {slot}: sha256 differs from the metadata (image altered)")
        if decode:
            try:
                pixels = decode_image(data)
            except Exception as error:  # noqa: BLE001 - the decoder's message goes into the report
                problems.append(f"image slot {slot}: cannot be decoded ({type(error).__name__}: {error})")
                continue
            if size is not None and pixels.shape[:2] != tuple(size):
                problems.append(f"image slot {slot}: decodes to {pixels.shape[0]}x{pixels.shape[1]}, "
                                f"expected {size[0]}x{size[1]}")
    return problems


def _expected_from_manifest(manifest: dict[str, Any] | None, special: SpecialTokens | None,
                            vocab_size: int | None) -> Expected:
    if manifest is None:
        return Expected(special=special, vocab_size=vocab_size)
    return Expected(seq_len=int(manifest["seq_len"]), max_images=int(manifest["max_images"]),
                    image_size=tuple(int(v) for v in manifest["image_size"]), image_format=manifest["image_format"],
                    special=special, vocab_size=int(manifest["tokenizer"]["vocab_size"]), mode=manifest.get("mode"))


def check_manifest(shard_set: ShardSet) -> tuple[list[Problem], dict[str, dict[str, Any]]]:
    """Manifest-level problems and the manifest's entry for each listed shard path."""
    manifest, where = shard_set.manifest, shard_set.manifest_file or ""
    problems: list[Problem] = []
    entries: dict[str, dict[str, Any]] = {}
    if manifest is None:
        return problems, entries
    version = manifest.get("format_version")
    if manifest.get("format") != FORMAT_NAME or version not in READABLE_FORMAT_VERSIONS:
        problems.append(Problem(where, "", f"format {manifest.get('format')!r} v{version}, expected "
                                           f"{FORMAT_NAME!r} v{' or v'.join(map(str, READABLE_FORMAT_VERSIONS))}"))
    elif manifest.get("mode") == PACKED_MODE and version < FORMAT_VERSION:
        problems.append(Problem(where, "", f"mode packed needs format v{FORMAT_VERSION}, the manifest says v{version}"))
    base = parent_dir(where)
    canaries = manifest.get("canaries") or {}
    for entry in [*manifest.get("shards", []), *canaries.get("shards", [])]:
        path = join_path(base, entry["file"])
        if path in entries:
            problems.append(Problem(path, "", "listed twice in the manifest"))
        entries[path] = entry
    for name, listed_samples, shard_list in (("total_samples", manifest.get("total_samples"), manifest.get("shards")),
                                             ("canaries.samples", canaries.get("samples"), canaries.get("shards"))):
        total = sum(int(entry.get("samples", 0)) for entry in shard_list or [])
        if (shard_list is not None or listed_samples is not None) and listed_samples != total:
            problems.append(Problem(where, "", f"{name} = {listed_samples}, the shards list {total}"))
    tokenizer = manifest.get("tokenizer", {})
    tokenizer_path = join_path(base, tokenizer.get("file", ""))
    if not path_exists(tokenizer_path):
        problems.append(Problem(tokenizer_path, "", "tokenizer file named by the manifest is missing"))
    else:
        if sha256_file(tokenizer_path) != tokenizer.get("sha256"):
            problems.append(Problem(tokenizer_path, "", "tokenizer sha256 differs from the manifest"))
        problems += _check_tokenizer_ids(shard_set, tokenizer, tokenizer_path)
    if shard_set.whole_manifest:
        listed = set(entries)
        for path in shard_set.shards:
            if path not in listed:
                problems.append(Problem(path, "", "shard missing from the manifest"))
        on_disk = set()
        for folder in (join_path(base, SHARDS_DIR), join_path(base, CANARY_SHARDS_DIR)):
            if path_exists(folder):
                on_disk |= set(shard_paths(folder))
        for path in sorted(on_disk - listed):
            problems.append(Problem(path, "", "shard file on disk is not listed in the manifest"))
    return problems, entries


def _check_tokenizer_ids(shard_set: ShardSet, tokenizer: dict[str, Any], path: str) -> list[Problem]:
    from tokenizers import Tokenizer

    problems = []
    try:
        loaded = Tokenizer.from_str(shard_set.tokenizer_text or "")
    except Exception as error:  # noqa: BLE001
        return [Problem(path, "", f"tokenizer cannot be loaded: {error}")]
    if loaded.get_vocab_size(with_added_tokens=True) != tokenizer.get("vocab_size"):
        problems.append(Problem(path, "", f"vocab_size {loaded.get_vocab_size(with_added_tokens=True)}, "
                                          f"manifest says {tokenizer.get('vocab_size')}"))
    for role, entry in tokenizer.get("special_tokens", {}).items():
        actual = loaded.token_to_id(entry.get("token", ""))
        if actual != entry.get("id"):
            problems.append(Problem(path, "", f"special token {role} {entry.get('token')!r} has id {actual}, "
                                              f"manifest says {entry.get('id')}"))
    return problems


def validate(source: str, check_images: bool = True, tokenizer_path: str | None = None,
             max_problems: int = 1000) -> ValidationResult:
    """Validate a shard, a directory of shards or a manifest; never raises on bad data (reports it)."""
    shard_set = open_shard_set(source, tokenizer_path)
    result = ValidationResult(source=source, shards=len(shard_set.shards), manifest=shard_set.manifest_file)
    problems, entries = check_manifest(shard_set)
    special = shard_set.special
    vocab_size = None
    if shard_set.tokenizer_text is not None and shard_set.manifest is None:
        vocab_size = shard_set.tokenizer().get_vocab_size(with_added_tokens=True)
    expected = _expected_from_manifest(shard_set.manifest, special, vocab_size)
    seen: dict[str, str] = {}
    for path in shard_set.shards:
        entry = entries.get(path)
        if shard_set.manifest is not None and entry is None and not shard_set.whole_manifest:
            problems.append(Problem(path, "", "shard not listed in the manifest"))
        if not path_exists(path):
            problems.append(Problem(path, "", "shard file listed in the manifest is missing"))
            continue
        count = 0
        previous: set[str] = set()
        try:
            for key, members in iter_tar_groups(path):
                count += 1
                if key in previous:
                    problems.append(Problem(path, key, "key appears twice in this shard (members not contiguous "
                                                       "or a duplicate sample)"))
                previous.add(key)
                if key in seen and seen[key] != path:
                    problems.append(Problem(path, key, f"key also in shard {seen[key]} (keys must be unique)"))
                seen.setdefault(key, path)
                if expected.seq_len is None:
                    expected = _complete_expected(expected, members)
                for message in check_sample(key, members, expected, check_images):
                    problems.append(Problem(path, key, message))
                if len(problems) >= max_problems:
                    break
        except Exception as error:  # noqa: BLE001 - a truncated/corrupt tar is a finding, not a crash
            problems.append(Problem(path, "", f"unreadable tar after {count} sample(s): {error}"))
        result.samples += count
        if entry is not None:
            if entry.get("samples") != count:
                problems.append(Problem(path, "", f"{count} sample(s) in the shard, the manifest says "
                                                  f"{entry.get('samples')}"))
            size = _size(path)
            if entry.get("bytes") is not None and size != entry["bytes"]:
                problems.append(Problem(path, "", f"{size} bytes, the manifest says {entry['bytes']}"))
            if sha256_file(path) != entry.get("sha256"):
                problems.append(Problem(path, "", "sha256 differs from the manifest (shard altered or truncated)"))
        if len(problems) >= max_problems:
            problems.append(Problem("", "", f"stopped after {max_problems} problems"))
            break
    result.problems = problems
    return result


def _complete_expected(expected: Expected, members: dict[str, bytes]) -> Expected:
    """Without a manifest, the first sample's metadata sets L, N and the image size for the rest."""
    try:
        meta = json.loads(members[METADATA].decode("utf-8"))
    except Exception:  # noqa: BLE001 - check_sample reports it
        return expected
    return Expected(seq_len=meta.get("seq_len"), max_images=meta.get("max_images"),
                    image_size=tuple(meta["image_size"]) if meta.get("image_size") else None,
                    image_format=meta.get("image_format"), special=expected.special, vocab_size=expected.vocab_size)


def _size(path: str) -> int:
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    import os

    return os.path.getsize(path)
