"""Sphinx configuration: the API reference from gradclip's numpydoc docstrings.

Build with ``python -m sphinx -W docs docs/_build`` (the ``docs`` extra installs the pinned
tools); autodoc imports the installed gradclip.
"""

import gradclip

project = "gradclip"
author = "gradclip contributors"
copyright = "gradclip contributors"
release = version = gradclip.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx", "numpydoc"]
html_theme = "pydata_sphinx_theme"
html_title = f"gradclip {release}"
html_theme_options = {"navigation_with_keys": False}
exclude_patterns = ["_build"]

autodoc_typehints = "none"  # the numpydoc Parameters sections say it, in words
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# No network at build time: intersphinx has no inventories to fetch.
intersphinx_mapping = {}
suppress_warnings = ["config.cache"]
