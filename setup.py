"""Beam's `--setup_file` ships the code to remote workers through this file; metadata is in setup.cfg."""

from setuptools import setup

setup()
