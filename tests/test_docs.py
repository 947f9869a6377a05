"""The documentation builds offline with Sphinx, warnings as errors, and covers the API.

``sphinx-build -W --keep-going -b html docs <tmp>`` must succeed (built once per session by
tests/docs_build.py, which also executes the tutorials); the built site must have the user
guide, the executed tutorials, the figures of the guide (drawn at build time), readable
code, and an API entry for every public object (everything in the ``__all__`` of each module
the reference lists).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from docs_build import DOCS, ROOT, build_docs

GUIDE_PAGES = [
    "concepts",
    "units",
    "dds",
    "certificate",
    "evaluation",
    "performance",
    "models",
    "troubleshooting",
]
TUTORIAL_PAGES = ["quickstart", "certify", "evaluate", "dds_any_attribution", "custom_adapter"]


def _conf() -> dict:
    """The literal settings of docs/conf.py (``API_MODULES``, ``extensions``, ...), parsed
    without executing it."""
    tree = ast.parse((DOCS / "conf.py").read_text(encoding="utf-8"))
    settings = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
            try:
                settings[target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a literal (computed from the package)
    return settings


def _identity(obj, name: str):
    """How the API pages tell aliases apart (docs/_ext/apipages.py): classes, functions and
    modules by identity, plain values by name and identity."""
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        return id(obj)
    return (name, id(obj))


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory) -> Path:
    """The site of the session's one docs build (tests/docs_build.py; it runs the tutorials)."""
    return build_docs(tmp_path_factory).html


def test_docs_build_offline_without_intersphinx():
    conf = _conf()
    assert "sphinx.ext.intersphinx" not in conf["extensions"]
    assert not conf.get("intersphinx_mapping")
    assert len(conf["API_MODULES"]) >= 10


def test_key_pages_exist(built_docs):
    pages = ["index.html", "api/index.html", "api/generated/captum_fvit.html", "genindex.html"]
    pages += [f"guide/{p}.html" for p in GUIDE_PAGES]
    pages += ["tutorials/index.html"] + [f"tutorials/{p}.html" for p in TUTORIAL_PAGES]
    missing = [p for p in pages if not (built_docs / p).is_file()]
    assert not missing, f"pages missing from the built docs: {missing}"


def test_tutorial_pages_render_the_scripts(built_docs):
    html = (built_docs / "tutorials/quickstart.html").read_text(encoding="utf-8")
    assert "Quickstart: a DDS-smoothed attention map" in html  # the script's title
    assert "highlight-python" in html.lower()  # code cells became code blocks
    assert "DDSAttention" in html
    assert "sphx-glr-script-out" in html  # with what they printed
    downloads = {p.name for p in (built_docs / "_downloads").rglob("*.py")}
    assert {"01_quickstart.py", "05_custom_adapter.py"} <= downloads
    # the worked adapter example of the models page is pulled from tutorial 5
    models = (built_docs / "guide/models.html").read_text(encoding="utf-8")
    assert "TinyViTAdapter" in models and "register_forward_hook" in models


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize(
    "page, figures",
    [
        ("guide/concepts", ["concepts_attack"]),
        ("guide/certificate", ["certificate_region", "certified_radius_curve"]),
    ],
)
def test_guide_pages_show_figures_drawn_at_build_time(built_docs, page, figures):
    """The concepts and certificate pages show the figures drawn from the bundled models."""
    html = (built_docs / f"{page}.html").read_text(encoding="utf-8")
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    for name in figures:
        found = [src for src in images if src.endswith(f"/{name}.png")]
        assert found, f"{page} does not show {name}.png; images: {images}"
        width, height = _png_size((built_docs / page).parent / found[0])
        assert width >= 400 and height >= 200, (name, width, height)
    assert "<figcaption>" in html


