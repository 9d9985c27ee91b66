"""Benchmarks, run from the repository root as `python -m benchmarks.<name>` (e.g. `python -m benchmarks.build`)
or by file path (`python benchmarks/build.py`).

A package, not a folder of scripts: a script's folder on `sys.path` lets a script named like a project package
(`filters.py`) shadow it, so a benchmark run by its path first puts the repository root there instead. Every
benchmark takes `--tiny` (the same code on a tiny input, seconds), which tests/test_benchmarks.py runs.
"""
