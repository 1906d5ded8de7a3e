"""Sphinx configuration for dlutils."""

project = "dlutils"
author = "the dlutils developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.doctest"]
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
html_theme = "alabaster"
exclude_patterns = ["_build"]