def test_figures_come_from_code_not_files():
    """No image is committed under docs/: every figure is drawn by code at build time, and
    every ``fvit-figure`` the pages use is one the generator knows."""
    tracked = subprocess.run(
        ["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [f for f in tracked if f.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".svg"))]
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import guide_figures
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    used = set()
    for page in DOCS.rglob("*.rst"):
        used |= set(re.findall(r"^\.\. fvit-figure::\s*(\S+)", page.read_text(encoding="utf-8"), re.M))
    assert {"concepts_attack", "certificate_region", "certified_radius_curve"} <= used
    assert used <= set(guide_figures.FIGURES)


def test_long_code_lines_wrap(built_docs):
    """Long code lines wrap instead of being cut off at the page's right edge."""
    css = (built_docs / "_static/fvit.css").read_text(encoding="utf-8")
    rule = re.search(r"div\.highlight pre[^{]*\{([^}]*)\}", css)
    assert rule and "white-space: pre-wrap" in rule.group(1)
    for page in ("tutorials/quickstart.html", "guide/concepts.html", "guide/performance.html"):
        assert "_static/fvit.css" in (built_docs / page).read_text(encoding="utf-8"), page


def test_performance_page_records_measurements(built_docs):
    """Runtime table with the commands that measured it, GPU status, Captum's metrics."""
    html = (built_docs / "guide/performance.html").read_text(encoding="utf-8")
    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    for phrase in ("OMP_NUM_THREADS=1 python bench/attention_overhead.py",
                   "OMP_NUM_THREADS=1 python bench/dds.py",
                   "OMP_NUM_THREADS=1 python bench/certify_cost.py",
                   "OMP_NUM_THREADS=1 python docs/tools/captum_scores.py",
                   "infidelity", "sensitivity_max", "not measured", "GPU"):  # fmt: skip
        assert phrase in text, phrase
    for script in ("bench/attention_overhead.py", "bench/dds.py", "bench/certify_cost.py",
                   "docs/tools/captum_scores.py"):  # fmt: skip
        assert (ROOT / script).is_file(), script


def test_every_public_object_has_an_api_entry(built_docs):
    """Each name in each listed module's ``__all__`` is documented (an HTML anchor exists for
    it or for the object it is an alias of)."""
    anchors: set[str] = set()
    for page in (built_docs / "api").rglob("*.html"):
        anchors |= set(re.findall(r'id="(captum_fvit[\w.]*)"', page.read_text(encoding="utf-8")))
    modules = _conf()["API_MODULES"]
    documented_ids = {}
    missing = []
    checked = 0
    for module_name, _title, required in modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            assert not required, f"required API module {module_name} does not import"
            continue
        if getattr(module, "__file__", None) is None:
            continue  # an optional package still being written (no __init__.py)
        for name in getattr(module, "__all__", []):
            if name.startswith("__"):
                continue
            obj = getattr(module, name)
            path = f"{module_name}.{name}"
            checked += 1
            key = _identity(obj, name)
            if path in anchors:
                documented_ids.setdefault(key, path)
            elif key not in documented_ids:
                missing.append(path)
    assert checked > 50
    assert not missing, f"public objects without an API entry: {missing}"
    for key in ("captum_fvit.DDSAttention", "captum_fvit.FaithfulRegion", "captum_fvit.DDS",
                "captum_fvit.RegionCertificate", "captum_fvit.DDSAttention.attribute"):
        assert key in anchors, key


def test_guide_covers_the_required_topics(built_docs):
    """The user guide states the choices a reader must know about."""
    def text(page: str) -> str:
        html = (built_docs / f"guide/{page}.html").read_text(encoding="utf-8")
        return re.sub(r"<[^>]+>", "", html)

    dds = text("dds")
    for phrase in ("cumulative", "One shot", "Noise in pixel space", "No re-noising",
                   "maximum of two", "chunk-independent"):
        assert phrase in dds, phrase
    certificate = text("certificate")
    for phrase in ("Gaussian noise only", "Clopper–Pearson", "empirical Bernstein",
                   "Bonferroni", "open", "R_pred", "1 − α − α_pred", "Plug-in estimates"):
        assert phrase in certificate, phrase
    troubleshooting = text("troubleshooting")
    for phrase in ("fused_attn", "eager", "need_weights", "Out of memory", "class token",
                   "Dropout"):
        assert phrase in troubleshooting, phrase


def test_percent_script_conversion():
    """The tutorial renderer (docs/_ext/percent_tutorials.py) turns cells into reST as documented."""
    spec = importlib.util.spec_from_file_location("fvit_tutorials_ext", DOCS / "_ext/percent_tutorials.py")
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    script = "\n".join([
        "# %% [markdown]",
        "# # Title",
        "#",
        "# Text with `code` and a [link](https://example.org).",
        "# - item one",
        "#   continued",
        "# - item two",
        "",
        "# %%",
        "x = 1",
        "",
        "",
        "y = 2",
        "# %% [markdown]",
        "# ## Section",
    ])
    rst = "\n".join(ext.script_to_rst(script, "../../tutorials/demo.py"))
    assert "Title\n=====" in rst and "Section\n-------" in rst
    assert "``code``" in rst and "`link <https://example.org>`__" in rst
    assert "https://example.org>`__.\n\n- item one\n  continued\n- item two" in rst
    assert ".. code-block:: python\n\n   x = 1\n\n\n   y = 2" in rst
    assert ":download:`demo.py <../../tutorials/demo.py>`" in rst
    kinds = [kind for kind, _ in ext.split_cells(script)]
    assert kinds == ["markdown", "code", "markdown"]


def _ext(name: str):
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_gallery_conversion_parses_as_sphinx_gallery_blocks(tmp_path):
    """docs/_ext/gallery_tools.py turns a percent script into a script sphinx-gallery's own
    parser splits into the same cells: title docstring, text blocks, separate code blocks."""
    from sphinx_gallery.py_source_parser import split_code_and_text_blocks

    tools = _ext("gallery_tools")
    script = "\n".join([
        "# %% [markdown]",
        "# # Title",
        "#",
        "# Intro with `code`.",
        "",
        "# %%",
        "# a comment that opens the code",
        "x = 1",
        "# %%",
        "y = 2",
        "# %% [markdown]",
        "# ## Section",
        "#",
        "# - item",
        "",
        "# %%",
        "print(x + y)",
    ])  # fmt: skip
    path = tmp_path / "demo.py"
    path.write_text(tools.to_gallery_script(script, "../../tutorials/01_demo.py"))
    _, blocks = split_code_and_text_blocks(str(path))
    kinds = [b.type for b in blocks]
    assert kinds == ["text", "code", "code", "text", "code"], kinds
    assert blocks[0].content.strip().startswith("Title\n=====")
    assert "``code``" in blocks[0].content and ":download:`01_demo.py <../../tutorials/01_demo.py>`" in blocks[0].content
    assert blocks[1].content.strip() == "# a comment that opens the code\nx = 1"
    assert blocks[2].content.strip() == "y = 2"
    assert "Section\n-------" in blocks[3].content and "- item" in blocks[3].content
    assert tools.page_name("01_quickstart.py") == "quickstart"
    with pytest.raises(ValueError, match="NN_name"):
        tools.page_name("quickstart.py")
