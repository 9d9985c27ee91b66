"""The in-pipeline document model and its OBELICS Parquet layout.

A document is the ordered main content of one web page: text blocks and images in reading order.
Inside Beam it travels as a `Document` dataclass; on disk it is one OBELICS row (parallel `texts` /
`images` / `metadata` lists plus a `general_metadata` JSON record), so OBELICS users read it as-is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa


@dataclass
class Image:
    """One image of a document, from its HTML tag and, once downloaded, its bytes."""

    url: str
    alt: str = ""
    caption: str = ""
    title: str = ""
    width: int | None = None  # from the HTML attributes, not the pixels
    height: int | None = None
    data: bytes | None = None  # encoded (resized) image once downloaded
    stored: str | None = None  # sha256 of those bytes in the run's image store while they travel by reference
    meta: dict[str, Any] = field(default_factory=dict)  # sha256, phash, nsfw score, pixel size...

    def node_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"src": self.url, "alt_text": self.alt}
        for key in ("caption", "title", "width", "height"):
            value = getattr(self, key)
            if value not in ("", None):
                out[key] = value
        out.update(self.meta)
        return out


@dataclass
class Node:
    """A text block or an image; exactly one of the two is set."""

    text: str | None = None
    image: Image | None = None

    @property
    def is_image(self) -> bool:
        return self.image is not None


@dataclass
class Document:
    doc_id: str
    url: str
    nodes: list[Node]
    warc_filename: str = ""
    warc_record_offset: int = -1
    warc_record_length: int = -1
    warc_date: str = ""  # ISO 8601, from WARC-Date (or file mtime for plain HTML)
    metadata: dict[str, Any] = field(default_factory=dict)  # language, scores, robots opt-out...

    @property
    def images(self) -> list[Image]:
        return [n.image for n in self.nodes if n.image is not None]

    @property
    def texts(self) -> list[str]:
        return [n.text for n in self.nodes if n.text is not None]

    @property
    def text(self) -> str:
        return "\n\n".join(self.texts)

    def normalize_nodes(self) -> None:
        """Drop empty text nodes and merge neighbouring text nodes (after filters removed parts)."""
        merged: list[Node] = []
        for node in self.nodes:
            if node.image is None:
                if not node.text or not node.text.strip():
                    continue
                if merged and merged[-1].image is None:
                    merged[-1] = Node(text=merged[-1].text + "\n\n" + node.text)
                    continue
            merged.append(node)
        self.nodes = merged


def make_doc_id(url: str, warc_filename: str, offset: int) -> str:
    """Stable id: the same record of the same file always gets the same id."""
    key = f"{url}\x00{warc_filename}\x00{offset}".encode("utf-8", "surrogatepass")
    return hashlib.sha1(key).hexdigest()[:20]


OBELICS_SCHEMA = pa.schema(
    [
        pa.field("images", pa.list_(pa.string())),
        pa.field("metadata", pa.list_(pa.string())),
        pa.field("general_metadata", pa.string()),
        pa.field("texts", pa.list_(pa.string())),
    ]
)
OBELICS_SCHEMA_WITH_BYTES = OBELICS_SCHEMA.append(pa.field("image_bytes", pa.list_(pa.binary())))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def document_to_row(doc: Document, with_bytes: bool = False) -> dict[str, Any]:
    """OBELICS row. `image_bytes` (aligned with `images`) only when the user asks for bytes."""
    row: dict[str, Any] = {
        "images": [n.image.url if n.image else None for n in doc.nodes],
        "metadata": [_json(n.image.node_metadata()) if n.image else None for n in doc.nodes],
        "texts": [n.text if n.image is None else None for n in doc.nodes],
        "general_metadata": _json(
            {
                "doc_id": doc.doc_id,
                "url": doc.url,
                "warc_filename": doc.warc_filename,
                "warc_record_offset": doc.warc_record_offset,
                "warc_record_length": doc.warc_record_length,
                "warc_date": doc.warc_date,
                **doc.metadata,
            }
        ),
    }
    if with_bytes:
        row["image_bytes"] = [n.image.data if n.image else None for n in doc.nodes]
    return row


_GENERAL_KEYS = ("doc_id", "url", "warc_filename", "warc_record_offset", "warc_record_length", "warc_date")
_IMAGE_KEYS = {"src", "alt_text", "caption", "title", "width", "height"}


def row_to_document(row: dict[str, Any]) -> Document:
    """Also reads OBELICS-layout rows written by other tools: without m3w's `doc_id`, a stable one is derived
    (from url + WARC position as m3w does, or from the content when there is no url)."""
    general = json.loads(row.get("general_metadata") or "{}") or {}
    byte_list = row.get("image_bytes") or [None] * len(row["images"])
    nodes: list[Node] = []
    for url, meta_json, text, data in zip(row["images"], row["metadata"], row["texts"], byte_list):
        if url is None:
            nodes.append(Node(text=text))
            continue
        meta = (json.loads(meta_json) if meta_json else None) or {}
        nodes.append(
            Node(
                image=Image(
                    url=url,
                    alt=meta.get("alt_text", ""),
                    caption=meta.get("caption", ""),
                    title=meta.get("title", ""),
                    width=meta.get("width"),
                    height=meta.get("height"),
                    data=data,
                    meta={k: v for k, v in meta.items() if k not in _IMAGE_KEYS},
                )
            )
        )
    return Document(
        doc_id=general.get("doc_id") or derived_doc_id(general, row),
        url=general.get("url"),
        nodes=nodes,
        warc_filename=general.get("warc_filename", ""),
        warc_record_offset=general.get("warc_record_offset", -1),
        warc_record_length=general.get("warc_record_length", -1),
        warc_date=general.get("warc_date", ""),
        metadata={k: v for k, v in general.items() if k not in _GENERAL_KEYS},
    )


def derived_doc_id(general: dict[str, Any], row: dict[str, Any]) -> str:
    """The id of a row from another tool: m3w's own rule where the row names its url, else a content hash."""
    if general.get("url"):
        offset = general.get("warc_record_offset")
        return make_doc_id(str(general["url"]), str(general.get("warc_filename") or ""),
                           -1 if offset is None else int(offset))
    content = json.dumps([row.get("images"), row.get("texts")], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha1(content).hexdigest()[:20]


def document_to_dict(doc: Document) -> dict[str, Any]:
    """Plain-JSON view (for audit files and reports); image bytes are left out."""
    out = asdict(doc)
    for node in out["nodes"]:
        if node["image"] is not None:
            node["image"].pop("data", None)
    return out
