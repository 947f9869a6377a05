"""The ``fvit-figure`` directive: a figure of the user guide, drawn at build time.

Usage::

    .. fvit-figure:: concepts_attack

       Caption text (reStructuredText).

The name is one of :data:`guide_figures.FIGURES`; the figure is drawn from the bundled
models by ``docs/_ext/guide_figures.py`` (once per build process) into ``fvit_figures/``
beside the build's doctrees — never into the source tree — and shown like ``.. figure::``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from docutils.parsers.rst import Directive, directives
from sphinx.application import Sphinx

import guide_figures

_drawn: dict[str, Path] = {}


def figure_path(app: Sphinx, name: str) -> Path:
    """Draw figure ``name`` once per build process; its PNG path."""
    if name not in _drawn:
        folder = Path(app.doctreedir).parent / "fvit_figures"
        _drawn[name] = guide_figures.draw(name, folder / f"{name}.png")
    return _drawn[name]


class FvitFigure(Directive):
    required_arguments = 1
    has_content = True
    option_spec = {"alt": directives.unchanged, "width": directives.unchanged}

    def run(self) -> list:
        env = self.state.document.settings.env
        name = self.arguments[0]
        if name not in guide_figures.FIGURES:
            raise self.error(f"fvit-figure: unknown figure {name!r}; known: {sorted(guide_figures.FIGURES)}")
        path = figure_path(env.app, name)
        env.note_dependency(guide_figures.__file__)
        source_dir = Path(env.doc2path(env.docname)).parent
        rel = Path(os.path.relpath(path, source_dir)).as_posix()
        alt = self.options.get("alt") or name.replace("_", " ")
        lines = [f".. figure:: {rel}", f"   :alt: {alt}", "   :class: fvit-figure"]
        if "width" in self.options:
            lines.append(f"   :width: {self.options['width']}")
        lines.append("")
        lines += [f"   {line}" for line in self.content]
        self.state_machine.insert_input(lines, f"<fvit-figure {name}>")
        return []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("fvit-figure", FvitFigure)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
