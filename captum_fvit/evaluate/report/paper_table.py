"""The paper preset's table: ``paper_table.md`` (and ``.rst``) written from a run's rows.

Means over images with percentile-bootstrap 95 % confidence intervals (their ``n`` beside
them): accuracy under each attack for the plain and the smoothed classifiers, the
Monte-Carlo floor (the same measurement between two seeds on clean images), and the top-k
overlap and Spearman correlation of clean vs attacked maps for every method, variant, attack
(labelled transfer or adaptive) and ε (ℓ∞, shown in 1/255 of [0, 1] pixel units). Works on a
complete or a partial run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..experiment.config import CLEAN
from ..experiment.pipeline import KEY_FIELDS
from ..experiment.rows import mean_ci, read_rows

__all__ = ["TABLE_FILE", "markdown_to_rst", "write_paper_table"]

TABLE_FILE = "paper_table.md"
#: Classifiers of the accuracy table: the plain ViT and the smoothed variants' classifiers.
CLASSIFIERS = ("plain", "identity", "dds")


def _cell(values: list[float], n_boot: int) -> str:
    mean, low, high, n = mean_ci(values, n_boot=n_boot)
    if n == 0:
        return "–"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _per_image(rows: list[dict], value: Callable[[dict], Any]) -> list[float]:
    """One value per image: the mean over the image's rows (``None`` values left out)."""
    by_image: dict[int, list[float]] = {}
    for row in rows:
        v = value(row)
        if v is not None and math.isfinite(float(v)):
            by_image.setdefault(row["image"], []).append(float(v))
    return [sum(v) / len(v) for _, v in sorted(by_image.items())]


def _groups(rows: list[dict], fields: tuple[str, ...], config: dict) -> list[tuple[tuple, list[dict]]]:
    """Rows grouped by ``fields``, in the configured method and attack order."""
    order = {"method": {m: i for i, m in enumerate(["all", *config["methods"]])},
             "scope": {m: i for i, m in enumerate(["all", *config["methods"]])},
             "attack": {a: i for i, a in enumerate([CLEAN, *config["attack"]])}}  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(f) for f in fields), []).append(row)

    def key(item):
        return tuple(order[f].get(v, 99) if f in order else v for f, v in zip(fields, item[0], strict=True))

    return sorted(groups.items(), key=key)


def _header(rows: list[dict], config: dict, n_images: int) -> list[str]:
    images = sorted({r["image"] for r in rows})
    adaptive = config.get("n_adaptive_images")
    return [
        "# captum-fvit paper preset",
        "",
        f"{len(images)} images evaluated (of {n_images}); σ = {config['sigma']:g} (pixel "
        f"units) for every smoothed variant; top-k with k = {config['k']}; "
        f"{config['n_samples']} samples per smoothed map/classifier; transfer attacks "
        f"{config['attack_steps']} steps; adaptive attacks {config.get('adaptive_steps') or config['attack_steps']} "
        f"steps × {config['n_eot']} EOT samples on the first "
        f"{adaptive if adaptive is not None else n_images} images; {config['norm']}, step ε/5, "
        "random start. Cells: mean [95 % percentile-bootstrap CI over images].",
        "",
    ]


