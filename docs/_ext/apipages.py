"""Generate the API reference pages from ``API_MODULES`` in ``conf.py``.

For every importable module of the list this writes ``api/generated/<module>.rst``: the
module docstring, a summary table and the full autodoc entry of every object in the
module's ``__all__``. An object exported by several modules (``captum_fvit.DDSAttention``
is also ``captum_fvit.attr.DDSAttention``) is documented once, on the first page, and the
later pages link to it; cross-references written with any of its public paths resolve to
that entry (``missing-reference`` handler below).

Pages are rewritten only when their text changes, and pages of modules that disappeared
are removed, so incremental builds stay incremental.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)

GENERATED = Path("api") / "generated"

#: canonical name of every documented object, keyed by ``_key(obj, name)``
_CANONICAL: dict[Any, str] = {}
#: every public path (``module.name``) → canonical documented path
_ALIASES: dict[str, str] = {}
_MISSING = object()


def _key(obj: Any, name: str) -> Any:
    """Identity of an exported object: classes, functions and modules by identity; plain
    values (ints, tuples, dicts) by name too, since equal small values share an id."""
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        return id(obj)
    return (name, id(obj))


def _import(module_name: str, required: bool) -> ModuleType | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if not required and err.name is not None and module_name.startswith(err.name):
            logger.info("[apipages] %s is not present yet: no API page", module_name)
            return None
        raise
    if not required and getattr(module, "__file__", None) is None:
        # A folder without __init__.py (a namespace package): still being written.
        logger.info("[apipages] %s has no __init__.py yet: no API page", module_name)
        return None
    return module


def _data_doc(obj: Any, name: str) -> list[str]:
    """The ``#:`` comment documenting a module-level value, from the module that defines it."""
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("captum_fvit") or getattr(module, name, _MISSING) is not obj:
            continue
        try:
            analyzer = ModuleAnalyzer.for_module(modname)
            docs = analyzer.find_attr_docs()
        except Exception:  # noqa: BLE001 - compiled or odd modules: look elsewhere
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line is not None]
    return []


def _first_paragraph(obj: Any, name: str) -> str:
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        lines = (inspect.getdoc(obj) or "").splitlines()
    else:
        lines = _data_doc(obj, name)
    paragraph: list[str] = []
    for line in lines:
        if not line.strip():
            if paragraph:
                break
            continue
        paragraph.append(line.strip())
    text = " ".join(paragraph)
    return text[:-1] if text.endswith("::") else text


def _entry(module_name: str, name: str, obj: Any) -> list[str]:
    """The autodoc (or ``py:data``) entry of one object."""
    if inspect.isclass(obj):
        return [f".. autoclass:: {module_name}.{name}", ""]
    if inspect.isroutine(obj):
        return [f".. autofunction:: {module_name}.{name}", ""]
    if inspect.ismodule(obj):
        return [f".. automodule:: {obj.__name__}", "   :no-members:", ""]
    lines = [f".. py:data:: {name}"]
    value = repr(obj)
    if isinstance(obj, (int, float, str, bool, tuple, frozenset)) and len(value) < 90:
        lines.append(f"   :value: {value}")
    else:
        lines.append(f"   :type: {type(obj).__name__}")
    lines.append("")
    lines += [f"   {line}" if line.strip() else "" for line in _data_doc(obj, name)]
    lines.append("")
    return lines


def _title(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def _page(module_name: str, title: str, module: ModuleType) -> str:
    names = list(getattr(module, "__all__", []) or [])
    lines = _title(title, "=")
    lines += [f".. automodule:: {module_name}", "   :no-members:", ""]
    if not names:
        # No __all__: document what the module defines (public names only).
        lines += [f".. automodule:: {module_name}", "   :members:", "   :no-index:", ""]
        return "\n".join(lines) + "\n"

    own: list[tuple[str, Any]] = []
    elsewhere: list[tuple[str, str]] = []
    for name in sorted(names, key=str.lower):
        if name.startswith("__"):
            continue  # __version__ and friends
        if not hasattr(module, name):
            logger.warning("[apipages] %s.__all__ names %r, which does not exist", module_name, name)
            continue
        obj = getattr(module, name)
        key = _key(obj, name)
        path = f"{module_name}.{name}"
        if key in _CANONICAL:
            _ALIASES[path] = _CANONICAL[key]
            elsewhere.append((name, _CANONICAL[key]))
        else:
            _CANONICAL[key] = path
            _ALIASES[path] = path
            own.append((name, obj))

    if own:
        lines += [".. list-table::", "   :widths: 30 70", ""]
        for name, obj in own:
            lines.append(f"   * - :py:obj:`{name} <{module_name}.{name}>`")
            lines.append(f"     - {_first_paragraph(obj, name) or ' '}")
        lines.append("")
    if elsewhere:
        lines += [".. rubric:: Also exported here", ""]
        lines += [f"* :py:obj:`{name} <{target}>` (documented as ``{target}``)"
                  for name, target in elsewhere]
        lines.append("")
    if own:
        lines += _title("Reference", "-")
        for name, obj in own:
            lines += _entry(module_name, name, obj)
    return "\n".join(lines) + "\n"


def generate(app: Sphinx) -> None:
    """``builder-inited``: write the pages of the importable modules, drop stale ones."""
    _CANONICAL.clear()
    _ALIASES.clear()
    out = Path(app.srcdir) / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    for entry in app.config.API_MODULES:
        module_name, title, required = entry
        module = _import(module_name, required)
        if module is None:
            continue
        text = _page(module_name, title, module)
        path = out / f"{module_name}.rst"
        wanted.add(path.name)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()


def _resolve_object(target: str) -> Any:
    """Import ``a.b.C`` (a module path followed by attribute names), or return None."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _canonical_for(target: str) -> str | None:
    if target in _ALIASES:
        return _ALIASES[target]
    if target.startswith("captum_fvit."):
        obj = _resolve_object(target)
        if obj is not None:
            return _CANONICAL.get(_key(obj, target.rsplit(".", 1)[-1]))
        # a method or attribute of an aliased class: Class path + member
        owner, _, member = target.rpartition(".")
        base = _canonical_for(owner) if owner.startswith("captum_fvit.") else None
        return f"{base}.{member}" if base else None
    if "." not in target:
        # a bare name: resolve when exactly one documented object has it
        matches = {c for c in _CANONICAL.values() if c.rsplit(".", 1)[-1] == target}
        if len(matches) == 1:
            return matches.pop()
    return None


def resolve_alias(app: Sphinx, env, node, contnode):
    """``missing-reference``: resolve any public path of a documented object."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    canonical = _canonical_for(target)
    if canonical is None or canonical == target:
        return None
    domain = env.get_domain("py")
    node = node.deepcopy()
    node["reftarget"] = canonical
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("API_MODULES", [], "env")
    app.connect("builder-inited", generate)
    app.connect("missing-reference", resolve_alias)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
