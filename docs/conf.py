"""Sphinx configuration for dlutils."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, HERE)  # _doctest_setup, shared with docs/conftest.py

project = "dlutils"
author = "the dlutils developers"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "benchchart",
]
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build", "_generated"]

# Every example runs against local servers on 127.0.0.1 that _doctest_setup starts for
# each page (and in a new temporary folder), exactly as docs/conftest.py does under pytest.
doctest_global_setup = """
import _doctest_setup
globals().update(_doctest_setup.start())
"""
doctest_global_cleanup = """
_doctest_setup.stop()
"""