def _accuracy_table(rows: list[dict], config: dict, n_boot: int) -> list[str]:
    lines = [
        "## Accuracy under attack (plain ViT, identity-smoothed and DDS classifiers)",
        "",
        "| attack | threat | ε (/255) | maps attacked | n | plain ViT | identity RS | DDS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (attack, eps, scope), group in _groups(rows, ("attack", "eps", "scope"), config):
        values = {
            "plain": _per_image(group, lambda r: float(r["correct"])),
            **{v: _per_image([r for r in group if r["variant"] == v],
                             lambda r: None if r["pred_smoothed"] is None else float(r["pred_smoothed"] == r["label"]))
               for v in CLASSIFIERS[1:]},
        }  # fmt: skip
        threat = group[0].get("threat") or "–"
        lines.append(f"| {attack} | {threat} | {eps * 255:g} | {scope} | {len(values['plain'])} | "
                     + " | ".join(_cell(values[c], n_boot) for c in CLASSIFIERS) + " |")  # fmt: skip
    return lines


def _floor_table(rows: list[dict], config: dict, n_boot: int) -> list[str]:
    smoothed = [v for v in config["variants"] if v != "vanilla"]
    lines = [
        "",
        "## Monte-Carlo floor: top-k overlap of two clean runs with independent seeds",
        "",
        "| method | n | " + " | ".join(smoothed) + " |",
        "|---|---|" + "---|" * len(smoothed),
    ]
    clean = [r for r in rows if r["attack"] == CLEAN and "floor_overlap" in r]
    for (method,), group in _groups(clean, ("method",), config):
        by = {v: _per_image([r for r in group if r["variant"] == v], lambda r: r["floor_overlap"])
              for v in smoothed}  # fmt: skip
        n = max((len(v) for v in by.values()), default=0)
        lines.append(f"| {method} | {n} | " + " | ".join(_cell(by[v], n_boot) for v in smoothed) + " |")
    return lines


def _map_table(rows: list[dict], config: dict, n_boot: int, metric: str, title: str) -> list[str]:
    variants = list(config["variants"])
    extra = ["DDS floor", "DDS indep. seeds"] if metric == "topk_overlap" and "dds" in variants else []
    lines = [
        "", f"## {title}", "",
        "| method | attack | threat | ε (/255) | n | " + " | ".join([*variants, *extra]) + " |",
        "|---|---|---|---|---|" + "---|" * (len(variants) + len(extra)),
    ]  # fmt: skip
    attacked = [r for r in rows if r["attack"] != CLEAN]
    for (method, attack, eps), group in _groups(attacked, ("method", "attack", "eps"), config):
        by = {v: _per_image([r for r in group if r["variant"] == v], lambda r: r.get(metric))
              for v in variants}  # fmt: skip
        cells = [_cell(by[v], n_boot) for v in variants]
        if extra:
            dds = [r for r in group if r["variant"] == "dds"]
            cells += [_cell(_per_image(dds, lambda r: r.get("floor_overlap")), n_boot),
                      _cell(_per_image(dds, lambda r: r.get("topk_overlap_indep")), n_boot)]  # fmt: skip
        n = max((len(v) for v in by.values()), default=0)
        threat = group[0].get("threat") or "–"
        lines.append(f"| {method} | {attack} | {threat} | {eps * 255:g} | {n} | " + " | ".join(cells) + " |")
    return lines


def write_paper_table(out_dir: str | Path, config: Any = None, *, n_boot: int = 2000) -> str:
    """Write ``paper_table.md`` (and ``paper_table.rst``) from the rows in ``out_dir``, for a
    complete or a partial run. ``config`` is not needed (the rows' run header has it)."""
    from ..experiment.runner import stream_files

    out = Path(out_dir)
    rows = read_rows(stream_files(out), KEY_FIELDS)
    headers = [r for r in rows if r["kind"] == "run"]
    if not headers:
        raise ValueError(f"{out} holds no evaluation rows (results.jsonl); run the preset first")
    settings, n_images = headers[0]["config"], headers[0]["n_images"]
    explain = [r for r in rows if r["kind"] == "explain"]
    lines = _header(explain, settings, n_images) + _accuracy_table(explain, settings, n_boot)
    lines += _floor_table(explain, settings, n_boot)
    lines += _map_table(explain, settings, n_boot, "topk_overlap",
                        f"Top-{settings['k']} overlap V_k, clean vs attacked (common seed)")  # fmt: skip
    lines += _map_table(explain, settings, n_boot, "spearman",
                        "Spearman correlation, clean vs attacked (common seed)")  # fmt: skip
    text = "\n".join(lines) + "\n"
    (out / TABLE_FILE).write_text(text)
    (out / TABLE_FILE.replace(".md", ".rst")).write_text(markdown_to_rst(text))
    return text


def markdown_to_rst(text: str) -> str:
    """The preset's Markdown (``#`` headings, pipe tables, paragraphs) as reStructuredText
    (``list-table`` directives), for the documentation page."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if not table:
            return
        out.extend([".. list-table::", "   :header-rows: 1", ""])
        for row in table:
            out.append(f"   * - {row[0]}")
            out.extend(f"     - {cell}" for cell in row[1:])
        out.append("")
        table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append([c.replace("*", "\\*") or "..." for c in cells])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            title = line.lstrip("#").strip()
            out.extend([title, ("=" if level == 1 else "-") * len(title)])
        else:
            out.append(line)
    flush()
    return "\n".join(out) + "\n"
