"""Interchange with other neuromorphic tools: NIR export and import (PyPI `nir`)."""
