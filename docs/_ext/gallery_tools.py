"""The tutorials as a sphinx-gallery: percent scripts → gallery scripts, order, figures.

The tutorials live in ``tutorials/`` as percent-format scripts (``# %%`` cells, Markdown in
``# %% [markdown]`` cells) that VS Code, Spyder and Jupytext open as notebooks. At build time
:func:`write_gallery_sources` turns each into a sphinx-gallery script (the first Markdown
cell becomes the module docstring, later Markdown cells become reStructuredText comment
blocks, code cells stay as they are) in a folder under ``docs/_build``; sphinx-gallery then
executes every script once, and each page shows the code, its printed output and its figures.

The tutorials write their figures as PNG files into ``$CAPTUM_FVIT_TUTORIAL_OUT`` rather
than leaving pyplot figures open (so they run the same outside the docs).
:func:`scrape_outputs` is the image scraper: after each code block it picks up the PNG files
written (or rewritten) since the last look and shows them below the block.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from percent_tutorials import markdown_to_rst, split_cells

#: Environment variable naming the folder the tutorials write into.
OUT_ENV = "CAPTUM_FVIT_TUTORIAL_OUT"

#: Gallery order: the numeric prefix of the script's name (``01_quickstart.py`` → first).
NUMBERED = re.compile(r"^(?P<number>\d+)_(?P<name>.+)\.py$")


def page_name(script: str) -> str:
    """``"01_quickstart.py"`` → ``"quickstart"`` (the page is ``tutorials/quickstart.html``)."""
    match = NUMBERED.match(script)
    if not match:
        raise ValueError(f"tutorial scripts are named NN_name.py, got {script!r}")
    return match.group("name")


def _docstring(rst: list[str]) -> str:
    text = "\n".join(rst).strip("\n")
    if '"""' in text:
        raise ValueError('a tutorial\'s first Markdown cell may not contain """')
    return 'r"""\n' + text + '\n"""\n'


def to_gallery_script(source: str, download: str) -> str:
    """One percent-format script as a sphinx-gallery script.

    Parameters
    ----------
    source : str
        The percent script.
    download : str
        Path of the original script, relative to the generated page (for a download link).
    """
    cells = split_cells(source)
    if not cells or cells[0][0] != "markdown":
        raise ValueError("a tutorial starts with a Markdown cell holding its title")
    first = markdown_to_rst(cells[0][1])
    if not any(line and set(line) == {"="} for line in first):
        raise ValueError("the first Markdown cell of a tutorial must open with '# # Title'")
    name = download.rsplit("/", 1)[-1]
    # at the end, so that the thumbnail's tooltip is the tutorial's first paragraph
    first = _strip(first) + [
        "", f"*This tutorial as a percent-format script:* :download:`{name} <{download}>`"
    ]
    out = [_docstring(first)]
    previous = "markdown"
    for kind, lines in cells[1:]:
        if kind == "markdown":
            rst = markdown_to_rst(lines)
            out.append("# %%")
            out += ["#" if not line.strip() else f"# {line}" for line in _strip(rst)]
            out.append("")  # a blank line ends the text block
        else:
            if previous == "code":
                out += ["# %%", ""]  # split consecutive code cells into separate blocks
            out += lines
            out.append("")
        previous = kind
    return "\n".join(out) + "\n"


def _strip(lines: list[str]) -> list[str]:
    start, stop = 0, len(lines)
    while start < stop and not lines[start].strip():
        start += 1
    while stop > start and not lines[stop - 1].strip():
        stop -= 1
    return lines[start:stop]


def write_gallery_sources(tutorials: Path, dest: Path, header: Path, download_prefix: str) -> list[Path]:
    """Write the gallery scripts of ``tutorials/*.py`` and the gallery header into ``dest``.

    Files are rewritten only when their content changes (so sphinx-gallery's checksums see
    an unchanged tutorial as unchanged); scripts no longer in ``tutorials/`` are removed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    scripts = sorted(p for p in tutorials.glob("*.py") if NUMBERED.match(p.name))
    _ORDER[:] = [f"{page_name(script.name)}.py" for script in scripts]
    for script in scripts:
        text = to_gallery_script(script.read_text(encoding="utf-8"), f"{download_prefix}/{script.name}")
        target = dest / f"{page_name(script.name)}.py"
        _write_if_changed(target, text)
        written.append(target)
    _write_if_changed(dest / "GALLERY_HEADER.rst", header.read_text(encoding="utf-8"))
    keep = {p.name for p in written} | {"GALLERY_HEADER.rst"}
    for stale in dest.iterdir():
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    return written


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


#: Gallery file names in the tutorials' numeric order (set by :func:`write_gallery_sources`).
_ORDER: list[str] = []


class TutorialOrder:
    """``within_subsection_order``: the tutorials' numeric order (01, 02, ...)."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        name = Path(filename).name
        return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)

    def __repr__(self) -> str:  # sphinx-gallery caches configuration by repr
        return "TutorialOrder()"


# -- the image scraper ---------------------------------------------------------------------
_seen: dict[str, int] = {}


def _pngs() -> dict[str, int]:
    root = os.environ.get(OUT_ENV)
    if not root or not Path(root).is_dir():
        return {}
    return {str(p): p.stat().st_mtime_ns for p in Path(root).rglob("*.png")}


def snapshot_outputs() -> None:
    """Forget what the folder held before the build (old PNGs are not new figures)."""
    _seen.clear()
    _seen.update(_pngs())


def scrape_outputs(block: Any, block_vars: dict, gallery_conf: dict, **kwargs: Any) -> str:
    """sphinx-gallery image scraper: the PNG files the block wrote, in the order written."""
    from sphinx_gallery.scrapers import figure_rst

    now = _pngs()
    new = sorted((p for p, t in now.items() if _seen.get(p) != t), key=lambda p: (now[p], p))
    _seen.update(now)
    iterator = block_vars["image_path_iterator"]
    images = []
    for path, target in zip(new, iterator):
        shutil.copyfile(path, target)
        images.append(target)
    return figure_rst(images, gallery_conf["src_dir"])
