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

    def add_text(self, heading: str, text: str) -> None:
        self.sections.append(("text", heading, text))

    def add_table(self, heading: str, rows: list[dict], columns: list[str] | None = None) -> None:
        self.sections.append(("table", heading, (rows, columns)))

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
        for kind, heading, content in self.sections:
            if kind == "text":
                md.append(f"## {heading}\n\n{content}\n")
                body.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(content)}</p>")
            elif kind == "table":
                rows, columns = content
                md.append(f"## {heading}\n\n{markdown_table(rows, columns)}")
                body.append(f"<h2>{html.escape(heading)}</h2>{_html_table(rows, columns)}")
            else:
                data = base64.b64encode(Path(content).read_bytes()).decode("ascii")
                rel = Path(content).relative_to(self.out_dir)
                md.append(f"![{heading}]({rel.as_posix()})\n")
                body.append(
                    f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(heading)}\">"
                    f"<figcaption>{html.escape(heading)}</figcaption></figure>"
                )
        md_path = self.out_dir / "summary.md"
        md_path.write_text("\n".join(md))
        html_path = self.out_dir / "report.html"
        html_path.write_text(_PAGE.format(title=html.escape(self.title), body="\n".join(body)))
        return {"json": json_path, "markdown": md_path, "html": html_path}


def _html_table(rows: list[dict], columns: list[str] | None) -> str:
    if not rows:
        return "<p><em>no rows</em></p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style></head><body>
{body}
</body></html>
"""
