"""A stage command's output folder holds one run's output, never a mix of two runs'.

`m3w extract`, `filter`, `dedup`, `download`, `shard` and `export` write `_M3W_OUTPUT.json`, naming the
command, into their output folder before anything else. A later run of the same command recognises the folder
as its own and clears it first (a run killed half-way is recognised too: the marker came first). A non-empty
folder without that marker, or with another command's, is refused (`OutputInUse`, exit 2) unless the user
passes `--overwrite`. What a command keeps across runs on purpose (`m3w download`'s work folder: fetched
images and finished URL shards) is never cleared, and neither is an input that lies inside the folder:
such a run is refused.

Imports Beam only inside its functions: the command line catches `OutputInUse` and must start without Beam.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence

MARKER = "_M3W_OUTPUT.json"


class OutputInUse(Exception):
    """The output folder holds what this run may not clear; the message names it and the way out."""


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _normal(path: str) -> str:
    return os.path.abspath(path.removeprefix("file://")) if _is_local(path) else path.rstrip("/")


def _parts_below(path: str, root: str) -> tuple[str, ...] | None:
    """`path`'s components below `root` (both normalised); () for `root` itself, None outside it."""
    if path == root:
        return ()
    prefix = root if root.endswith("/") else root + "/"
    return tuple(path[len(prefix):].split("/")) if path.startswith(prefix) else None


def _literal_part(pattern: str) -> str:
    """The folder or file a glob pattern reads below: everything before its first wildcard's component."""
    cut = min((pattern.find(ch) for ch in "*?[" if ch in pattern), default=-1)
    return pattern if cut < 0 else pattern[:cut].rpartition("/")[0] or "."


def read_marker(output: str) -> dict | None:
    """The marker a stage command left in `output`, or None."""
    from apache_beam.io.filesystems import FileSystems

    path = FileSystems.join(output, MARKER)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def _refusal(output: str, command: str, marker: dict | None, content: list[str]) -> str:
    if marker is not None:
        held = f"holds `m3w {marker.get('command')}` output"
    else:
        held = f"is not empty and no m3w stage command wrote it ({len(content)} file(s), e.g. {content[0]})"
    return (f"output {output} {held}: choose an empty or new folder for `m3w {command}`, or add --overwrite to "
            "clear it first")


def _unit(parts: tuple[str, ...], kept: list[tuple[str, ...]]) -> tuple[str, ...]:
    """The largest folder (or the file) holding `parts` that holds nothing kept."""
    for depth in range(1, len(parts)):
        if not any(keep[:depth] == parts[:depth] for keep in kept):
            return parts[:depth]
    return parts


def _clear(output: str, root: str, content: dict[tuple[str, ...], str], kept: list[tuple[str, ...]]) -> None:
    from apache_beam.io.filesystems import FileSystems

    if not _is_local(output):  # object stores have no folders: every object goes
        FileSystems.delete(sorted(content.values()))
        return
    for unit in sorted({_unit(parts, kept) for parts in content}):
        path = os.path.join(root, *unit)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def claim_output(output: str, command: str, overwrite: bool = False, keep: Sequence[str] = (),
                 reads: Sequence[str] = ()) -> None:
    """Make `output` hold nothing but what `command` is about to write (and `keep`), then mark it as
    `command`'s. `keep`: paths inside `output` a re-run must not clear; `reads`: the paths or glob patterns
    the run reads (refused when clearing would remove them)."""
    from apache_beam.io.filesystems import FileSystems

    from pipeline.core.files import write_json
    from pipeline.core.fingerprint import m3w_version

    root = _normal(output)
    kept = [parts for parts in (_parts_below(_normal(path), root) for path in keep) if parts]
    content: dict[tuple[str, ...], str] = {}
    for metadata in FileSystems.match([FileSystems.join(output, "**")])[0].metadata_list:
        parts = _parts_below(_normal(metadata.path), root)
        if parts and parts != (MARKER,) and not any(parts[:len(k)] == k for k in kept):
            content[parts] = metadata.path
    if content:
        marker = read_marker(output)
        if not overwrite and (marker is None or marker.get("command") != command):
            raise OutputInUse(_refusal(output, command, marker, sorted("/".join(p) for p in content)))
        for read in reads:
            parts = _parts_below(_normal(_literal_part(read)), root)
            if parts is not None and not any(parts[:len(k)] == k for k in kept):
                raise OutputInUse(f"input {read} lies inside output {output}, which this run clears first: "
                                  "write the output to another folder")
        _clear(output, root, content, kept)
    FileSystems.mkdirs(output) if not FileSystems.exists(output) else None
    write_json(FileSystems.join(output, MARKER),
               {"command": command, "m3w_version": m3w_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
