"""Writing a file so that readers see the old content or the new, never a gap or a torn write.

Local paths: write a temporary file beside the target, fsync it, `os.replace` it over the target, fsync the
directory, so a crash at any point leaves either file whole. Other Beam filesystems (GCS, S3): their
object stores replace an object whole on rename, so the temporary object is renamed over the target.

Writers of one target may run at the same time (threads of a DoFn, processes, workers): identical pictures
under different URLs land on one content-addressed name. Each writer therefore has a temporary name of its
own (`temporary_path`: process, thread and a fresh uuid per attempt) and ends with a rename of a whole file;
the last rename wins. Where a filesystem refuses to rename over an existing file (HDFS), a writer whose target
already holds exactly its bytes has nothing left to do and succeeds.

Only writes to other filesystems import Apache Beam: the smoke trainer writes its local outputs here without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

_COMPARE_CHUNK = 1 << 20


def _local_path(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def temporary_path(path: str) -> str:
    """A name beside `path` that no other writer uses: the process and thread id say who left it after a crash,
    the uuid4 keeps two attempts of one thread apart."""
    return f"{path}.inprogress-{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex}"


@contextlib.contextmanager
def open_atomically(path: str, durable: bool = True) -> Iterator[BinaryIO]:
    """A handle to write `path` through: the file appears whole, under its name, only when the block ends
    without an exception (streamed, so a large file never has to fit in memory). `durable=False` skips the
    fsyncs where a caller checks its files after a crash instead (the image store)."""
    local = _local_path(path)
    if local is None:
        with _open_renamed_object(path) as handle:
            yield handle
        return
    directory = os.path.dirname(os.path.abspath(local))
    os.makedirs(directory, exist_ok=True)
    temp = temporary_path(local)
    try:
        with open(temp, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, local)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if durable:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _open_renamed_object(path: str) -> Iterator[BinaryIO]:
    """`open_atomically` on another Beam filesystem: a temporary object of this writer's own, renamed over `path`."""
    from apache_beam.io.filesystems import FileSystems

    temp = temporary_path(path)
    try:
        with FileSystems.create(temp) as handle:
            yield handle
        try:
            FileSystems.rename([temp], [path])
        except Exception:  # a filesystem that will not replace `path`: fine if it already holds these bytes
            if not _same_bytes(temp, path):
                raise
            FileSystems.delete([temp])
    except BaseException:
        with contextlib.suppress(Exception):
            if FileSystems.exists(temp):
                FileSystems.delete([temp])
        raise


def _same_bytes(first: str, second: str) -> bool:
    """Whether two files of a Beam filesystem hold the same bytes (False when either cannot be read)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with (FileSystems.open(first, compression_type="uncompressed") as a,
              FileSystems.open(second, compression_type="uncompressed") as b):
            while True:
                chunk = a.read(_COMPARE_CHUNK)
                if chunk != b.read(_COMPARE_CHUNK):
                    return False
                if not chunk:
                    return True
    except (OSError, ValueError):  # Beam wraps a missing file in its own IOError/BeamIOError
        return False


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
