"""Presets: named configurations of the one evaluation runner, each with its own table.

``"paper"`` — the paper's evaluation: for each image (≥ 200 of the shapes benchmark by
default, or the user's model, denoiser and data), each ε ∈ {0, 2, 4, 8}/255 (ℓ∞, [0, 1] pixel
units) and each attack of the registry

=================  ==============================================================  =========
attack             what is differentiated                                          scope
=================  ==============================================================  =========
``pgd``            PGD on the plain ViT's cross-entropy (transfer; the paper's)    all maps
``topk``           top-k attack on the plain ViT's attention (transfer, Ghorbani)  one method
``smooth_pgd``     PGD through noise → denoiser → ViT (adaptive, SmoothAdv)        all maps
``adaptive_topk``  top-k attack on the DDS map itself (adaptive, EOT)              one method
=================  ==============================================================  =========

the clean and attacked images are explained by every method under every variant of
:data:`~captum_fvit.evaluate.experiment.variants.VARIANTS` (vanilla, SmoothGrad, identity smoothing,
DDS — all at one σ; the DDS rows come from :class:`~captum_fvit.DDSAttention` itself), with the
Monte-Carlo floor (a second clean run with an independent seed). The rows are the runner's
(``results.jsonl``: streamed, resumable unit by unit, sharded under ``torchrun``) and so is
the report; :func:`write_paper_table` adds ``paper_table.md`` (and ``.rst``): means with
percentile-bootstrap 95 % confidence intervals over images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ...space import Normalization
from .aggregate import EvaluationResult
from .config import CLEAN, EvaluationConfig
from .pipeline import KEY_FIELDS
from .rows import mean_ci, read_rows

__all__ = [
    "ATTACK_NAMES",
    "PAPER",
    "PRESETS",
    "PaperResult",
    "Preset",
    "markdown_to_rst",
    "preset_config",
    "run_paper_preset",
    "run_preset",
    "write_paper_table",
]

#: The attacks of the paper preset, transfer first.
ATTACK_NAMES = ("pgd", "topk", "smooth_pgd", "adaptive_topk")
TABLE_FILE = "paper_table.md"
#: Classifiers of the accuracy table: the plain ViT and the smoothed variants' classifiers.
CLASSIFIERS = ("plain", "identity", "dds")

PAPER = EvaluationConfig(
    methods=("raw", "rollout", "grad_rollout"),
    variants=("vanilla", "smoothgrad", "identity", "dds"),
    eps=(0.0, 2 / 255, 4 / 255, 8 / 255),
    attack=ATTACK_NAMES,
    attack_steps=10,
    adaptive_steps=3,
    n_eot=2,
    sigma=0.25,
    n_samples=8,
    k=8,
    floor=True,
    batch_size=8,
)

#: Names of the paper preset's old options → this runner's (accepted with a warning).
OLD_NAMES = {"transfer_steps": "attack_steps", "eps_255": "eps"}


@dataclass(frozen=True)
class Preset:
    """A named configuration, its default image count and the table it writes."""

    config: EvaluationConfig
    n_images: int
    write_table: Callable[..., str]
    description: str = ""


@dataclass
class PaperResult:
    """What :func:`run_paper_preset` produced (``evaluation``: the runner's aggregates)."""

    out_dir: Path
    rows: list[dict]
    table: str
    compute_seconds: float
    units_run: int
    units_skipped: int
    config: dict = field(default_factory=dict)
    evaluation: EvaluationResult | None = None


def preset_config(base: EvaluationConfig, **overrides: Any) -> EvaluationConfig:
    """``base`` with ``overrides`` (EvaluationConfig fields; the old paper names
    ``transfer_steps``/``eps_255`` and the dropped ``chunk_size`` warn)."""
    for old, new in OLD_NAMES.items():
        if old in overrides:
            warnings.warn(f"the preset option {old} is deprecated; use {new}", DeprecationWarning,
                          stacklevel=3)  # fmt: skip
            value = overrides.pop(old)
            overrides[new] = [e / 255 for e in value] if old == "eps_255" else value
    if overrides.pop("chunk_size", None) is not None:
        warnings.warn("chunk_size is deprecated and ignored: chunks are max(4·batch_size, 16) "
                      "images", DeprecationWarning, stacklevel=3)  # fmt: skip
    config = replace(base, **overrides)
    config.validate()
    return config


def _default_model_and_data(model, denoiser, normalization, dataset, n_images):
    """The bundled ViT and denoiser, and the shapes test split at the model's size."""
    image_size = 64
    if model is None:
        from ...models import load_default

        bundle = load_default()
        model, denoiser = bundle.model, bundle.denoiser
        normalization = normalization or bundle.normalization
        image_size = bundle.image_size
    if dataset is None:
        from ...data import ShapesBenchmark

        dataset = ShapesBenchmark.from_split("test", n_images, image_size=image_size)
    if len(dataset) < n_images:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than n_images={n_images}")
    return model, denoiser, normalization, dataset


def run_preset(
    name: str,
    out_dir: str | Path,
    n_images: int | None = None,
    *,
    config: EvaluationConfig | None = None,
    model: nn.Module | None = None,
    denoiser: Callable | None = None,
    normalization: Normalization | None = None,
    dataset: Any = None,
    resume: bool = True,
    progress: bool = True,
    device: str = "cpu",
    setup: dict | None = None,
    n_boot: int = 2000,
    **overrides: Any,
) -> PaperResult:
    """Run (or resume) preset ``name`` through :func:`~captum_fvit.evaluate.evaluate` and write
    its table; see :func:`run_paper_preset`."""
    from .runner import evaluate

    preset = PRESETS[name]
    n_images = preset.n_images if n_images is None else n_images
    config = preset_config(config or preset.config, **overrides)
    model, denoiser, normalization, dataset = _default_model_and_data(
        model, denoiser, normalization, dataset, n_images
    )
    result = evaluate(model, dataset, denoiser=denoiser, normalization=normalization,
                      config=config, n_images=n_images, device=device, progress=progress,
                      out_dir=out_dir, resume=resume, setup=setup)  # fmt: skip
    from .distributed import current_shard

    out = Path(out_dir)
    table = preset.write_table(out, n_boot=n_boot) if current_shard().is_main else ""
    return PaperResult(out, result.records, table, result.meta.get("seconds", 0.0),
                       result.meta.get("units_run", 0), result.meta.get("units_skipped", 0),
                       config.to_dict(), result)  # fmt: skip


def run_paper_preset(out_dir: str | Path, n_images: int = 200, **options: Any) -> PaperResult:
    """Run (or resume) the paper preset; write the runner's outputs and ``paper_table.md``.

    Parameters
    ----------
    out_dir : path
        Output folder (created): ``results.jsonl`` (the rows), ``paper_table.md``/``.rst``.
    n_images : int, default 200
        Images evaluated.
    **options
        ``config`` (an :class:`EvaluationConfig` replacing :data:`PAPER`); ``model``,
        ``denoiser``, ``normalization`` (default: the bundled ViT and one-shot diffusion
        denoiser); ``dataset`` (default the shapes test split at the model's size);
        ``resume`` (default True: keep finished units), ``progress``, ``device``, ``setup``,
        ``n_boot`` (bootstrap resamples of the table); any other keyword replaces a field of
        the configuration (``n_samples=4``, ``methods=("raw",)``, ``eps=(0, 8 / 255)``, ...).

    Returns
    -------
    PaperResult
    """
    return run_preset("paper", out_dir, n_images, **options)


# -- the table ------------------------------------------------------------------------------
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
    from .runner import stream_files

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


#: Presets by name (``captum-fvit evaluate --preset NAME``).
PRESETS: dict[str, Preset] = {
    "paper": Preset(PAPER, 200, write_paper_table,
                    "the paper's evaluation: transfer and adaptive attacks, every baseline, the "
                    "Monte-Carlo floor and bootstrap CIs"),  # fmt: skip
}
