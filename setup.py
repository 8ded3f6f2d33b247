"""For tooling that still runs ``setup.py``; pyproject.toml is the single source of the package's metadata."""

from setuptools import setup

setup()
