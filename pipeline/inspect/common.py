"""What every inspector needs: the shard set a path names, its manifest, its tokenizer and special ids."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from schemas.shards import (
    MANIFEST_NAME,
    SHARD_SUFFIX,
    TOKENIZER_NAME,
    SpecialTokens,
    canary_shard_paths,
    join_path,
    manifest_path,
    open_binary,
    parent_dir,
    path_exists,
    read_manifest,
    shard_paths,
)


class InspectError(ValueError):
    """The path names nothing inspectable (no shards, no tokenizer to decode them with)."""


@dataclass
class ShardSet:
    source: str
    shards: list[str]
    manifest: dict[str, Any] | None
    manifest_file: str | None
    tokenizer_file: str | None
    tokenizer_text: str | None
    special: SpecialTokens | None

    @property
    def whole_manifest(self) -> bool:
        """True when the source is the manifest's full shard set (not one shard picked from it)."""
        return self.manifest is not None and not self.source.endswith(SHARD_SUFFIX)

    def tokenizer(self):
        if self.tokenizer_text is None:
            return None
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.tokenizer_text)


def _read_text(path: str) -> str:
    with open_binary(path) as handle:
        return handle.read().decode("utf-8")


def _tokenizer_candidates(source: str) -> list[str]:
    """`tokenizer.json` beside the shards or one level up (a shard inside `OUT/shards/`)."""
    folder = parent_dir(source) if source.endswith((SHARD_SUFFIX, ".json")) else source.rstrip("/")
    return [join_path(folder, TOKENIZER_NAME), join_path(parent_dir(folder), TOKENIZER_NAME)]


def open_shard_set(source: str, tokenizer_path: str | None = None) -> ShardSet:
    """Resolve `source` (shard, directory or manifest) into its shards, manifest and tokenizer."""
    if not source.endswith(".json") and not source.endswith(SHARD_SUFFIX) and not os.path.isdir(source) \
            and "://" not in source:
        raise InspectError(f"{source}: not a shard (.tar), a directory of shards or a manifest (.json)")
    if not path_exists(source):
        raise InspectError(f"{source}: no such file or directory")
    found_manifest = manifest_path(source)
    manifest = read_manifest(found_manifest) if found_manifest else None
    shards = shard_paths(source) + canary_shard_paths(source)  # a build's alignment canaries too (`canaries/`)
    if not shards and not (manifest is not None and not manifest.get("shards")):
        raise InspectError(f"{source}: no shards found (expected *.tar, shards/*.tar or a {MANIFEST_NAME})")
    tokenizer_file = tokenizer_path
    if tokenizer_file is None and manifest is not None:
        tokenizer_file = join_path(parent_dir(found_manifest), manifest["tokenizer"]["file"])
    if tokenizer_file is None:
        tokenizer_file = next((c for c in _tokenizer_candidates(source) if path_exists(c)), None)
    text = _read_text(tokenizer_file) if tokenizer_file and path_exists(tokenizer_file) else None
    special = None
    if manifest is not None:
        special = SpecialTokens.from_manifest(manifest)
    elif text is not None:
        special = special_from_tokenizer(text)
    return ShardSet(source=source, shards=shards, manifest=manifest, manifest_file=found_manifest,
                    tokenizer_file=tokenizer_file, tokenizer_text=text, special=special)


def special_from_tokenizer(text: str) -> SpecialTokens | None:
    """Special ids from a tokenizer file alone (no manifest): the contract's token strings, or known EOS/PAD."""
    from tokenizers import Tokenizer

    from pipeline.shards.tokenizer import EOC_TOKEN, IMAGE_TOKEN, KNOWN_EOS, KNOWN_PAD

    tokenizer = Tokenizer.from_str(text)

    def first(tokens) -> int | None:
        return next((tokenizer.token_to_id(t) for t in tokens if tokenizer.token_to_id(t) is not None), None)

    ids = [tokenizer.token_to_id(IMAGE_TOKEN), tokenizer.token_to_id(EOC_TOKEN), first(KNOWN_EOS), first(KNOWN_PAD)]
    if any(i is None for i in ids):
        return None
    return SpecialTokens(*ids)


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text of each token, robust to byte-level tokens that split one character over several ids
    (the character goes to the first token of the group, the others get "")."""
    pieces: list[str] = []
    start = 0
    while start < len(ids):
        end = start + 1
        text = tokenizer.decode(ids[start:end], skip_special_tokens=False)
        if text.endswith("\ufffd"):
            for extra in range(end + 1, min(len(ids), start + 8) + 1):
                longer = tokenizer.decode(ids[start:extra], skip_special_tokens=False)
                if not longer.endswith("\ufffd"):
                    text, end = longer, extra
                    break
        pieces.append(text)
        pieces.extend([""] * (end - start - 1))
        start = end
    return pieces


def format_table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    """Plain aligned text table: first column left-aligned, the others (figures) right-aligned."""
    table = ([tuple(header)] if header else []) + [tuple(str(cell) for cell in row) for row in rows]
    if not table:
        return ""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if header and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
