"""The ``percent-script`` directive: render a percent-format tutorial script as a page.

A tutorial is a plain Python script split into cells by ``# %%`` lines (the "percent"
format of Jupytext, VS Code and Spyder). ``# %% [markdown]`` cells hold commented Markdown,
every other cell is code. The directive turns the script into reStructuredText at parse
time (no generated files):

* Markdown cells → text, with the small Markdown subset the tutorials use: ``#``/``##``/
  ``###`` headings, paragraphs, ``-``/``*``/``1.`` lists, inline code, ``**bold**``,
  ``*emphasis*``, ``[links](url)`` and fenced code blocks;
* code cells → ``code-block:: python``;
* a download link to the script itself is added after the first heading.

Usage::

    .. percent-script:: ../../tutorials/01_quickstart.py
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils.parsers.rst import Directive, directives
from sphinx.application import Sphinx

CELL = re.compile(r"^# %%(?P<rest>.*)$")
HEADING = re.compile(r"^(?P<hashes>#{1,3})\s+(?P<text>.+?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^(\s*)([-*]|\d+\.)\s+")
UNDERLINES = {1: "=", 2: "-", 3: "~"}


def split_cells(source: str) -> list[tuple[str, list[str]]]:
    """``[(kind, lines)]`` with kind ``"markdown"`` or ``"code"``, in order."""
    cells: list[tuple[str, list[str]]] = []
    kind, lines = "code", []
    for line in source.splitlines():
        match = CELL.match(line)
        if match:
            cells.append((kind, lines))
            kind = "markdown" if "[markdown]" in match.group("rest") else "code"
            lines = []
        else:
            lines.append(line)
    cells.append((kind, lines))
    return [(k, _trim(ls)) for k, ls in cells if any(line.strip() for line in ls)]


def _trim(lines: list[str]) -> list[str]:
    start, stop = 0, len(lines)
    while start < stop and not lines[start].strip():
        start += 1
    while stop > start and not lines[stop - 1].strip():
        stop -= 1
    return lines[start:stop]


def _uncomment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    if line.startswith("#"):
        return line[1:]
    return line


def inline(text: str) -> str:
    """Markdown inline markup → reStructuredText."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"``{part[1:-1]}``")
        else:
            part = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"`\1 <\2>`__", part)
            out.append(part)
    return "".join(out)


def markdown_to_rst(lines: list[str]) -> list[str]:
    out: list[str] = []
    text = [_uncomment(line) for line in lines]
    i = 0
    in_list = False
    while i < len(text):
        line = text[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            language = stripped[3:].strip() or "text"
            block = []
            i += 1
            while i < len(text) and not text[i].strip().startswith("```"):
                block.append(text[i])
                i += 1
            out += ["", f".. code-block:: {language}", ""] + [f"   {b}" for b in block] + [""]
            i += 1
            in_list = False
            continue
        heading = HEADING.match(line)
        if heading:
            title = inline(heading.group("text"))
            char = UNDERLINES[len(heading.group("hashes"))]
            out += ["", title, char * len(title), ""]
            i += 1
            in_list = False
            continue
        if not stripped:
            out.append("")
            in_list = False
        elif LIST_ITEM.match(line):
            if not in_list and out and out[-1].strip():
                out.append("")  # reST needs a blank line before a list
            out.append(inline(line))
            in_list = True
        else:
            if in_list and not line.startswith(" "):
                out.append("")  # text after a list without a blank line
                in_list = False
            out.append(inline(line))
        i += 1
    return out


def script_to_rst(source: str, download: str | None) -> list[str]:
    out: list[str] = []
    linked = download is None
    for kind, lines in split_cells(source):
        if kind == "markdown":
            out += markdown_to_rst(lines)
            if not linked and any(HEADING.match(_uncomment(line)) for line in lines):
                name = download.rsplit("/", 1)[-1]
                out += ["", f"*Download this tutorial as a script:* :download:`{name} <{download}>`", ""]
                linked = True
        else:
            out += ["", ".. code-block:: python", ""]
            out += [f"   {line}" if line.strip() else "" for line in lines]
            out.append("")
    return out


class PercentScript(Directive):
    """``.. percent-script:: path/to/script.py`` (relative to the current document)."""

    required_arguments = 1
    has_content = False
    option_spec = {"no-download": directives.flag}

    def run(self) -> list:
        env = self.state.document.settings.env
        rel, path = env.relfn2path(self.arguments[0], env.docname)
        script = Path(path)
        if not script.is_file():
            raise self.error(f"percent-script: no such file {script}")
        env.note_dependency(str(script))
        download = None if "no-download" in self.options else self.arguments[0]
        lines = script_to_rst(script.read_text(encoding="utf-8"), download)
        self.state_machine.insert_input(lines, str(script))
        return []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("percent-script", PercentScript)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
