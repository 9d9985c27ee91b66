"""Writing a file so that readers see the old content or the new, never a gap or a torn write.

Local paths: write a temporary file beside the target, fsync it, `os.replace` it over the target, fsync the
directory, so a crash at any point leaves either file whole. Other Beam filesystems (GCS, S3): their
object stores replace an object whole on rename, so the temporary object is renamed over the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from apache_beam.io.filesystems import FileSystems


def _local_path(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


@contextlib.contextmanager
def open_atomically(path: str) -> Iterator[BinaryIO]:
    """A handle to write `path` through: the file appears whole, under its name, only when the block ends
    without an exception (streamed, so a large file never has to fit in memory)."""
    local = _local_path(path)
    if local is None:
        temp = path + ".inprogress"
        try:
            with FileSystems.create(temp) as handle:
                yield handle
        except BaseException:
            if FileSystems.exists(temp):
                FileSystems.delete([temp])
            raise
        FileSystems.rename([temp], [path])
        return
    directory = os.path.dirname(os.path.abspath(local))
    os.makedirs(directory, exist_ok=True)
    temp = f"{local}.inprogress-{os.getpid()}"
    try:
        with open(temp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, local)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomically(path: str, data: bytes) -> None:
    with open_atomically(path) as handle:
        handle.write(data)


class HashingWriter:
    """A write-only file object that passes bytes on and keeps their sha256 and count (for manifests)."""

    def __init__(self, target: BinaryIO):
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.target.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def write_json(path: str, payload: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8"))
