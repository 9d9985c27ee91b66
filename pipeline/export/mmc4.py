"""One document → one MMC4 sample: the JSON that OpenFlamingo's `preprocess_interleaved` reads.

MMC4 stores a document as its sentences (`text_list`), its images (`image_info`: `image_name`, `raw_url`,
`matched_text_index`, `matched_sim`, `image_base64`) and a CLIP `similarity_matrix` (images × texts), and
places each image before the text it is most similar to. m3w knows where each image stands, so:

- `text_list` holds the document's text blocks in reading order (neighbouring text nodes joined by a blank
  line, as m3w's own token stream joins them);
- an image is matched to the text block that follows it (`matched_sim` = `export.mmc4.similarity`, 1.0 by
  default, its similarity row one-hot there); images after the last text block are matched to an empty block
  appended at the end, so their `<image>` tokens stay at the end, after the text, as in m3w's token stream.

OpenFlamingo then writes `<|endofchunk|><image>` before each matched block, drops the first
`<|endofchunk|>` and ends with `<|endofchunk|>` + EOS: the same token stream m3w builds
(`T0 <EOC> <image> T1 ... <EOC> <eos>`). Which of its own rules still drop samples: docs/export.md.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.export import image_bytes, picture_info
from schemas.document import Document

MEMBER_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}


@dataclass
class Mmc4Result:
    """What became of one document: its sample (None when dropped) and the counts behind it."""

    key: str
    sample: dict[str, Any] | None = None
    images_in: int = 0
    images_kept: int = 0
    image_drops: Counter = field(default_factory=Counter)
    document_drop: str | None = None
    small_images: int = 0  # kept, but under the consumer's minimum size (OpenFlamingo skips them)

    def members(self) -> dict[str, bytes]:
        return {"json": json.dumps(self.sample, ensure_ascii=False, sort_keys=True).encode("utf-8")}


def text_blocks_and_images(doc: Document, images: set[int] | None = None) -> list[str | int]:
    """Reading order as text blocks and image node positions. Only the images in `images` (default: all)
    separate blocks; neighbouring text nodes join with a blank line, as in m3w's own token stream."""
    parts: list[str | int] = []
    pending: list[str] = []
    for position, node in enumerate(doc.nodes):
        if node.image is None:
            if node.text and node.text.strip():
                pending.append(node.text.strip())
            continue
        if images is not None and position not in images:
            continue
        if pending:
            parts.append("\n\n".join(pending))
            pending = []
        parts.append(position)
    if pending:
        parts.append("\n\n".join(pending))
    return parts


def usable_images(doc: Document, drops: Counter) -> dict[int, tuple[bytes, tuple[int, int, str]]]:
    """Image node position → (bytes, (width, height, format)) for the images that have bytes and decode; the
    others counted in `drops`."""
    usable: dict[int, tuple[bytes, tuple[int, int, str]]] = {}
    for position, node in enumerate(doc.nodes):
        if node.image is None:
            continue
        data = image_bytes(node.image)
        if data is None:
            drops["no_bytes"] += 1
            continue
        try:
            usable[position] = (data, picture_info(data))
        except Exception:  # noqa: BLE001 - any decoder failure is this image's fault: a counted drop
            drops["undecodable"] += 1
    return usable


def mmc4_sample(doc: Document, key: str, min_images: int, small_image_bytes: int,
                similarity: float = 1.0) -> Mmc4Result:
    """The MMC4 sample of `doc` (images without bytes or that do not decode are left out, counted); each image's
    `matched_sim` and similarity-row peak is `similarity`."""
    result = Mmc4Result(key=key, images_in=len(doc.images))
    usable = usable_images(doc, result.image_drops)
    texts: list[str] = []
    image_info: list[dict[str, Any]] = []
    waiting: list[dict[str, Any]] = []  # images whose following text block is not seen yet
    for part in text_blocks_and_images(doc, set(usable)):
        if isinstance(part, str):
            texts.append(part)
            for info in waiting:
                info["matched_text_index"] = len(texts) - 1
            waiting = []
            continue
        data, (_, _, image_format) = usable[part]
        extension = MEMBER_EXTENSIONS.get(image_format, image_format or "bin")
        info = {"image_name": f"{key}-{len(image_info):03d}.{extension}", "raw_url": doc.nodes[part].image.url,
                "matched_text_index": -1, "matched_sim": similarity,
                "image_base64": base64.b64encode(data).decode("ascii")}
        image_info.append(info)
        waiting.append(info)
        result.small_images += len(data) < small_image_bytes
    if waiting:
        texts.append("")
        for info in waiting:
            info["matched_text_index"] = len(texts) - 1
    if len(image_info) < max(1, min_images):
        result.document_drop = "too_few_images"
        result.image_drops["in_dropped_document"] += len(image_info)
        result.small_images = 0
        return result
    result.images_kept = len(image_info)
    matrix = [[similarity if column == info["matched_text_index"] else 0.0 for column in range(len(texts))]
              for info in image_info]
    result.sample = {"key": key, "doc_id": doc.doc_id, "url": doc.url,
                     "language": str(doc.metadata.get("language") or ""), "text_list": texts,
                     "image_info": image_info, "similarity_matrix": matrix}
    return result
