"""Sphinx configuration of the guidewidgets site: ``make docs`` builds it into docs/_build/html.

Sphinx + MyST-NB (the lessons are rendered from executed copies, see ``_ext/nbcache.py``) +
autodoc/autosummary/napoleon (the API reference, from the docstrings: Google-style ``Args:`` and
numpy-style ``Parameters`` both read) + the furo theme.

``gw_binder_repo``: the ``owner/name`` of the GitHub repository Binder opens the lessons from.
It is a placeholder until the project has a public home: set ``GUIDEWIDGETS_BINDER_REPO`` (or
edit the default here) and every "open on Binder" link follows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parents[1]))  # this checkout, as the notebooks and tests import it

import guidewidgets  # noqa: E402

project = "guidewidgets"
author = "the guidewidgets authors"
copyright = "the guidewidgets authors, MIT licence"
release = version = guidewidgets.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "gwdocs",
]
gw_binder_repo = os.environ.get("GUIDEWIDGETS_BINDER_REPO", "OWNER/guidewidgets")

exclude_patterns = ["_build", "_ext", "_generated", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
# docs/metrics.md and benchmarks/README.md (included as pages) step from ## to ####
suppress_warnings = ["myst.header"]

# ---- notebooks: rendered from the executed copies, never executed by MyST-NB itself --------------
nb_execution_mode = "off"
nb_output_stderr = "show"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# ---- API reference ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autoclass_content = "both"
autodoc_typehints = "description"  # long union types read better beside each argument
autodoc_typehints_description_target = "documented_params"
# Not preserve_defaults: it re-parses each function's source, and the CAM methods' public
# signatures are built by explain/cam_base.py (their source has fewer defaults than they show).
autodoc_preserve_defaults = False
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# ---- HTML ---------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"guidewidgets {release}"
html_static_path = ["_static"]
html_css_files = ["guidewidgets.css"]
html_show_sourcelink = False
html_theme_options = {
    "source_repository": f"https://github.com/{gw_binder_repo}/",
    "source_branch": "HEAD",
    "source_directory": "docs/site/",
}
