"""Reading the user's local copies of evaluation benchmarks: which files, and the pictures or passages in them.

Pictures: image files (a folder or a glob of them: COCO's `val2014/`, Flickr30k's `flickr30k-images/`),
webdataset `.tar` files (every member with an image suffix) and Parquet files with image bytes (the layout
Hugging Face `datasets` exports: a struct column `{bytes, path}`, or a plain binary column).
Passages: `.txt` (one per line), `.json` and `.jsonl` (the values of the configured keys, found at any depth:
VQA's `questions[].question`, COCO's `annotations[].caption`), Parquet (the configured columns). A value
may be a string or a list of them (several answers or captions).

Every picture and passage is named for the audit trail: the benchmark it belongs to (its file; for loose
pictures the pattern they were found by), the file, and the item inside it (a tar member, a Parquet row, a
JSON path, a line). Any Beam filesystem works (local, gs://, s3://); nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems

PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
CONTAINER_SUFFIXES = (".tar", ".parquet")
TEXT_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet")
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class BenchmarkItem:
    """Where one benchmark picture or passage comes from."""

    benchmark: str  # its file, or for a loose picture the configured pattern that found it
    file: str
    item: str  # inside the file: "" for a picture file of its own, else a member, row, JSON path or line


@dataclass(frozen=True)
class Part:
    """A unit of reading: a file, or one row group of a Parquet file (a large export is read in parallel)."""

    benchmark: str
    path: str
    row_group: int | None = None


def _as_folder(pattern: str) -> str | None:
    """`pattern/**` when the pattern names a folder (a trailing slash, or a local directory), else None."""
    if pattern.endswith("/"):
        return pattern + "**"
    if not _WILDCARDS & set(pattern) and "://" not in pattern and os.path.isdir(pattern):
        return pattern.rstrip("/") + "/**"
    return None


def benchmark_files(patterns: Sequence[str], suffixes: Sequence[str], key: str) -> list[tuple[str, str]]:
    """(benchmark pattern, file) for every file the patterns match with one of `suffixes`, sorted, each once.

    A folder stands for every file below it (other files in it, such as annotations, are passed over). A
    pattern that matches no such file is an error naming `key`: a typo must not decontaminate nothing.
    """
    found: dict[str, str] = {}
    for pattern in patterns:
        folder = _as_folder(pattern)
        matched = [m.path for m in FileSystems.match([folder or pattern])[0].metadata_list]
        usable = sorted(path for path in matched if path.lower().endswith(tuple(suffixes)))
        if not usable:
            raise FileNotFoundError(f"{key}: '{pattern}' matches no {'/'.join(suffixes)} file")
        for path in usable:
            found.setdefault(path, pattern)
    return [(pattern, path) for path, pattern in sorted(found.items())]


def picture_parts(patterns: Sequence[str]) -> list[Part]:
    """The reading units of the benchmark pictures: a container file's benchmark is the file itself."""
    import pyarrow.parquet as pq

    parts: list[Part] = []
    for pattern, path in benchmark_files(patterns, PICTURE_SUFFIXES + CONTAINER_SUFFIXES, "decontaminate.images"):
        if path.lower().endswith(".parquet"):
            with FileSystems.open(path) as handle:
                groups = pq.ParquetFile(handle).num_row_groups
            parts += [Part(path, path, group) for group in range(groups)]
        else:
            parts.append(Part(path if path.lower().endswith(".tar") else pattern, path))
    return parts


def text_parts(patterns: Sequence[str]) -> list[Part]:
    return [Part(path, path) for _, path in benchmark_files(patterns, TEXT_SUFFIXES, "decontaminate.texts")]


# ------------------------------------------------------------------------------------------------ pictures


