"""The evaluation runner: attacks × methods × (vanilla, DDS) over a dataset, and a report.

For every batch of images (pixels in [0, 1], optional masks) and every ε of the sweep, the
runner attacks the plain ViT (the paper's protocol: PGD on its prediction, ε in [0, 1] pixel
units) and explains clean and attacked images with each method, plainly (``AttentionMap``)
and with DDS (``DDSAttention``, same seed for clean and attacked so the comparison measures
the explanation, not Monte-Carlo noise). It accumulates

* the top-k overlap V_k and Spearman correlation between clean and attacked token maps;
* the segmentation test (pixel accuracy, mIoU, mAP) of the maps against the object masks;
* the plain model's accuracy under attack;
* optionally, FaithfulRegion certificates on the clean images (certified curves).

:func:`write_report` turns the result into ``results.json``, ``summary.md`` and a
self-contained ``report.html`` with figures. The CLI ``captum-fvit evaluate`` calls both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attr import AttentionMap, DDSAttention, FaithfulRegion
from ..denoise import IdentityDenoiser
from ..explain import METHODS
from ..explain.targets import logits_of
from ..space import Normalization, resolve_normalization, tokens_to_pixels
from .attacks import ATTACKS, AttackContext, get_attack
from .curves import certified_curves
from .metrics import spearman, topk_overlap
from .segmentation import SegmentationAccumulator

__all__ = ["EvaluationConfig", "EvaluationResult", "evaluate", "write_report", "VARIANTS"]

#: Ways each method is run: plainly, and smoothed with DDS.
VARIANTS = ("vanilla", "dds")


@dataclass
class EvaluationConfig:
    """What to evaluate. Every size is in [0, 1] pixel units.

    Attributes
    ----------
    methods : sequence of str
        Explanation methods (``"raw"``, ``"rollout"``, ``"grad_rollout"``, ``"attn_gradcam"``).
    variants : sequence of str
        ``"vanilla"`` and/or ``"dds"``.
    eps : sequence of float
        Attack radii (pixel units; 0 = clean). The paper sweeps 0..16/255 with ℓ∞.
    attack : str
        ``"pgd"`` (the paper's protocol, on the plain ViT), ``"eot_pgd"`` (adaptive, through
        noise and denoiser) or ``"none"``.
    norm : str
        ``"linf"`` or ``"l2"``.
    attack_steps : int
        PGD steps (step ε/5).
    sigma : float
        DDS noise std.
    n_samples : int
        DDS samples per image.
    k : int
        Top-k size for V_k and the certificate.
    certify : bool
        Also certify faithful regions (costly: ``certify_n`` samples per image and method).
    certify_methods : sequence of str, optional
        Methods to certify (default: all of ``methods``).
    certify_n, certify_n0, beta, alpha : int, int, float, float
        FaithfulRegion settings.
    batch_size : int
        Images per batch (DDS chunks use the same size × samples).
    seed : int
        Seed of attacks and DDS noise.
    figure_images : int
        Images shown in the heat-map figures.
    """

    methods: Sequence[str] = ("raw", "rollout", "grad_rollout")
    variants: Sequence[str] = VARIANTS
    eps: Sequence[float] = (0.0, 2 / 255, 4 / 255, 8 / 255)
    attack: str = "pgd"
    norm: str = "linf"
    attack_steps: int = 10
    sigma: float = 0.25
    n_samples: int = 16
    k: int = 10
    certify: bool = False
    certify_methods: Sequence[str] | None = None
    certify_n: int = 200
    certify_n0: int = 32
    beta: float = 0.6
    alpha: float = 0.01
    batch_size: int = 16
    seed: int = 0
    figure_images: int = 4

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
        if not self.methods:
            raise ValueError("give at least one method")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {list(self.variants)}")
        if self.attack != "none":
            get_attack(self.attack, self.norm)
        if any((not math.isfinite(e)) or e < 0 for e in self.eps):
            raise ValueError(f"eps must be finite and ≥ 0 (pixel units), got {list(self.eps)}")
        if not self.eps:
            raise ValueError("give at least one eps (0 = clean)")
        extra = [m for m in (self.certify_methods or ()) if m not in self.methods]
        if extra:
            raise ValueError(f"certify_methods {extra} must be among methods {list(self.methods)}")
        for name in ("n_samples", "k", "batch_size", "attack_steps", "certify_n", "certify_n0"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")


@dataclass
class EvaluationResult:
    """Aggregated results (plain Python numbers, ready for JSON) and figure material."""

    config: dict
    n_images: int
    accuracy: dict[str, float]
    rows: list[dict]
    certificates: dict[str, dict] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "n_images": self.n_images,
            "accuracy_under_attack": self.accuracy,
            "metrics": self.rows,
            "certificates": self.certificates,
        }


def _batches(dataset: Any, batch_size: int, limit: int | None) -> Iterable[dict]:
    """Yield ``{"image", "label", "mask"}`` batches from a dataset of such samples."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("the dataset is empty: nothing to evaluate")
    for start in range(0, n, batch_size):
        indices = list(range(start, min(start + batch_size, n)))
        if hasattr(dataset, "batch"):
            batch = dataset.batch(indices)
        else:
            samples = [dataset[i] for i in indices]
            masks = [s.get("mask") for s in samples]
            batch = {
                "image": torch.stack([s["image"] for s in samples]),
                "label": torch.tensor([int(s["label"]) for s in samples]),
                "mask": torch.stack(masks) if all(m is not None for m in masks) else None,
            }
        yield batch


