"""The documentation builds offline with Sphinx, warnings as errors, and covers the API.

``sphinx-build -W --keep-going -b html docs <tmp>`` must succeed; the built site must have
the user guide, the tutorials and an API entry for every public object (everything in the
``__all__`` of each module the reference lists).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TIMEOUT_S = 600

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


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory) -> Path:
    try:
        import sphinx  # noqa: F401
    except ImportError:  # pragma: no cover - a missing dependency must fail, not skip
        pytest.fail("sphinx is not installed: install the test extra (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         str(DOCS), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (
        f"sphinx-build failed (exit {result.returncode}) after {seconds:.0f} s:\n"
        f"{result.stderr[-10000:]}\n{result.stdout[-3000:]}"
    )
    print(f"docs built in {seconds:.1f} s")
    return out


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
    assert "highlight-python" in html  # code cells became code blocks
    assert "DDSAttention" in html
    downloads = {p.name for p in (built_docs / "_downloads").rglob("*.py")}
    assert {"01_quickstart.py", "05_custom_adapter.py"} <= downloads
    # the worked adapter example of the models page is pulled from tutorial 5
    models = (built_docs / "guide/models.html").read_text(encoding="utf-8")
    assert "TinyViTAdapter" in models and "register_forward_hook" in models


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
