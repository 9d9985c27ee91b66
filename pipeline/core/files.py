"""Writing a file so that readers see the old content or the new, never a gap or a torn write.

Local paths: write a temporary file beside the target, fsync it, `os.replace` it over the target, fsync the
directory, so a crash at any point leaves either file whole. Other Beam filesystems (GCS, S3): their
object stores replace an object whole on rename, so the temporary object is renamed over the target.
"""

from __future__ import annotations

import json
import os
from typing import Any

from apache_beam.io.filesystems import FileSystems


def _local_path(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def write_atomically(path: str, data: bytes) -> None:
    local = _local_path(path)
    if local is None:
        temp = path + ".inprogress"
        with FileSystems.create(temp) as handle:
            handle.write(data)
        FileSystems.rename([temp], [path])
        return
    directory = os.path.dirname(os.path.abspath(local))
    os.makedirs(directory, exist_ok=True)
    temp = f"{local}.inprogress-{os.getpid()}"
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
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


def write_json(path: str, payload: dict[str, Any]) -> None:
    write_atomically(path, json.dumps(payload, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8"))
