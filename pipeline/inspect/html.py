"""`m3w inspect html`: a static page showing samples as a person reads them.

Each sample is its decoded text with every image drawn inline where its `<image>` token stands;
text is tinted in the colour of the image φ says it attends to (untinted text sees no image), and
`<EOC>` / `<eos>` appear as small badges. Images are embedded as data URIs (one self-contained file)
or written beside the page (`image_files=True`), so the page opens from disk in any browser.
"""

from __future__ import annotations

import base64
import html
import os
from itertools import islice

from pipeline.inspect.common import InspectError, open_shard_set
from pipeline.inspect.show import Token, iter_shard_set_samples, sample_tokens
from schemas.shards import IMAGE_MEMBER_RE, Sample

PALETTE = ["#ffe08a", "#a8e6cf", "#ffb3c6", "#b5d8ff", "#d7c4ff", "#ffd3a5", "#c8f0a0", "#f5b5b5"]
MIME = {"jpg": "image/jpeg", "webp": "image/webp"}

STYLE = """
body { font-family: Georgia, 'DejaVu Serif', serif; max-width: 1100px; margin: 24px auto; color: #222;
       background: #fafafa; }
h1 { font-family: sans-serif; font-size: 22px; }
.legend, .meta { font-family: sans-serif; font-size: 12px; color: #555; }
.sample { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 16px 20px; margin: 18px 0; }
.text { white-space: pre-wrap; line-height: 1.6; font-size: 15px; }
figure { display: inline-block; margin: 6px 6px 6px 0; vertical-align: top; border-radius: 4px; padding: 4px; }
figure img { display: block; width: 240px; height: auto; }
figcaption { font-family: sans-serif; font-size: 11px; max-width: 240px; overflow-wrap: anywhere; }
.badge { font-family: monospace; font-size: 10px; background: #444; color: #fff; border-radius: 3px;
         padding: 0 3px; margin: 0 2px; }
"""


def _colour(phi: int) -> str:
    return PALETTE[(phi - 1) % len(PALETTE)]


def _image_sources(sample: Sample, image_dir: str | None, link_prefix: str) -> list[str]:
    """One `src` per filled slot: a data URI, or a file written into `image_dir`."""
    slots = sorted((int(m.group(1)), m.group(2), suffix) for suffix in sample.members
                   if (m := IMAGE_MEMBER_RE.match(suffix)))
    sources = []
    for _, extension, suffix in slots:
        data = sample.members[suffix]
        if image_dir is None:
            sources.append(f"data:{MIME[extension]};base64,{base64.b64encode(data).decode('ascii')}")
        else:
            name = f"{sample.key}.{suffix}"
            with open(os.path.join(image_dir, name), "wb") as handle:
                handle.write(data)
            sources.append(f"{link_prefix}/{name}")
    return sources


def render_tokens(tokens: list[Token], sources: list[str], urls: list[str]) -> str:
    """Token run → HTML: text spans grouped by φ, inline figures at `<image>` tokens."""
    out: list[str] = []
    run: list[str] = []
    run_phi = 0

    def flush() -> None:
        if run:
            text = html.escape("".join(run))
            if run_phi:
                out.append(f'<span style="background:{_colour(run_phi)}" title="φ = {run_phi}">{text}</span>')
            else:
                out.append(f'<span title="φ = 0: sees no image">{text}</span>')
            run.clear()

    for token in tokens:
        if token.image_slot is not None:
            flush()
            slot = token.image_slot
            src = sources[slot] if slot < len(sources) else ""
            url = urls[slot] if slot < len(urls) else ""
            out.append(
                f'<figure style="background:{_colour(slot + 1)}"><img src="{html.escape(src)}" '
                f'alt="image {slot + 1}"><figcaption>&lt;image&gt; #{slot + 1} · {html.escape(url)}</figcaption>'
                f"</figure>"
            )
        elif token.label in ("<EOC>", "<eos>"):
            flush()
            out.append(f'<span class="badge">{html.escape(token.label)}</span>')
        else:
            if token.phi != run_phi:
                flush()
                run_phi = token.phi
            run.append(token.text)
    flush()
    return "".join(out)


def render_sample_html(sample: Sample, tokenizer, special, image_dir: str | None, link_prefix: str) -> str:
    meta = sample.metadata
    tokens = sample_tokens(sample, tokenizer, special)
    sources = _image_sources(sample, image_dir, link_prefix)
    url = meta.get("url", "")
    info = (f"window {meta.get('window')} of {meta.get('n_windows')} · {len(tokens)} tokens · "
            f"{len(sample.image_bytes)}/{meta.get('max_images')} images · language {meta.get('language') or '?'} · "
            f"{'starts at a chunk boundary' if meta.get('starts_at_boundary') else 'starts mid-chunk'}")
    if sample.is_packed:  # a row of several documents: where each starts
        url = meta["documents"][0]["url"]
        info = (f"packed row of {meta['n_documents']} documents · {len(tokens)} tokens · "
                f"{len(sample.image_bytes)}/{meta.get('max_images')} images · documents start at tokens "
                f"{', '.join(str(int(start)) for start in sample.cu_seqlens[:-1])} ("
                f"{', '.join(doc['url'] for doc in meta['documents'])})")
    return (
        f'<section class="sample" id="{html.escape(sample.key)}">'
        f'<div class="meta"><b>{html.escape(sample.key)}</b> · <a href="{html.escape(url)}">{html.escape(url)}</a>'
        f"<br>{html.escape(info)}</div>"
        f'<div class="text">{render_tokens(tokens, sources, meta.get("image_urls", []))}</div></section>'
    )


def write_html(source: str, output: str, limit: int = 20, key: str | None = None, image_files: bool = False,
               tokenizer_path: str | None = None) -> int:
    """Render up to `limit` samples (or the one with `key`) into `output`; returns how many were written."""
    shard_set = open_shard_set(source, tokenizer_path)
    if shard_set.special is None:
        raise InspectError(f"{source}: no manifest or tokenizer.json found to decode the tokens (use --tokenizer)")
    tokenizer = shard_set.tokenizer()
    image_dir = link_prefix = None
    if image_files:
        stem = os.path.splitext(os.path.basename(output))[0]
        link_prefix = f"{stem}_files"
        image_dir = os.path.join(os.path.dirname(os.path.abspath(output)), link_prefix)
        os.makedirs(image_dir, exist_ok=True)
    samples = iter_shard_set_samples(shard_set)
    if key is not None:
        samples = (s for s in samples if s.key == key)
    sections = [render_sample_html(s, tokenizer, shard_set.special, image_dir, link_prefix or "")
                for s in islice(samples, limit)]
    if key is not None and not sections:
        raise InspectError(f"{source}: no key {key!r}")
    legend = ("Text is tinted in the colour of the image it attends to (φ, the last image at or before it); "
              "untinted text sees no image. Each image stands where its &lt;image&gt; token is.")
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>m3w shards: {html.escape(source)}</title><style>{STYLE}</style></head><body>"
        f"<h1>m3w shards · {html.escape(source)}</h1><p class=legend>{legend}</p>"
        f"<p class=legend>{len(sections)} sample(s) shown.</p>{''.join(sections)}</body></html>"
    )
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(page)
    return len(sections)
