"""The paper's evaluation as one preset: transfer *and* adaptive attacks, all baselines, both
halves of faithfulness, the Monte-Carlo floor, and bootstrap confidence intervals.

For each image of the shapes benchmark (≥ 200 by default), each ε ∈ {0, 2, 4, 8}/255 (ℓ∞,
[0, 1] pixel units) and each attack

=================  ==============================================================  =========
attack             what is differentiated                                          scope
=================  ==============================================================  =========
``transfer_pgd``   PGD on the plain ViT's cross-entropy (the paper's protocol)      all maps
``transfer_topk``  top-k attack on the plain ViT's attention (surrogate, Ghorbani)  one method
``adaptive_pgd``   :func:`~captum_fvit.evaluate.adaptive.smooth_pgd` through DDS    all maps
``adaptive_topk``  :func:`~captum_fvit.evaluate.adaptive.adaptive_topk` on the DDS  one method
                   map itself (EOT through the denoiser)
=================  ==============================================================  =========

the clean and attacked images are explained by every method with every baseline of
:mod:`~captum_fvit.evaluate.baselines` (vanilla, NoiseTunnel SmoothGrad, identity-denoiser
smoothing, DDS — all at the same σ), and the preset records, per image,

* the top-k overlap ``V_k`` and Spearman correlation of clean vs attacked maps (common
  seed), for smoothed maps also the overlap with independent seeds and the Monte-Carlo
  floor (two clean runs with different seeds, :mod:`~captum_fvit.evaluate.floor`);
* whether the plain ViT, the identity-smoothed classifier and the DDS classifier are right on
  the attacked image (the other half of faithfulness).

Rows stream to ``rows.jsonl`` (:class:`~captum_fvit.evaluate.rows.RowWriter`): each (batch,
attack, ε) unit is written at once with a sentinel row, so a killed run resumes at the first
unfinished unit. :func:`write_paper_table` turns whatever rows exist into ``paper_table.md``:
means with percentile-bootstrap 95 % confidence intervals over images.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attr import AttentionMap
from ..explain.targets import logits_of
from ..space import Normalization, resolve_normalization
from ..validation import check_count
from .adaptive import adaptive_topk, smooth_pgd
from .attacks import pgd_attack
from .baselines import SmoothGradAttention
from .differentiable import DifferentiableDDS
from .explanation_attack import topk_explanation_attack
from .metrics import spearman, topk_indices, topk_overlap
from .rows import RowWriter, group_rows, mean_ci, read_rows
from .surrogate import AttentionSurrogate

__all__ = ["ATTACK_NAMES", "PaperConfig", "PaperResult", "run_paper_preset", "write_paper_table"]

#: The attacks of the preset, transfer first.
ATTACK_NAMES = ("transfer_pgd", "transfer_topk", "adaptive_pgd", "adaptive_topk")
#: Explanation variants (baselines), all at one σ.
VARIANTS = ("vanilla", "smoothgrad", "identity", "dds")
#: Classifiers whose accuracy is reported.
CLASSIFIERS = ("plain", "identity", "dds")
KEY_FIELDS = ("kind", "image", "attack", "eps_255", "method", "variant")
ROWS_FILE = "rows.jsonl"
TABLE_FILE = "paper_table.md"
#: Offset of the second clean seed (the Monte-Carlo floor).
FLOOR_SEED_OFFSET = 1_000_003


@dataclass
class PaperConfig:
    """Settings of the paper preset. σ and ε are in [0, 1] pixel units (ε given in /255).

    Attributes
    ----------
    n_images : int
        Shapes-benchmark test images (≥ 200 for the paper).
    eps_255 : sequence of float
        ℓ∞ radii in units of 1/255 (0 = clean).
    methods : sequence of str
        Explanation methods.
    sigma : float
        Noise std of every smoothed variant.
    k : int
        Top-k size.
    n_samples : int
        Samples of every smoothed map / classifier evaluation (DDS, identity, SmoothGrad).
    transfer_steps : int
        Steps of the transfer attacks (step ε/5).
    adaptive_steps, n_eot : int
        Steps and EOT samples per step of the adaptive attacks.
    n_adaptive_images : int or None
        The first images that get the (costly) adaptive attacks; ``None`` = all.
    batch_size : int
        Images per unit of work (and per streamed write).
    chunk_size : int
        Images per denoiser/ViT chunk.
    seed : int
        Seed of everything.
    n_boot : int
        Bootstrap resamples of the confidence intervals.
    """

    n_images: int = 200
    eps_255: Sequence[float] = (0, 2, 4, 8)
    methods: Sequence[str] = ("raw", "rollout", "grad_rollout")
    sigma: float = 0.25
    k: int = 8
    n_samples: int = 8
    transfer_steps: int = 10
    adaptive_steps: int = 3
    n_eot: int = 2
    n_adaptive_images: int | None = None
    batch_size: int = 8
    chunk_size: int = 64
    seed: int = 0
    n_boot: int = 2000

    def validate(self) -> None:
        for name in ("n_images", "k", "n_samples", "transfer_steps", "adaptive_steps", "n_eot",
                     "batch_size", "chunk_size", "n_boot"):
            check_count(getattr(self, name), name)
        if self.n_adaptive_images is not None:
            check_count(self.n_adaptive_images, "n_adaptive_images", minimum=0)
        if not self.eps_255 or any((not math.isfinite(e)) or e < 0 for e in self.eps_255):
            raise ValueError(f"eps_255 must be finite values ≥ 0, got {list(self.eps_255)}")
        if not self.methods:
            raise ValueError("give at least one method")


@dataclass
class PaperResult:
    """What :func:`run_paper_preset` produced."""

    out_dir: Path
    rows: list[dict]
    table: str
    compute_seconds: float
    units_run: int
    units_skipped: int
    config: dict = field(default_factory=dict)


def _surrogate(model: nn.Module, method: str) -> AttentionSurrogate:
    if method == "raw":
        return AttentionSurrogate(model, "raw")
    return AttentionSurrogate(model, "rollout")  # rollout; grad_rollout's transfer surrogate


def _attack_seed(seed: int, start: int, eps_index: int, attack_index: int) -> int:
    return (seed * 1_000_003 + start * 101 + eps_index * 11 + attack_index) % (2**62)


class _Evaluator:
    """Explains and classifies batches with every variant; clean results are cached per batch."""

    def __init__(self, model, denoiser, normalization, config: PaperConfig) -> None:
        self.model = model
        self.config = config
        self.normalization = normalization
        methods = list(config.methods)
        self.dds = DifferentiableDDS(model, denoiser, methods, config.sigma,
                                     normalization=normalization, chunk_size=config.chunk_size)
        # smooth_pgd needs the softmax only: the cheapest method (raw, one layer) rides along.
        self.pgd_engine = DifferentiableDDS(model, denoiser, "raw", config.sigma,
                                            normalization=normalization,
                                            chunk_size=config.chunk_size)
        self.identity = DifferentiableDDS(model, None, methods, config.sigma,
                                          normalization=normalization, chunk_size=config.chunk_size)
        self.vanilla = {m: AttentionMap(model, m) for m in methods}
        self.smoothgrad = {
            m: SmoothGradAttention(model, m, config.sigma, config.n_samples,
                                   normalization=normalization)
            for m in methods
        }

    def explain(self, x: torch.Tensor, labels: torch.Tensor, seed: int, methods: Sequence[str]):
        """Maps ``{(method, variant): N×P}`` and correctness ``{classifier: N bool}``."""
        n = self.config.n_samples
        pixels = self.normalization.to_pixels(x).clamp(0, 1)
        maps: dict[tuple[str, str], torch.Tensor] = {}
        dds = self.dds.estimate(pixels, n, seed, target=labels)
        identity = self.identity.estimate(pixels, n, seed, target=labels)
        for m in methods:
            maps[(m, "vanilla")] = self.vanilla[m].token_map(x, target=labels).detach()
            maps[(m, "smoothgrad")] = self.smoothgrad[m].token_map(x, labels, seed=seed % (2**62))
            maps[(m, "identity")] = identity.maps[m]
            maps[(m, "dds")] = dds.maps[m]
        with torch.no_grad():
            plain = logits_of(self.model(x)).argmax(dim=1)
        correct = {
            "plain": plain == labels,
            "identity": identity.predicted == labels,
            "dds": dds.predicted == labels,
        }
        return maps, correct, dds


def _image_rows(kind, indices, attack, eps_255, method, variant, **columns) -> list[dict]:
    rows = []
    for j, index in enumerate(indices):
        row = {"kind": kind, "image": int(index), "attack": attack, "eps_255": float(eps_255),
               "method": method, "variant": variant}
        for name, values in columns.items():
            value = values[j]
            row[name] = float(value) if value is not None else None
        rows.append(row)
    return rows


def run_paper_preset(
    out_dir: str | Path,
    n_images: int = 200,
    *,
    config: PaperConfig | None = None,
    model: nn.Module | None = None,
    denoiser: Callable | None = None,
    normalization: Normalization | None = None,
    dataset: Any = None,
    resume: bool = True,
    progress: bool = True,
    **overrides: Any,
) -> PaperResult:
    """Run (or resume) the paper preset and write ``rows.jsonl`` and ``paper_table.md``.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    n_images : int, default 200
        Images of the shapes benchmark's test split.
    config : PaperConfig, optional
        Settings (``n_images`` and ``**overrides`` replace its fields).
    model, denoiser, normalization : optional
        Default: the bundled trained ViT and one-shot diffusion denoiser
        (:func:`captum_fvit.models.load_default`).
    dataset : optional
        Default ``ShapesBenchmark.from_split("test", n_images)`` at the model's image size;
        anything with ``batch(indices) -> {"image", "label"}`` or ``dataset[i]`` dicts works.
    resume : bool, default True
        Keep the rows already in ``out_dir/rows.jsonl`` and skip their units.
    progress : bool, default True
        Print one line per unit.

    Returns
    -------
    PaperResult
    """
    config = replace(config or PaperConfig(), n_images=n_images, **overrides)
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        from ..models import load_default

        bundle = load_default()
        model, denoiser = bundle.model, bundle.denoiser
        normalization = normalization or bundle.normalization
        image_size = bundle.image_size
    else:
        image_size = None
    normalization = normalization or resolve_normalization(model)
    if dataset is None:
        from ..data import ShapesBenchmark

        dataset = ShapesBenchmark.from_split("test", config.n_images, image_size=image_size or 64)
    if len(dataset) < config.n_images:
        raise ValueError(f"the dataset has {len(dataset)} images, fewer than n_images={config.n_images}")
    settings = asdict(config) | {"eps_255": list(config.eps_255), "methods": list(config.methods)}
    saved = out / "config.json"
    if resume and saved.exists() and (out / ROWS_FILE).exists():
        before = json.loads(saved.read_text())
        changed = sorted(name for name in settings if before.get(name) != settings[name])
        if changed:
            raise ValueError(
                f"{out / ROWS_FILE} was computed with other settings ({', '.join(changed)} "
                "differ); resume with the same options, or pass resume=False (--no-resume) to "
                "start over"
            )
    saved.write_text(json.dumps(settings, indent=2))
    evaluator = _Evaluator(model, denoiser, normalization, config)
    n_adaptive = config.n_images if config.n_adaptive_images is None else config.n_adaptive_images
    eps_list = sorted(set(float(e) for e in config.eps_255) | {0.0})
    seed_a, seed_b = config.seed, config.seed + FLOOR_SEED_OFFSET
    methods = list(config.methods)
    k = config.k
    units_run = units_skipped = 0
    compute = 0.0
    writer = RowWriter(out / ROWS_FILE, KEY_FIELDS, resume=resume)
    try:
        for start in range(0, config.n_images, config.batch_size):
            indices = list(range(start, min(start + config.batch_size, config.n_images)))
            units = [(a, e) for e in eps_list for a in (ATTACK_NAMES if e > 0 else ("clean",))]
            done = writer.done_keys()
            todo = [(a, e) for a, e in units if ("unit", start, a, e, None, None) not in done]
            units_skipped += len(units) - len(todo)
            if not todo:
                continue
            began = time.process_time()
            batch = _get_batch(dataset, indices)
            x = normalization.from_pixels(batch["image"].float())
            labels = batch["label"].long()
            clean_maps, clean_correct, clean_dds = evaluator.explain(x, labels, seed_a, methods)
            floor_maps, _, _ = evaluator.explain(x, labels, seed_b, methods)
            smoothed_prediction = clean_dds.predicted
            setup = time.process_time() - began
            for attack, eps_255 in todo:
                began = time.process_time()
                rows = _run_unit(
                    attack, eps_255, eps_list.index(eps_255), start, indices, x, labels, config,
                    evaluator, model, denoiser, normalization, clean_maps, clean_correct,
                    floor_maps, smoothed_prediction, n_adaptive, seed_a, seed_b, methods, k,
                )
                seconds = time.process_time() - began + setup
                setup = 0.0
                compute += seconds
                rows.append({"kind": "unit", "image": start, "attack": attack,
                             "eps_255": float(eps_255), "method": None, "variant": None,
                             "seconds": seconds, "images": len(indices)})
                writer.write(rows)
                units_run += 1
                if progress:
                    print(f"[paper] images {start}-{indices[-1]} {attack} ε={eps_255:g}/255: "
                          f"{seconds:.1f} s CPU", flush=True)
    finally:
        writer.close()
    table = write_paper_table(out, config)
    rows = read_rows(out / ROWS_FILE, KEY_FIELDS)
    return PaperResult(out, rows, table, compute, units_run, units_skipped, asdict(config))


def _get_batch(dataset: Any, indices: list[int]) -> dict:
    if hasattr(dataset, "batch"):
        return dataset.batch(indices)
    samples = [dataset[i] for i in indices]
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.tensor([int(s["label"]) for s in samples]),
    }


def _run_unit(attack, eps_255, eps_index, start, indices, x, labels, config, evaluator, model,
              denoiser, normalization, clean_maps, clean_correct, floor_maps, smoothed_prediction,
              n_adaptive, seed_a, seed_b, methods, k) -> list[dict]:
    rows: list[dict] = []
    if attack == "clean":
        for classifier, ok in clean_correct.items():
            rows += _image_rows("acc", indices, "clean", 0.0, "all", classifier, correct=ok.double())
        for m in methods:
            for variant in ("smoothgrad", "identity", "dds"):
                floor = topk_overlap(clean_maps[(m, variant)], floor_maps[(m, variant)], k)
                rows += _image_rows("floor", indices, "clean", 0.0, m, variant, overlap=floor)
        return rows
    eps = eps_255 / 255
    attack_index = ATTACK_NAMES.index(attack)
    seed = _attack_seed(config.seed, start, eps_index, attack_index)
    subset = torch.ones(len(indices), dtype=torch.bool)
    if attack.startswith("adaptive"):
        subset = torch.tensor([i < n_adaptive for i in indices])
        if not bool(subset.any()):
            return rows
    sub_indices = [i for i, keep in zip(indices, subset.tolist(), strict=True) if keep]
    xs, ys = x[subset], labels[subset]
    if attack in ("transfer_pgd", "adaptive_pgd"):
        if attack == "transfer_pgd":
            adv = pgd_attack(model, xs, ys, eps, steps=config.transfer_steps,
                             normalization=normalization, seed=seed)
        else:
            adv = smooth_pgd(model, denoiser, xs, ys, eps, config.sigma, config.n_eot,
                             steps=config.adaptive_steps, seed=seed, dds=evaluator.pgd_engine)
        targets = [("all", methods, adv)]
    else:
        targets = []
        for m in methods:
            if attack == "transfer_topk":
                adv = topk_explanation_attack(
                    None, model, xs, k, eps, steps=config.transfer_steps,
                    surrogate_map_fn=_surrogate(model, m), normalization=normalization, seed=seed,
                ).adversarial
            else:
                engine = DifferentiableDDS(model, denoiser, m, config.sigma,
                                           normalization=normalization,
                                           chunk_size=config.chunk_size)
                adv = adaptive_topk(
                    model, denoiser, xs, k, eps, config.sigma, m, config.n_eot,
                    steps=config.adaptive_steps, n_clean=1,
                    labels=smoothed_prediction[subset],
                    topk_index=topk_indices(clean_maps[(m, "dds")][subset], k),
                    seed=seed, dds=engine,
                ).adversarial
            targets.append((m, [m], adv))
    for scope, scope_methods, adv in targets:
        maps, correct, _ = evaluator.explain(adv, ys, seed_a, scope_methods)
        for classifier, ok in correct.items():
            rows += _image_rows("acc", sub_indices, attack, eps_255, scope, classifier,
                                correct=ok.double())
        for m in scope_methods:
            for variant in VARIANTS:
                clean = clean_maps[(m, variant)][subset]
                attacked = maps[(m, variant)]
                columns = {"overlap": topk_overlap(clean, attacked, k),
                           "spearman": spearman(clean, attacked)}
                if variant != "vanilla":
                    floor_clean = floor_maps[(m, variant)][subset]
                    columns["overlap_indep"] = topk_overlap(floor_clean, attacked, k)
                    columns["floor"] = topk_overlap(clean, floor_clean, k)
                rows += _image_rows("map", sub_indices, attack, eps_255, m, variant, **columns)
    return rows


# -- the table ------------------------------------------------------------------------------
def _order(config: PaperConfig) -> Callable[[tuple], tuple]:
    """Sort key of (method, attack, eps) groups: configured method order, transfer first."""
    methods = {m: i for i, m in enumerate(config.methods)}
    attacks = {a: i for i, a in enumerate(("clean", *ATTACK_NAMES))}

    def key(group: tuple) -> tuple:
        named = dict(zip(("method", "attack", "eps_255"), group, strict=False))
        return (
            -1 if named.get("method") == "all" else methods.get(named.get("method"), len(methods)),
            attacks.get(named.get("attack"), len(attacks)),
            named.get("eps_255") or 0.0,
        )

    return key


def _cell(values: list[float], n_boot: int) -> str:
    mean, low, high, n = mean_ci(values, n_boot=n_boot)
    if n == 0:
        return "–"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _n(values: list) -> int:
    return sum(1 for v in values if v is not None and math.isfinite(v))


def write_paper_table(out_dir: str | Path, config: PaperConfig | None = None) -> str:
    """Write ``paper_table.md`` from the rows in ``out_dir`` (complete or partial run)."""
    out = Path(out_dir)
    if config is None:
        saved = out / "config.json"
        config = PaperConfig(**json.loads(saved.read_text())) if saved.exists() else PaperConfig()
    n_boot = config.n_boot
    rows = read_rows(out / ROWS_FILE, KEY_FIELDS)
    units = [r for r in rows if r["kind"] == "unit"]
    seconds = sum(r.get("seconds", 0.0) for r in units)
    images = sorted({r["image"] for r in rows if r["kind"] in ("acc", "map")})
    lines = [
        "# captum-fvit paper preset",
        "",
        f"{len(images)} images evaluated (of {config.n_images}); σ = {config.sigma:g} (pixel "
        f"units) for every smoothed variant; top-k with k = {config.k}; {config.n_samples} "
        f"samples per smoothed map/classifier; transfer attacks {config.transfer_steps} steps; "
        f"adaptive attacks {config.adaptive_steps} steps × {config.n_eot} EOT samples on the "
        f"first {config.n_adaptive_images if config.n_adaptive_images is not None else config.n_images} "
        f"images; ℓ∞, step ε/5, random start. Units done: {len(units)}; CPU time in units: "
        f"{seconds / 60:.1f} min. Cells: mean [95 % percentile-bootstrap CI over images].",
        "",
    ]
    acc = group_rows([r for r in rows if r["kind"] == "acc"], ("method", "attack", "eps_255"))
    acc = dict(sorted(acc.items(), key=lambda item: _order(config)(item[0])))
    lines += [
        "## Accuracy under attack (plain ViT, identity-smoothed and DDS classifiers)",
        "",
        "| attack | ε (/255) | maps attacked | n | plain ViT | identity RS | DDS |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, attack, eps_255), group in acc.items():
        by = {c: [r["correct"] for r in group if r["variant"] == c] for c in CLASSIFIERS}
        lines.append(
            f"| {attack} | {eps_255:g} | {method} | {_n(by['plain'])} | "
            + " | ".join(_cell(by[c], n_boot) for c in CLASSIFIERS) + " |"
        )
    floors = group_rows([r for r in rows if r["kind"] == "floor"], ("method",))
    floors = dict(sorted(floors.items(), key=lambda item: _order(config)(item[0])))
    lines += [
        "",
        "## Monte-Carlo floor: top-k overlap of two clean runs with independent seeds",
        "",
        "| method | n | SmoothGrad | identity | DDS |",
        "|---|---|---|---|---|",
    ]
    for (method,), group in floors.items():
        by = {v: [r["overlap"] for r in group if r["variant"] == v] for v in ("smoothgrad", "identity", "dds")}
        lines.append(f"| {method} | {_n(by['dds'])} | " + " | ".join(_cell(by[v], n_boot) for v in by) + " |")
    maps = group_rows([r for r in rows if r["kind"] == "map"], ("method", "attack", "eps_255"))
    maps = dict(sorted(maps.items(), key=lambda item: _order(config)(item[0])))
    for metric, title in (("overlap", f"Top-{config.k} overlap V_k, clean vs attacked (common seed)"),
                          ("spearman", "Spearman correlation, clean vs attacked (common seed)")):
        extra = " | DDS floor | DDS indep. seeds" if metric == "overlap" else ""
        lines += [
            "",
            f"## {title}",
            "",
            f"| method | attack | ε (/255) | n | vanilla | SmoothGrad | identity | DDS{extra} |",
            "|---|---|---|---|---|---|---|---" + ("|---|---|" if extra else "|"),
        ]
        for (method, attack, eps_255), group in maps.items():
            by = {v: [r[metric] for r in group if r["variant"] == v] for v in VARIANTS}
            cells = [_cell(by[v], n_boot) for v in VARIANTS]
            if metric == "overlap":
                dds_rows = [r for r in group if r["variant"] == "dds"]
                cells += [_cell([r["floor"] for r in dds_rows], n_boot),
                          _cell([r["overlap_indep"] for r in dds_rows], n_boot)]
            lines.append(f"| {method} | {attack} | {eps_255:g} | {_n(by['dds'])} | " + " | ".join(cells) + " |")
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m captum_fvit.evaluate.paper --out DIR [...]`` (resumes by default)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (rows.jsonl, paper_table.md)")
    parser.add_argument("--n-images", type=int, default=200)
    defaults = PaperConfig()
    for name in ("n_samples", "transfer_steps", "adaptive_steps", "n_eot", "n_adaptive_images",
                 "batch_size", "chunk_size", "seed", "k"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--sigma", type=float, default=defaults.sigma)
    parser.add_argument("--eps-255", type=float, nargs="+", default=list(defaults.eps_255))
    parser.add_argument("--methods", nargs="+", default=list(defaults.methods))
    parser.add_argument("--no-resume", action="store_true", help="start a fresh rows.jsonl")
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite paper_table.md from the rows on disk")
    args = parser.parse_args(argv)
    if args.table_only:
        print(write_paper_table(args.out))
        return 0
    overrides = {name: getattr(args, name) for name in (
        "n_samples", "transfer_steps", "adaptive_steps", "n_eot", "n_adaptive_images",
        "batch_size", "chunk_size", "seed", "k", "sigma")}
    result = run_paper_preset(
        args.out, args.n_images, resume=not args.no_resume, eps_255=tuple(args.eps_255),
        methods=tuple(args.methods), **overrides,
    )
    print(result.table)
    print(f"[paper] {result.units_run} units run, {result.units_skipped} resumed; "
          f"CPU {result.compute_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
