"""Writing an evaluation report: ``results.json``, PNG figures, ``summary.md`` and a
self-contained ``report.html`` (figures embedded as data URIs, so the file can be mailed)."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "markdown_table"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "_(no rows)_\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    return value


def _anchor(heading: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug or "section"


@dataclass
class Report:
    """Collects figures, tables and text, then writes them all into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Existing, writable folder.
    title : str
        Report title.
    """

    out_dir: Path
    title: str = "captum-fvit evaluation"
    sections: list[tuple[str, str, Any]] = field(default_factory=list)

    def add_heading(self, heading: str, level: int = 2) -> None:
        """A section heading (level 2 appears in the contents; level 3 is a subsection)."""
        self.sections.append(("heading", heading, level))

    def add_setup(self, heading: str, items: list[tuple[str, str]]) -> None:
        """A two-column table of names and values (the setup of a run)."""
        self.sections.append(("setup", heading, items))

    def add_details(self, heading: str, text: str) -> None:
        """Preformatted text, folded away in the HTML page (e.g. the configuration as JSON)."""
        self.sections.append(("details", heading, text))

    def add_table(
        self,
        heading: str,
        rows: list[dict],
        columns: list[str] | None = None,
        notes: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A table; ``notes`` explains columns in one sentence each (listed below the table),
        ``headers`` renames columns for display."""
        self.sections.append(("table", heading, (rows, columns, notes or {}, headers or {})))

    def add_figure(self, name: str, figure, caption: str = "") -> Path:
        """Save ``figure`` as ``figures/<name>.png`` and keep it for the HTML page."""
        import matplotlib.pyplot as plt

        folder = self.out_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        self.sections.append(("figure", caption or name, path))
        return path

    def write(self, results: dict) -> dict[str, Path]:
        """Write ``results.json``, ``summary.md`` and ``report.html``; return their paths."""
        json_path = self.out_dir / "results.json"
        json_path.write_text(json.dumps(_json_safe(results), indent=2))
        md = [f"# {self.title}\n"]
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        contents = [
            f'<li><a href="#{_anchor(h)}">{html.escape(h)}</a></li>'
            for kind, h, level in self.sections
            if kind == "heading" and level == 2
        ]
        if contents:
            body.append(f'<nav class="contents"><strong>Contents</strong><ul>{"".join(contents)}</ul></nav>')
        for kind, heading, content in self.sections:
            h = html.escape(heading)
            if kind == "heading":
                md.append(f"{'#' * content} {heading}\n")
                body.append(f'<h{content} id="{_anchor(heading)}">{h}</h{content}>')
            elif kind == "setup":
                md.append(f"### {heading}\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in content) + "\n")
                cells = "".join(
                    f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in content
                )
                body.append(f'<h3>{h}</h3><table class="setup"><tbody>{cells}</tbody></table>')
            elif kind == "details":
                md.append(f"<details><summary>{heading}</summary>\n\n```\n{content}\n```\n</details>\n")
                body.append(f"<details><summary>{h}</summary><pre>{html.escape(content)}</pre></details>")
            elif kind == "table":
                rows, columns, notes, headers = content
                md.append(f"### {heading}\n\n{markdown_table(rows, columns)}{_notes_md(notes, headers)}")
                body.append(f"<h3>{h}</h3>{_html_table(rows, columns, headers)}{_notes_html(notes, headers)}")
            else:
                data = base64.b64encode(Path(content).read_bytes()).decode("ascii")
                rel = Path(content).relative_to(self.out_dir)
                md.append(f"![{heading}]({rel.as_posix()})\n")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{h}" '
                    f'data-name="{html.escape(Path(content).stem)}"><figcaption>{h}</figcaption></figure>'
                )
        md_path = self.out_dir / "summary.md"
        md_path.write_text("\n".join(md))
        html_path = self.out_dir / "report.html"
        html_path.write_text(_PAGE.format(title=html.escape(self.title), body="\n".join(body)))
        return {"json": json_path, "markdown": md_path, "html": html_path}


def _notes_md(notes: dict[str, str], headers: dict[str, str]) -> str:
    if not notes:
        return ""
    return "\n" + "\n".join(f"- **{headers.get(c, c)}**: {t}" for c, t in notes.items()) + "\n"


def _notes_html(notes: dict[str, str], headers: dict[str, str]) -> str:
    if not notes:
        return ""
    items = "".join(
        f'<dt data-column="{html.escape(c)}">{html.escape(headers.get(c, c))}</dt><dd>{html.escape(t)}</dd>'
        for c, t in notes.items()
    )
    return f'<dl class="notes">{items}</dl>'


def _html_table(rows: list[dict], columns: list[str] | None, headers: dict[str, str] | None = None) -> str:
    if not rows:
        return "<p><em>no rows</em></p>"
    columns = columns or list(rows[0])
    headers = headers or {}
    head = "".join(
        f'<th data-column="{html.escape(c)}">{html.escape(headers.get(c, c))}</th>' for c in columns
    )
    body = "".join("<tr>" + "".join(_cell(r.get(c, "")) for c in columns) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value: Any) -> str:
    """A table cell; words are left-aligned, numbers (and intervals) right-aligned."""
    text = _fmt(value)
    numeric = isinstance(value, (int, float)) or text[:1].isdigit() or text[:1] in "-–"
    klass = "" if numeric and not isinstance(value, bool) else ' class="text"'
    return f"<td{klass}>{html.escape(text)}</td>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
        color: #222; line-height: 1.45; }}
h1 {{ margin-bottom: 0.3em; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }}
h3 {{ margin: 1.2em 0 0.4em; font-size: 1.05em; }}
nav.contents {{ background: #f7f7f7; padding: 0.6em 1em; border-radius: 4px; }}
nav.contents ul {{ margin: 0.3em 0; columns: 2; }}
div.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 0.8em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }}
td.text {{ text-align: left; }}
th {{ background: #f3f3f3; }}
table.setup th {{ text-align: left; width: 11em; vertical-align: top; }}
table.setup td {{ text-align: left; }}
dl.notes {{ font-size: 0.85em; color: #444; display: grid; grid-template-columns: max-content auto;
            gap: 0.15em 1em; margin: 0 0 1.5em; }}
dl.notes dt {{ font-weight: 600; }} dl.notes dd {{ margin: 0; }}
details pre {{ white-space: pre-wrap; font-size: 0.8em; background: #f7f7f7; padding: 0.6em; }}
figure {{ margin: 1em 0 1.5em; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style></head><body>
{body}
</body></html>
"""
