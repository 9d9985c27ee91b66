"""`m3w inspect show`: one sample in the terminal — its text decoded with `<image>` markers, then every
token with φ and φ_next printed under it, so a misalignment is visible at a glance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.inspect.common import InspectError, ShardSet, open_shard_set, token_pieces
from schemas.shards import Sample, SpecialTokens, iter_tar_groups, sample_from_members


@dataclass
class Token:
    """One real token as a person reads it."""

    position: int
    text: str         # decoded text ("" for the tail of a multi-token character)
    label: str        # the column label: text with visible whitespace, or <image#k>/<EOC>/<eos>
    phi: int
    phi_next: int
    image_slot: int | None  # 0-based slot for an <image> token


def iter_shard_set_samples(shard_set: ShardSet) -> Iterator[Sample]:
    for path in shard_set.shards:
        for key, members in iter_tar_groups(path):
            yield sample_from_members(key, members, shard=path)


def find_sample(shard_set: ShardSet, key: str | None = None, index: int = 0) -> Sample:
    """The sample with `key`, else the `index`-th sample (0-based, in stored order)."""
    for n, sample in enumerate(iter_shard_set_samples(shard_set)):
        if (key is not None and sample.key == key) or (key is None and n == index):
            return sample
    wanted = f"key {key!r}" if key is not None else f"sample #{index}"
    raise InspectError(f"{shard_set.source}: no {wanted}")


def sample_tokens(sample: Sample, tokenizer, special: SpecialTokens) -> list[Token]:
    ids = [int(i) for i, real in zip(sample.input_ids, sample.attention_mask) if real]
    pieces = token_pieces(tokenizer, ids) if tokenizer is not None else [f"[{i}]" for i in ids]
    tokens: list[Token] = []
    slot = 0
    for position, (token_id, piece) in enumerate(zip(ids, pieces)):
        image_slot = None
        if token_id == special.image:
            image_slot = slot
            slot += 1
            label = f"<image#{image_slot + 1}>"
        elif token_id == special.eoc:
            label = "<EOC>"
        elif token_id == special.eos:
            label = "<eos>"
        else:
            label = piece.replace("\n", "⏎").replace("\t", "→").replace(" ", "·") if piece else "…"
        tokens.append(Token(position, piece, label, int(sample.phi[position]), int(sample.phi_next[position]),
                            image_slot))
    return tokens


def readable_text(tokens: list[Token], image_urls: list[str]) -> str:
    """The sequence as prose, each image shown as `[<image> #k url]` where its token stands."""
    out: list[str] = []
    for token in tokens:
        if token.image_slot is not None:
            url = image_urls[token.image_slot] if token.image_slot < len(image_urls) else "?"
            out.append(f"\n[<image> #{token.image_slot + 1} {url}]\n")
        elif token.label in ("<EOC>", "<eos>"):
            out.append(f" {token.label}")
        else:
            out.append(token.text)
    return "".join(out).strip()


def token_grid(tokens: list[Token], width: int = 100) -> str:
    """Rows of tokens with φ and φ_next under each, wrapped at `width` columns."""
    blocks: list[str] = []
    row: list[tuple[str, str, str, str]] = []
    used = 0

    def flush() -> None:
        if not row:
            return
        columns = list(zip(*row))
        widths = [max(len(c[0]), len(c[1]), len(c[2]), len(c[3])) for c in row]
        names = ("pos", "token", "phi", "phi_next")
        lines = []
        for n, name in enumerate(names):
            cells = [value.rjust(w) if n != 1 else value.ljust(w) for value, w in zip(columns[n], widths)]
            lines.append(f"{name:>8} " + " ".join(cells))
        blocks.append("\n".join(lines))
        row.clear()

    for token in tokens:
        cell = (str(token.position), token.label, str(token.phi), str(token.phi_next))
        cell_width = max(len(c) for c in cell) + 1
        if row and used + cell_width > width - 9:
            flush()
            used = 0
        row.append(cell)
        used += cell_width
    flush()
    return "\n\n".join(blocks)


def render_sample(sample: Sample, tokenizer, special: SpecialTokens, width: int = 100) -> str:
    meta = sample.metadata
    tokens = sample_tokens(sample, tokenizer, special)
    header = [f"key        {sample.key}   (shard {sample.shard})"]
    for number, part in enumerate(meta.get("documents") or [meta], start=1):
        if sample.is_packed:
            start, end = (int(v) for v in sample.cu_seqlens[number - 1: number + 1])
            header.append(f"document {number} tokens {start}..{end - 1}, {part.get('n_images')} image(s) from slot "
                          f"{part.get('first_slot', 0) + 1}")
        header += [
            f"url        {part.get('url', '')}   language {part.get('language') or '?'}",
            f"window     {part.get('window')} of {part.get('n_windows')} (token offset {part.get('token_start')}, "
            f"{'starts at a chunk boundary' if part.get('starts_at_boundary') else 'starts mid-chunk'}, "
            f"mode {meta.get('mode')})",
        ]
    header += [
        f"tokens     {len(tokens)} real of {len(sample.input_ids)}   targets {meta.get('n_targets')}   "
        f"images {len(sample.image_bytes)} of {meta.get('max_images')} slots "
        f"({'x'.join(str(v) for v in meta.get('image_size', []))}, {meta.get('resize_mode')})",
    ]
    for slot, url in enumerate(meta.get("image_urls", [])):
        header.append(f"image #{slot + 1}   {url}")
    return "\n".join([
        *header,
        "",
        "── text ──",
        readable_text(tokens, meta.get("image_urls", [])),
        "",
        "── tokens, with φ (last image at or before) and φ_next (first image at or after) under each ──",
        token_grid(tokens, width),
    ])


def show(source: str, key: str | None = None, index: int = 0, width: int = 100,
         tokenizer_path: str | None = None) -> str:
    shard_set = open_shard_set(source, tokenizer_path)
    if shard_set.special is None:
        raise InspectError(f"{source}: no manifest or tokenizer.json found to decode the tokens (use --tokenizer)")
    sample = find_sample(shard_set, key, index)
    return render_sample(sample, shard_set.tokenizer(), shard_set.special, width)
