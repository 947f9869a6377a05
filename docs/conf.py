"""Sphinx configuration of the captum-fvit documentation.

Build (offline, from the repository root)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated at build time from :data:`API_MODULES` (the one place that
lists what it covers). The tutorials (percent-format scripts in ``tutorials/``) are executed
by sphinx-gallery at build time (``docs/_ext/gallery_tools.py``), so their pages show the
printed output and the figures, under a gallery of thumbnails; the figures of the guide are
drawn from the bundled models at build time (``docs/_ext/fvit_figures.py``). Nothing is
fetched from the network: intersphinx is not loaded.

sphinx-gallery skips a tutorial whose script did not change since the last build; force a
fresh run with ``-D sphinx_gallery_conf.run_stale_examples=True`` (the test suite does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the working tree, installed or not
sys.path.insert(0, str(DOCS / "_ext"))

import captum_fvit  # noqa: E402
import gallery_tools  # noqa: E402

# -- project -------------------------------------------------------------------------------
project = "captum-fvit"
author = "the captum-fvit developers"
copyright = "the captum-fvit developers"  # noqa: A001
release = captum_fvit.__version__
version = ".".join(release.split(".")[:2])

# -- the API reference: every module listed here gets a page ------------------------------
#: ``(module, title, required)``. Objects are documented once, on the page of the first
#: module (in this order) whose ``__all__`` exports them; later pages link to that entry.
#: Optional modules that do not exist yet (or are still an ``__init__``-less folder) are
#: skipped silently; a required module that fails to import fails the build.
API_MODULES = [
    ("captum_fvit", "captum_fvit: the public API", True),
    ("captum_fvit.attr", "captum_fvit.attr: Captum attributions", True),
    ("captum_fvit.attention", "captum_fvit.attention: recording attention", True),
    ("captum_fvit.explain", "captum_fvit.explain: explanation methods", True),
    ("captum_fvit.denoise", "captum_fvit.denoise: denoisers", True),
    ("captum_fvit.certify", "captum_fvit.certify: certificate maths", True),
    ("captum_fvit.smoothing", "captum_fvit.smoothing: the ensemble engine", True),
    ("captum_fvit.noise", "captum_fvit.noise: seeded noise", True),
    ("captum_fvit.stats", "captum_fvit.stats: streaming statistics", True),
    ("captum_fvit.space", "captum_fvit.space: pixels and normalisation", True),
    ("captum_fvit.errors", "captum_fvit.errors: non-finite guard and errors", True),
    ("captum_fvit.validation", "captum_fvit.validation: argument checks", True),
    ("captum_fvit.concurrency", "captum_fvit.concurrency: thread safety", True),
    ("captum_fvit.model_io", "captum_fvit.model_io: inputs, targets and logits", True),
    ("captum_fvit.attr.selection", "captum_fvit.attr.selection: class selection", True),
    ("captum_fvit.certify_sequential", "captum_fvit.certify_sequential: anytime-valid bounds", True),
    ("captum_fvit.attr.certificate", "captum_fvit.attr.certificate: certificate records", True),
    ("captum_fvit.attr.region_sequential", "captum_fvit.attr.region_sequential: sequential certification", True),
    ("captum_fvit.weight_files", "captum_fvit.weight_files: checking weight files", True),
    ("captum_fvit.data", "captum_fvit.data: the shapes benchmark", True),
    ("captum_fvit.evaluate", "captum_fvit.evaluate: attacks and metrics", False),
    ("captum_fvit.models", "captum_fvit.models: bundled models", False),
    ("captum_fvit.training", "captum_fvit.training: training the bundled default", False),
    ("captum_fvit.sample_size", "captum_fvit.sample_size: samples for a target stability", True),
    ("captum_fvit.differentiable", "captum_fvit.differentiable: DDS with gradients", True),
]

# -- extensions ----------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "apipages",  # docs/_ext/apipages.py: API pages from API_MODULES, alias resolution
    "percent_tutorials",  # docs/_ext/percent_tutorials.py: the ``percent-script`` directive
    "sphinx_gallery.gen_gallery",  # executes the tutorials: output, figures, thumbnails
    "fvit_figures",  # docs/_ext/fvit_figures.py: the ``fvit-figure`` directive
]
intersphinx_mapping: dict = {}  # offline: never fetch inventories

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = True

napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_ivar = True  # "Attributes" as field lists: no duplicate object entries
napoleon_use_rtype = False
napoleon_preprocess_types = False

# -- sources and output --------------------------------------------------------------------
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
pygments_style = "sphinx"
default_role = "code"  # single backticks render as code instead of warning

html_theme = "alabaster"  # ships with Sphinx
html_title = f"captum-fvit {release}"
html_static_path = ["_static"]
html_css_files = ["fvit.css"]  # long code lines wrap instead of being cut off
html_theme_options = {
    "description": "Faithful Vision Transformer explanations for Captum",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_show_sourcelink = False

# -- the tutorials: executed by sphinx-gallery ---------------------------------------------
#: The tutorials write their figures and results here (read by the image scraper and, in
#: the test suite, by tests/test_tutorials.py).
os.environ.setdefault(gallery_tools.OUT_ENV, str(DOCS / "_build" / "tutorial_outputs"))
os.environ.setdefault("MPLBACKEND", "Agg")
gallery_tools.write_gallery_sources(
    ROOT / "tutorials",
    DOCS / "_build" / "gallery_src",
    DOCS / "_ext" / "tutorials_header.rst",
    download_prefix="../../tutorials",  # from docs/tutorials/<page>.rst
)
gallery_tools.snapshot_outputs()

sphinx_gallery_conf = {
    "examples_dirs": "_build/gallery_src",  # generated from tutorials/*.py above
    "gallery_dirs": "tutorials",  # generated pages: docs/tutorials/<name>.rst (git-ignored)
    "filename_pattern": r".*\.py$",  # execute every tutorial
    "within_subsection_order": "gallery_tools.TutorialOrder",
    "image_scrapers": ("gallery_tools.scrape_outputs",),
    "abort_on_example_error": True,  # a failing tutorial fails the build
    "write_computation_times": False,  # no sg_execution_times page
    "download_all_examples": False,
    "show_signature": False,
    "capture_repr": (),  # printed output only
    "remove_config_comments": True,
    "run_stale_examples": False,
}

