"""Checking a command's input and output paths before anything runs, so an environment error is one line.

Beam's filesystems report a path problem late and long: an output under a regular file ends in an `OSError`
traceback once the first file is written, an unreachable `gs://` input in a `BeamIOError` after two minutes of
retries, a filesystem whose extra is not installed in "Unable to get filesystem from specified path". Here each
path is checked up front and a problem is an `UnusablePath` naming the path and the cause (the CLI exits 2).
Light at import: Beam loads only when a path is checked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

# What installs the filesystem of a scheme Beam knows (the error Beam raises names only `apache-beam[gcp]`).
EXTRAS = {
    "gs": "pip install 'm3w[gcp]' (in a checkout: pip install -e '.[gcp]')",
    "s3": "pip install 'apache-beam[aws]'",
    "azfs": "pip install 'apache-beam[azure]'",
    "hdfs": "pip install 'apache-beam[hadoop]'",
}
GLOB_CHARACTERS = "*?["


class UnusablePath(Exception):
    """An input that cannot be read or an output that cannot be written, named with its cause."""


def check_paths(inputs: Iterable[str], outputs: Iterable[str | None], beam_args: list[str] | None,
                timeout_s: float) -> None:
    """Raise `UnusablePath` for the first input that cannot be read or output that cannot be written.

    Every path needs a filesystem; a local input must be readable, a local output creatable and writable; a
    remote store (`gs://`, `s3://`...) must answer a listing within `timeout_s` (`runner.path_check_timeout_s`),
    with Beam's options from `beam_args` (project, credentials) as the pipeline will use them. Whether an input
    matches any file is left to the readers, which name what they looked for.
    """
    from apache_beam.io.filesystems import FileSystems

    paths = [("input", path) for path in inputs] + [("output", path) for path in outputs if path]
    remote = []
    for role, path in paths:
        _filesystem(role, path)
        if FileSystems.get_scheme(path) is not None:
            remote.append((role, path))
        elif role == "input":
            _check_local_input(path)
        else:
            _check_local_output(path)
    if remote:
        from apache_beam.options.pipeline_options import PipelineOptions

        FileSystems.set_options(PipelineOptions(list(beam_args or [])))  # what the pipeline sets as it starts
        for role, path in remote:
            _check_answers(role, path, timeout_s)


def innermost_cause(error: BaseException) -> str:
    """`Type: message` of the error at the bottom of a Beam filesystem error, on one line."""
    from apache_beam.io.filesystem import BeamIOError

    while isinstance(error, BeamIOError) and error.exception_details:
        inner = next(iter(error.exception_details.values()))
        if not isinstance(inner, BaseException):
            break
        error = inner
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _filesystem(role: str, path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    try:
        FileSystems.get_filesystem(path)
    except (ValueError, OSError) as error:  # Beam: ValueError for an unknown scheme, BeamIOError for an import
        scheme = FileSystems.get_scheme(path)
        if scheme in EXTRAS:
            cause = f"the filesystem for {scheme}:// is not installed: {EXTRAS[scheme]}"
        else:
            cause = f"no filesystem for {scheme}:// (Beam's: local paths, {', '.join(f'{s}://' for s in EXTRAS)})"
        raise UnusablePath(f"{role} {path}: {cause}") from error


def _check_local_input(path: str) -> None:
    if any(character in path for character in GLOB_CHARACTERS) or not os.path.exists(path):
        return
    needed = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
    if not os.access(path, needed):
        raise UnusablePath(f"input {path}: not readable (permission denied)")


def _check_local_output(path: str) -> None:
    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        cause = "is a file, not a folder" if existing == target else f"cannot be created: {existing} is a file"
        raise UnusablePath(f"output {path}: {cause}")
    if not os.access(existing, os.W_OK | os.X_OK):
        cause = "is not writable" if existing == target else f"cannot be created: {existing} is not writable"
        raise UnusablePath(f"output {path}: {cause}")


def _check_answers(role: str, path: str, timeout_s: float) -> None:
    """List `path` (one match at most) on a daemon thread and wait `timeout_s` for it: Beam's own calls retry
    an unreachable store for minutes."""
    from apache_beam.io.filesystems import FileSystems

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            FileSystems.match([path], limits=[1])
            outcome.append(None)
        except Exception as error:  # noqa: BLE001 - any failure is the answer, reported below
            outcome.append(error)

    thread = threading.Thread(target=probe, name=f"m3w path check {path}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise UnusablePath(f"{role} {path}: no answer within {timeout_s:g} s (no network, no credentials or a "
                           "slow store? runner.path_check_timeout_s sets the wait)")
    if outcome[0] is not None:
        raise UnusablePath(f"{role} {path}: cannot be reached: {innermost_cause(outcome[0])}")
