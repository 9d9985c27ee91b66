"""Image bytes stored once, by content, in a run's work area; documents carry the sha256 between stages.

Moving image bytes through every document shuffle multiplies a build's memory and shuffle volume by the
image payload (100,000 pages x a 30 KB picture = 3 GB per shuffle) and walks the local runner into its
data-plane limits (docs/runner.md). So the download stage writes each stored image once to
`<root>/<sha[:2]>/<sha256>` and documents travel with `Image.stored` (that sha256) and no bytes; the
steps that need pixels (pHash for image dedup, fitting the shard slots) and the final writers read them
back. The store is any Beam filesystem path; a file is written under a temporary name of its writer's own
and renamed (`open_atomically`), so a reader never sees half an image, two threads or workers storing the
same picture at once both succeed, and a read checks the digest. Files are not fsync'd one by one (that
doubled the cost of storing an image): a resumed download checks every image a finished shard refers
to (`verified`) and fetches the shard again when one did not survive a crash.

A store file that is missing or does not match its name is not a bad image: the work area was damaged
or removed under a running build, so reading raises `StoreError` and the run stops.
"""

from __future__ import annotations

import dataclasses
import hashlib

from apache_beam.io.filesystems import FileSystems

from pipeline.core.files import open_atomically
from schemas.document import Document

STORE_DIR = "images"  # the store's folder inside a work area


class StoreError(RuntimeError):
    """The image store lost or altered a file a document refers to (never a property of one image)."""


@dataclasses.dataclass(frozen=True)
class ImageStore:
    """Content-addressed bytes under `root`; cheap to pickle (a path), so every DoFn can hold one."""

    root: str

    @classmethod
    def in_workdir(cls, workdir: str) -> ImageStore:
        return cls(FileSystems.join(workdir.rstrip("/"), STORE_DIR))

    def path(self, sha256: str) -> str:
        return FileSystems.join(self.root, sha256[:2], sha256)

    def verified(self, sha256: str) -> bool:
        """Whether the store holds these bytes whole (read back and hashed)."""
        try:
            self.get(sha256)
        except StoreError:
            return False
        return True

    def put(self, data: bytes) -> str:
        """Store `data` (once: an existing file with the same digest is kept); returns its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path(sha256)
        if not FileSystems.exists(path):  # another writer may be storing the same bytes right now: both succeed
            with open_atomically(path, durable=False) as handle:
                handle.write(data)
        return sha256

    def get(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                data = handle.read()
        except (OSError, ValueError) as error:  # Beam wraps a missing file in its own IOError/BeamIOError
            raise StoreError(f"image {sha256} is missing from the image store {self.root}: {error}") from error
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"image store file {path} does not match its sha256 (damaged work area)")
        return data

    def bytes_of(self, image) -> bytes | None:
        """An image's bytes: carried inline, else read from the store, else None (never downloaded)."""
        if image.data is not None:
            return image.data
        return self.get(image.stored) if image.stored else None

    def by_reference(self, doc: Document) -> Document:
        """The document with inline image bytes moved into the store (a copy; Beam inputs are never mutated)."""
        if not any(node.image is not None and node.image.data is not None for node in doc.nodes):
            return doc
        nodes = [dataclasses.replace(node, image=dataclasses.replace(node.image, data=None,
                                                                     stored=self.put(node.image.data)))
                 if node.image is not None and node.image.data is not None else node for node in doc.nodes]
        return dataclasses.replace(doc, nodes=nodes)

    def with_bytes(self, doc: Document) -> Document:
        """The document with every stored image's bytes inline again (for writers of self-contained files)."""
        if not any(node.image is not None and node.image.data is None and node.image.stored for node in doc.nodes):
            return doc
        nodes = [dataclasses.replace(node, image=dataclasses.replace(node.image, data=self.get(node.image.stored)))
                 if node.image is not None and node.image.data is None and node.image.stored else node
                 for node in doc.nodes]
        return dataclasses.replace(doc, nodes=nodes)

