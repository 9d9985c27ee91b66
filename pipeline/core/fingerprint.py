"""What a stage's output depends on, as one hash: the files it reads, the settings that shape it, m3w's version.

A resume (`m3w build`) trusts a finished stage only while this hash is unchanged, and the download cache
(`pipeline/images/download.py`) names its shards by the same settings, so both agree on one definition:
`RUNTIME_ONLY` lists the settings that change how a stage runs but never what it writes. Every other
setting is part of the hash.

The files are hashed by what `FileSystems.match` says about them (path, size, modification time; the
filesystem's checksum where it gives no time), never by their bytes: adding, removing, replacing or touching
a crawl file changes the hash, and a resume costs one listing, not a read of the crawl.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import importlib.metadata
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems

# How much runs at once, where from and when to try again, never what an item's answer is:
#   runner               the runner, its workers and the failure breaker (a tripped breaker fails the run,
#                        it never writes different output)
#   output.progress_interval_s  progress lines
#   download.thread_count, urls_per_shard, shard_retries  parallelism, batching and retries of a whole shard
#   download.retry_next_run  which failures a later run asks again: the answers it gets are the same answers
#   download.rewrite_to  a fetch-time mirror of the original URLs (the local image host, whose port changes
#                        from run to run); documents keep the original URL, so an image's result is the
#                        original URL's. A mirror that serves other pictures needs a fresh download work folder.
#   image_filters.nsfw.threads, batch_size  onnxruntime threads and batching
RUNTIME_ONLY: frozenset[tuple[str, ...]] = frozenset({
    ("runner",),
    ("output", "progress_interval_s"),
    ("download", "thread_count"),
    ("download", "urls_per_shard"),
    ("download", "shard_retries"),
    ("download", "retry_next_run"),
    ("download", "max_retry_pending_share"),
    ("download", "rewrite_to"),
    ("image_filters", "nsfw", "threads"),
    ("image_filters", "nsfw", "batch_size"),
})

# Files a stage reads because a setting names them: their state joins the hash like the crawl's.
FILES_NAMED_BY_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("read", "url_map"),
    ("filters", "language", "model"),
    ("image_filters", "nsfw", "model_path"),
    ("decontaminate", "images"),  # lists of globs and folders: every benchmark file below them
    ("decontaminate", "texts"),
    ("decontaminate", "embedding", "checkpoint"),
)


@dataclass(frozen=True)
class FileState:
    """One read file as its filesystem lists it: a change of any field means the file changed."""

    path: str
    size: int
    stamp: str  # "mtime:<seconds>", or "checksum:<value>" where the listing has no time


def output_relevant(settings: Mapping[str, Any], leave_out: Iterable[tuple[str, ...]] = RUNTIME_ONLY,
                    path: tuple[str, ...] = ()) -> dict[str, Any]:
    """`settings` (the config, or sections under their names) without the keys at the paths in `leave_out`."""
    leave_out = frozenset(leave_out)
    return {key: output_relevant(value, leave_out, path + (key,)) if isinstance(value, Mapping) else value
            for key, value in settings.items() if path + (key,) not in leave_out}


def section_values(section: Any) -> Any:
    """A typed config section (a dataclass, or a model with `model_dump`) as plain nested values."""
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return dataclasses.asdict(section)
    if hasattr(section, "model_dump"):
        return section.model_dump()
    return section


def settings_digest(settings: Mapping[str, Any]) -> str:
    """sha256 of `settings`, independent of key order."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _stamp(path: str, last_updated: float) -> str:
    if last_updated:
        return f"mtime:{last_updated!r}"
    try:
        return f"checksum:{FileSystems.checksum(path)}"
    except Exception as error:  # noqa: BLE001 - a filesystem without checksums: size and path still count
        return f"checksum:unavailable ({type(error).__name__})"


def read_files(patterns: Iterable[str]) -> list[FileState]:
    """Every file `patterns` match, once each, as the crawl reader matches them (`fileio.MatchAll` over the
    same patterns, duplicates removed); a pattern that matches nothing adds nothing."""
    patterns = list(patterns)
    found: dict[str, FileState] = {}
    for result in FileSystems.match(patterns) if patterns else []:
        for metadata in result.metadata_list:
            found[metadata.path] = FileState(metadata.path, metadata.size_in_bytes,
                                             _stamp(metadata.path, metadata.last_updated_in_seconds))
    return [found[path] for path in sorted(found)]


def _every_file(path: str) -> str:
    """A folder (a local directory, or a path ending in /) as the pattern of every file below it."""
    return path.rstrip("/") + "/**" if path.endswith("/") or Path(path).is_dir() else path


def files_named_by(config: Mapping[str, Any]) -> list[str]:
    """The paths (or patterns) the settings in `FILES_NAMED_BY_SETTINGS` name (those that are set)."""
    paths = []
    for keys in FILES_NAMED_BY_SETTINGS:
        value: Any = config
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        for path in value if isinstance(value, list) else [value] if value else []:
            paths.append(_every_file(str(path)))
    return paths


def m3w_version() -> str:
    """The installed distribution's version; for a source tree that is not installed, its setup.cfg's."""
    try:
        return importlib.metadata.version("m3w")
    except importlib.metadata.PackageNotFoundError:
        setup = configparser.ConfigParser()
        setup.read(Path(__file__).resolve().parents[2] / "setup.cfg")
        return setup.get("metadata", "version", fallback="unknown") + "+source"


def stage_fingerprint(stage: str, settings: Mapping[str, Any], files: Iterable[FileState],
                      version: str | None = None) -> str:
    """The hash a finished `stage` is recognised by: its output-relevant `settings` (already stripped of
    what does not shape the output), the state of the `files` it reads and m3w's `version` (default: this
    one's)."""
    return settings_digest({
        "stage": stage,
        "settings": dict(settings),
        "files": [[f.path, f.size, f.stamp] for f in files],
        "m3w": version if version is not None else m3w_version(),
    })
