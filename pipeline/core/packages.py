"""m3w's top-level package names (`pipeline`, `filters`, `schemas`, `train_smoke`) resolve to m3w.

The design fixes those four folders at the top of the tree, and PyPI has other distributions with the
same names (django-pipeline, filters, schemas: docs/architecture.md has the evidence). Installed into one
environment, pip overwrites m3w's files without a warning, and a `filters.py` in the working directory
shadows the package. Either way m3w would fail later with a confusing error, or run someone else's code;
`m3w` checks at start-up instead and names what is in the way. The check reads only m3w's own RECORD
and hashes its files (milliseconds), not every installed distribution's metadata.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

TOP_LEVEL = ("pipeline", "filters", "schemas", "train_smoke")
ROOT = Path(__file__).resolve().parents[2]
ADVICE = "install m3w in a virtual environment of its own (`make demo` and `make test` do)"


class PackageCollision(RuntimeError):
    """One of m3w's top-level packages is not m3w's own."""


def _record_digest(path: Path) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def installed_files_changed(distribution: importlib.metadata.Distribution | None) -> list[str]:
    """m3w's installed package files that are gone or differ from the hash in its RECORD."""
    if distribution is None:
        return []
    changed = []
    for file in distribution.files or []:
        if file.parts[0] not in TOP_LEVEL or not file.hash or file.hash.mode != "sha256":
            continue
        path = Path(file.locate())
        if not path.exists():
            changed.append(f"{file} (deleted)")
        elif _record_digest(path) != f"sha256={file.hash.value}":
            changed.append(f"{file} (overwritten)")
    return changed


def check_top_level_packages(root: Path = ROOT) -> None:
    """Raise PackageCollision naming the file or files in the way; return quietly when all is m3w's."""
    for name in TOP_LEVEL:
        spec = importlib.util.find_spec(name)
        locations = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
        if spec is None or (root / name).resolve() not in locations:
            found = spec.origin if spec is not None else "nothing"
            raise PackageCollision(f"`import {name}` finds {found}, not m3w's {root / name}: {ADVICE}")
    try:
        distribution = importlib.metadata.distribution("m3w")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout: the folders above are m3w's
        distribution = None
    changed = installed_files_changed(distribution)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise PackageCollision(f"another package changed m3w's installed files: {shown}: {ADVICE}")
