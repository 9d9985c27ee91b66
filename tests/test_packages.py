"""m3w's top-level packages must be m3w's: a same-named package or a stray module is named at start-up."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import packages


def test_this_environment_is_clean():
    packages.check_top_level_packages()


def test_a_module_in_the_working_directory_that_shadows_a_package_is_named(tmp_path):
    (tmp_path / "filters.py").write_text("VERDICT = 'not m3w'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "filter", "--input", "x", "--output", "y"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"`import filters` finds {tmp_path / 'filters.py'}" in run.stderr
    assert "virtual environment of its own" in run.stderr


class FakeDistribution:
    """An installed m3w whose RECORD lists two files under `tmp_path`."""

    def __init__(self, root: Path, recorded: dict[str, bytes]):
        self.root = root
        self.files = []
        for name, content in recorded.items():
            path = importlib.metadata.PackagePath(name)
            digest = packages._record_digest(self._write(root / f"recorded-{path.name}", content))
            path.hash = importlib.metadata.FileHash(digest)
            path.dist = self
            self.files.append(path)

    @staticmethod
    def _write(path: Path, content: bytes) -> Path:
        path.write_bytes(content)
        return path

    def locate_file(self, path) -> Path:
        return self.root / str(path)


def test_files_another_package_overwrote_or_deleted_are_named(tmp_path):
    (tmp_path / "filters").mkdir()
    (tmp_path / "pipeline").mkdir()
    distribution = FakeDistribution(tmp_path, {"filters/base.py": b"m3w's rules", "pipeline/__init__.py": b"m3w"})
    (tmp_path / "filters" / "base.py").write_bytes(b"m3w's rules")
    (tmp_path / "pipeline" / "__init__.py").write_bytes(b"m3w")
    assert packages.installed_files_changed(distribution) == []

    (tmp_path / "filters" / "base.py").write_bytes(b"class Filter: ...  # the `filters` distribution's")
    (tmp_path / "pipeline" / "__init__.py").unlink()
    assert packages.installed_files_changed(distribution) == ["filters/base.py (overwritten)",
                                                               "pipeline/__init__.py (deleted)"]


def test_the_command_line_stops_with_exit_2_on_a_collision(monkeypatch, capsys):
    from pipeline import cli

    monkeypatch.setattr(packages.importlib.metadata, "distribution", lambda name: "installed")
    monkeypatch.setattr(packages, "installed_files_changed", lambda dist: ["filters/base.py (overwritten)"])
    assert cli.main(["filter", "--input", "x", "--output", "y"]) == 2
    assert "another package changed m3w's installed files: filters/base.py (overwritten)" in capsys.readouterr().err


def test_without_an_installed_m3w_only_the_import_locations_are_checked(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(packages.importlib.metadata, "distribution", missing)
    packages.check_top_level_packages()
    with pytest.raises(packages.PackageCollision, match="`import pipeline` finds .*, not m3w.s /nowhere/pipeline"):
        packages.check_top_level_packages(root=Path("/nowhere"))