def _image_bytes(value: Any) -> bytes | None:
    """Bytes of an image cell: binary, or Hugging Face's `{bytes, path}` struct."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, dict) and isinstance(value.get("bytes"), bytes | bytearray):
        return bytes(value["bytes"])
    return None


def _is_image_column(field: Any) -> bool:
    import pyarrow as pa

    kind = field.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return True
    return pa.types.is_struct(kind) and any(kind.field(i).name == "bytes" for i in range(kind.num_fields))


def _parquet_pictures(part: Part, columns: Sequence[str]) -> Iterator[tuple[BenchmarkItem, bytes]]:
    import pyarrow.parquet as pq

    with FileSystems.open(part.path) as handle:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow
        chosen = [name for name in (columns or schema.names)
                  if name in schema.names and _is_image_column(schema.field(name))]
        if not chosen:
            raise ValueError(f"decontaminate.images: {part.path} has no column of image bytes "
                             f"(columns: {', '.join(schema.names)}; decontaminate.pictures.image_columns: "
                             f"{list(columns) or 'any'})")
        first = sum(parquet.metadata.row_group(g).num_rows for g in range(part.row_group or 0))
        table = parquet.read_row_group(part.row_group or 0, columns=chosen)
    for column in chosen:
        for offset, cell in enumerate(table.column(column).to_pylist()):
            cells = cell if isinstance(cell, list) else [cell]
            for number, value in enumerate(cells):
                data = _image_bytes(value)
                if data is None:
                    continue
                name = f"row {first + offset} {column}" + (f"[{number}]" if isinstance(cell, list) else "")
                if isinstance(value, dict) and value.get("path"):
                    name += f" ({value['path']})"
                yield BenchmarkItem(part.benchmark, part.path, name), data


def read_pictures(part: Part, image_columns: Sequence[str] = ()) -> Iterator[tuple[BenchmarkItem, bytes]]:
    """Every benchmark picture of a part with its name, in the file's order (not yet decoded)."""
    lowered = part.path.lower()
    if lowered.endswith(".parquet"):
        yield from _parquet_pictures(part, image_columns)
        return
    with FileSystems.open(part.path) as handle:
        if not lowered.endswith(".tar"):
            yield BenchmarkItem(part.benchmark, part.path, ""), handle.read()
            return
        with tarfile.open(fileobj=handle, mode="r|*") as archive:  # streamed: a shard is read once, in order
            for member in archive:
                if member.isfile() and member.name.lower().endswith(PICTURE_SUFFIXES):
                    stream = archive.extractfile(member)
                    if stream is not None:
                        yield BenchmarkItem(part.benchmark, part.path, member.name), stream.read()


# ------------------------------------------------------------------------------------------------ passages


def _values(node: Any, fields: frozenset[str], path: str) -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every string under one of `fields`, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in fields:
                yield from _strings(value, where)
            else:
                yield from _values(value, fields, where)
    elif isinstance(node, list):
        for number, value in enumerate(node):
            yield from _values(value, fields, f"{path}[{number}]")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for number, member in enumerate(value):
            yield from _strings(member, f"{path}[{number}]")


def read_passages(part: Part, fields: Sequence[str]) -> Iterator[tuple[BenchmarkItem, str]]:
    """Every passage of a benchmark text file with its name; a JSON or Parquet file without any of `fields`
    is an error (the config names other keys than the file has)."""
    lowered, wanted = part.path.lower(), frozenset(fields)
    found = False
    if lowered.endswith(".parquet"):
        import pyarrow.parquet as pq

        with FileSystems.open(part.path) as handle:
            parquet = pq.ParquetFile(handle)
            columns = [name for name in parquet.schema_arrow.names if name in wanted]
            if columns:
                found = True
                table = parquet.read(columns=columns)
        for column in columns if found else []:
            for row, cell in enumerate(table.column(column).to_pylist()):
                for where, text in _strings(cell, f"row {row} {column}"):
                    yield BenchmarkItem(part.benchmark, part.path, where), text
    else:
        with FileSystems.open(part.path) as handle:
            content = io.TextIOWrapper(handle, encoding="utf-8", errors="replace").read()
        if lowered.endswith(".txt"):
            found = True
            for number, line in enumerate(content.splitlines(), start=1):
                if line.strip():
                    yield BenchmarkItem(part.benchmark, part.path, f"line {number}"), line
        elif lowered.endswith(".jsonl"):
            for number, line in enumerate(content.splitlines(), start=1):
                if line.strip():
                    for where, text in _values(json.loads(line), wanted, ""):
                        found = True
                        yield BenchmarkItem(part.benchmark, part.path, f"line {number} {where}"), text
        else:
            for where, text in _values(json.loads(content), wanted, ""):
                found = True
                yield BenchmarkItem(part.benchmark, part.path, where), text
    if not found:
        raise ValueError(f"decontaminate.texts: {part.path} has none of the fields {sorted(wanted)} "
                         "(decontaminate.text.fields)")