def _mean(values: list[torch.Tensor]) -> float:
    if not values:
        return float("nan")
    return float(torch.cat([v.flatten().double() for v in values]).mean())


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    denoiser: Callable | None = None,
    normalization: Normalization | None = None,
    config: EvaluationConfig | None = None,
    n_images: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate explanation faithfulness on ``dataset``.

    Parameters
    ----------
    model : nn.Module
        ViT classifier (eval mode) taking inputs in ``normalization``.
    dataset : Dataset
        Samples ``{"image": 3×H×W in [0, 1], "label": int (-1 = unknown), "mask": 1×H×W bool
        or None}`` (``ShapesBenchmark``, ``ImageFolderWithMasks``, ``ImageNetSegmentation``).
    denoiser : callable, optional
        DDS denoiser (``None`` = identity: randomized smoothing without denoising).
    normalization : Normalization, optional
        The model's input normalisation (default from the model).
    config : EvaluationConfig, optional
        What to run (default :class:`EvaluationConfig()`).
    n_images : int, optional
        Evaluate only the first ``n_images``.
    device : str or torch.device
        Where to run.
    progress : bool
        Show a tqdm progress bar.
    """
    config = config or EvaluationConfig()
    config.validate()
    device = torch.device(device)
    normalization = normalization or resolve_normalization(model)
    attack = None if config.attack == "none" else get_attack(config.attack)
    eps_list = sorted(set(float(e) for e in config.eps) | {0.0})

    explainers: dict[tuple[str, str], Any] = {}
    for method in config.methods:
        if "vanilla" in config.variants:
            explainers[(method, "vanilla")] = AttentionMap(model, method)
        if "dds" in config.variants:
            explainers[(method, "dds")] = DDSAttention(
                model,
                denoiser,
                method,
                sigma=config.sigma,
                n_samples=config.n_samples,
                batch_size=max(config.batch_size * 4, 16),
                input_mean=normalization.mean,
                input_std=normalization.std,
            )

    def token_maps(key, x, target):
        explainer = explainers[key]
        if key[1] == "dds":
            return explainer.token_map(x, target=target, seed=config.seed)
        return explainer.token_map(x, target=target)

    overlaps: dict[tuple, list] = {}
    spearmans: dict[tuple, list] = {}
    segmentation: dict[tuple, SegmentationAccumulator] = {}
    correct = {eps: 0 for eps in eps_list}
    total = 0
    certified_methods = list(config.certify_methods or config.methods)
    r_beta: dict[str, list] = {m: [] for m in certified_methods}
    r_pred: dict[str, list] = {m: [] for m in certified_methods}
    examples: dict[str, Any] = {}
    grid = None

    batches = list(_batches(dataset, config.batch_size, n_images))
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="evaluate", unit="batch")
    for batch_index, batch in enumerate(iterator):
        pixels = batch["image"].to(device)
        masks = batch["mask"]
        masks = None if masks is None else masks.to(device)
        x = normalization.from_pixels(pixels)
        with torch.no_grad():
            predicted = logits_of(model(x)).argmax(1)
        labels = batch["label"].to(device)
        labels = torch.where(labels >= 0, labels, predicted)
        total += len(x)
        clean_maps = {}
        for eps in eps_list:
            if eps == 0 or attack is None or attack.explanation:
                x_eps = x
            else:
                context = AttackContext(model, normalization, denoiser, config.sigma, k=config.k)
                x_eps = normalization.from_pixels(
                    attack.fn(
                        context, normalization.to_pixels(x).clamp(0, 1), labels, eps,
                        norm=config.norm, steps=config.attack_steps, seed=config.seed + batch_index,
                    )
                )  # fmt: skip
            with torch.no_grad():
                correct[eps] += int((logits_of(model(x_eps)).argmax(1) == labels).sum())
            for key in explainers:
                maps = token_maps(key, x_eps, labels)
                if grid is None:
                    grid = explainers[key].grid
                if eps == 0:
                    clean_maps[key] = maps
                cell = (*key, eps)
                overlaps.setdefault(cell, []).append(topk_overlap(clean_maps[key], maps, config.k))
                spearmans.setdefault(cell, []).append(spearman(clean_maps[key], maps))
                if masks is not None:
                    acc = segmentation.setdefault(cell, SegmentationAccumulator(grid=grid))
                    acc.update(maps, masks)
                if batch_index == 0:
                    examples.setdefault("maps", {})[cell] = maps[: config.figure_images].cpu()
            if batch_index == 0:
                examples.setdefault("pixels", {})[eps] = normalization.to_pixels(
                    x_eps[: config.figure_images]
                ).cpu()
        if config.certify:
            for method in certified_methods:
                region = FaithfulRegion(
                    model,
                    denoiser,
                    method,
                    k=config.k,
                    beta=config.beta,
                    alpha=config.alpha,
                    n0=config.certify_n0,
                    n=config.certify_n,
                    sigma=config.sigma,
                    batch_size=max(config.batch_size * 4, 16),
                    input_mean=normalization.mean,
                    input_std=normalization.std,
                )
                certificates = region.certify(x, seed=config.seed)
                r_beta[method].extend(c.radius_beta for c in certificates)
                r_pred[method].extend(
                    c.radius_pred if c.label == int(l) else 0.0
                    for c, l in zip(certificates, labels, strict=True)
                )
                if batch_index == 0:
                    examples.setdefault("regions", {})[method] = certificates[: config.figure_images]

    rows = []
    for (method, variant, eps), values in overlaps.items():
        row = {
            "method": method,
            "variant": variant,
            "eps": eps,
            "eps_255": round(eps * 255, 3),
            "topk_overlap": _mean(values),
            "spearman": _mean(spearmans[(method, variant, eps)]),
        }
        acc = segmentation.get((method, variant, eps))
        if acc is not None:
            seg = acc.compute()
            row.update({"pixel_accuracy": seg.pixel_accuracy, "miou": seg.miou, "map": seg.mean_ap})
        rows.append(row)
    order = {m: i for i, m in enumerate(config.methods)}
    rows.sort(key=lambda r: (order[r["method"]], VARIANTS.index(r["variant"]), r["eps"]))
    certificates = {}
    if config.certify:
        for method in certified_methods:
            curves = certified_curves(r_beta[method], r_pred[method])
            certificates[method] = {
                "r_beta": r_beta[method],
                "r_pred": r_pred[method],
                "radius_grid": curves.radius.tolist(),
                "fraction_r_beta": curves.beta.tolist() if curves.beta is not None else None,
                "fraction_r_pred": curves.pred.tolist() if curves.pred is not None else None,
            }
    examples["grid"] = grid
    examples["patch"] = next(iter(explainers.values())).explainer.adapter.patch_size(model)
    return EvaluationResult(
        config=asdict(config) | {"eps": eps_list},
        n_images=total,
        accuracy={f"{eps:.6g}": correct[eps] / total for eps in eps_list},
        rows=rows,
        certificates=certificates,
        examples=examples,
    )


def write_report(result: EvaluationResult, out_dir: str | Path, title: str = "captum-fvit evaluation") -> dict:
    """Write ``results.json``, ``summary.md``, ``report.html`` and ``figures/*.png``."""
    from ..attention import TokenLayout
    from .figures import certified_curve_plot, heatmap_grid, line_plot, region_overlay
    from .report import Report

    out = Path(out_dir)
    report = Report(out, title)
    config = result.config
    report.add_text(
        "Setup",
        f"{result.n_images} images; methods {', '.join(config['methods'])}; "
        f"attack {config['attack']} ({config['norm']}, {config['attack_steps']} steps) at "
        f"ε = {', '.join(f'{e * 255:g}/255' for e in config['eps'])} (pixel units); DDS σ = "
        f"{config['sigma']:g} with {config['n_samples']} samples; top-k with k = {config['k']}.",
    )
    report.add_table(
        "Accuracy of the plain ViT under attack",
        [{"eps (/255)": round(float(e) * 255, 2), "accuracy": a} for e, a in result.accuracy.items()],
    )
    columns = ["method", "variant", "eps_255", "topk_overlap", "spearman"]
    if any("miou" in r for r in result.rows):
        columns += ["pixel_accuracy", "miou", "map"]
    report.add_table("Explanation metrics (clean vs attacked maps; segmentation vs masks)", result.rows, columns)

    eps_list = config["eps"]
    series = {
        f"{r['method']} {r['variant']}": [
            s["topk_overlap"] for s in result.rows if s["method"] == r["method"] and s["variant"] == r["variant"]
        ]
        for r in result.rows
    }
    x255 = [e * 255 for e in eps_list]
    report.add_figure(
        "topk_overlap_vs_eps",
        line_plot(x255, series, "ε (/255, pixel units)", f"top-{config['k']} overlap V_k", "V_k vs ε"),
        "Top-k overlap between clean and attacked maps against ε",
    )
    if any("miou" in r for r in result.rows):
        miou = {
            name: [
                s["miou"] for s in result.rows if f"{s['method']} {s['variant']}" == name
            ]
            for name in series
        }
        report.add_figure(
            "miou_vs_eps",
            line_plot(x255, miou, "ε (/255, pixel units)", "mIoU", "segmentation mIoU vs ε"),
            "Segmentation mIoU of the maps against the object masks",
        )
    examples = result.examples
    maps = examples.get("maps", {})
    pixels = examples.get("pixels", {})
    if maps and pixels:
        grid, patch = examples["grid"], examples["patch"]
        layout = TokenLayout(0, tuple(grid), tuple(patch))
        top_eps = max(eps_list)
        size = pixels[0.0].shape[-2:]
        for method in config["methods"]:
            columns_ = {}
            for variant in config["variants"]:
                for eps, label in ((0.0, "clean"), (top_eps, f"ε={top_eps * 255:g}/255")):
                    m = maps.get((method, variant, eps))
                    if m is not None:
                        columns_[f"{variant} {label}"] = tokens_to_pixels(m, layout, size)[:, 0]
            report.add_figure(
                f"heatmaps_{method}",
                heatmap_grid(pixels[0.0], columns_, f"{method}: vanilla vs DDS, clean vs attacked"),
                f"{method}: heat maps on clean and attacked images, vanilla and DDS",
            )
    if result.certificates:
        curves = {}
        grid_r = None
        for method, data in result.certificates.items():
            grid_r = data["radius_grid"]
            if data["fraction_r_beta"] is not None:
                curves[f"{method} R_β"] = data["fraction_r_beta"]
            if data["fraction_r_pred"] is not None:
                curves[f"{method} R_pred"] = data["fraction_r_pred"]
        report.add_figure("certified_curves", certified_curve_plot(grid_r, curves), "Certified curves")
        regions = examples.get("regions", {})
        for method, certs in regions.items():
            grid, patch = examples["grid"], examples["patch"]
            layout = TokenLayout(0, tuple(grid), tuple(patch))
            size = pixels[0.0].shape[-2:]
            region_px = tokens_to_pixels(
                torch.stack([c.region.float() for c in certs]), layout, size, mode="nearest"
            )[:, 0] > 0.5
            top = torch.zeros(len(certs), grid[0] * grid[1])
            for i, c in enumerate(certs):
                top[i, c.topk] = 1.0
            top_px = tokens_to_pixels(top, layout, size, mode="nearest")[:, 0] > 0.5
            titles = [f"R_β={c.radius_beta:.3f} R={c.radius:.3f}" for c in certs]
            report.add_figure(
                f"regions_{method}",
                region_overlay(pixels[0.0][: len(certs)], region_px, top_px, titles),
                f"{method}: certified faithful region (green: r_in > 0) and estimated top-k (outlined)",
            )
    return report.write(result.to_dict())
