"""Writing the aggregates of an evaluation: ``results.json``, ``results.csv``, ``summary.md``,
``report.html`` and ``figures/*.png``. Every file records the configuration and versions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from ..attention import TokenLayout
from ..space import tokens_to_pixels
from .aggregate import EvaluationResult

__all__ = ["write_csv", "write_report", "setup_text"]

#: Columns of the metric tables (those present are shown).
METRIC_COLUMNS = [
    "method", "variant", "eps_255", "n_images", "topk_overlap", "topk_overlap_low",
    "topk_overlap_high", "spearman", "spearman_low", "spearman_high", "accuracy",
    "smoothed_accuracy", "pixel_accuracy", "miou", "map",
]  # fmt: skip


def setup_text(result: EvaluationResult) -> str:
    """One paragraph naming model, denoiser, data and the protocol."""
    config, setup = result.config, result.meta.get("setup", {})
    attack = (
        "no attack"
        if config["attack"] == "none"
        else f"attack {config['attack']} ({config['norm']}, {config['attack_steps']} steps)"
    )
    text = (
        f"Model: {setup.get('model', '?')}. Denoiser: {setup.get('denoiser', '?')}. "
        f"Data: {setup.get('data', '?')} ({result.n_images} images evaluated). "
        f"Methods {', '.join(config['methods'])} ({', '.join(config['variants'])}); {attack} at "
        f"ε = {', '.join(f'{e * 255:g}/255' for e in config['eps'])} (pixel units); DDS σ = "
        f"{config['sigma']:g} with {config['n_samples']} samples; top-k with k = {config['k']}; "
        f"seed {config['seed']}."
    )
    if config.get("certify"):
        text += (
            f" Certified {', '.join(config['certify_methods'] or [])} with n = "
            f"{config['certify_n']}, n_select = {config['certify_n0']}, β = {config['beta']:g}, "
            f"α = {config['alpha']:g}."
        )
    return text


def _provenance(result: EvaluationResult) -> dict:
    return {
        "config": result.config,
        "setup": result.meta.get("setup", {}),
        "versions": result.meta.get("versions", {}),
    }


def write_csv(result: EvaluationResult, path: Path) -> Path:
    """The metric table as CSV; ``#`` comment lines first hold the configuration and versions
    (``pandas.read_csv(path, comment="#")`` reads the table)."""
    columns = [c for c in METRIC_COLUMNS if any(c in r for r in result.rows)]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        for name, value in _provenance(result).items():
            handle.write(f"# {name}: {json.dumps(value, sort_keys=True)}\n")
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def write_report(
    result: EvaluationResult, out_dir: str | Path, title: str = "captum-fvit evaluation"
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``summary.md``, ``report.html`` and figures."""
    from .figures import certified_curve_plot, heatmap_grid, line_plot, region_overlay
    from .report import Report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, title)
    config = result.config
    report.add_text("Setup", setup_text(result))
    versions = result.meta.get("versions", {})
    report.add_text(
        "Versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None) or "unknown"
    )
    report.add_text("Configuration", json.dumps(config, sort_keys=True))
    report.add_table(
        "Accuracy of the plain ViT under attack",
        [{"eps (/255)": round(float(e) * 255, 2), "accuracy": a} for e, a in result.accuracy.items()],
    )
    columns = [c for c in METRIC_COLUMNS if any(c in r for r in result.rows)]
    report.add_table(
        "Explanation metrics (mean and bootstrap 95% CI over images; clean vs attacked maps; "
        "segmentation vs masks)",
        result.rows,
        columns,
    )
    eps_list = config["eps"]
    x255 = [e * 255 for e in eps_list]
    names = list(dict.fromkeys(f"{r['method']} {r['variant']}" for r in result.rows))

    def series(metric: str) -> dict[str, list[float]]:
        return {
            name: [
                next((r[metric] for r in result.rows
                      if f"{r['method']} {r['variant']}" == name and r["eps"] == e), float("nan"))
                for e in eps_list
            ]
            for name in names
        }  # fmt: skip

    report.add_figure(
        "topk_overlap_vs_eps",
        line_plot(x255, series("topk_overlap"), "ε (/255, pixel units)", f"top-{config['k']} overlap V_k", "V_k vs ε"),
        "Top-k overlap between clean and attacked maps against ε",
    )
    if any("miou" in r for r in result.rows):
        report.add_figure(
            "miou_vs_eps",
            line_plot(x255, series("miou"), "ε (/255, pixel units)", "mIoU", "segmentation mIoU vs ε"),
            "Segmentation mIoU of the maps against the object masks",
        )
    examples = result.examples
    maps, pixels = examples.get("maps", {}), examples.get("pixels")
    layout = None
    if "grid" in examples:
        layout = TokenLayout(0, tuple(examples["grid"]), tuple(examples["patch"]))
    if maps and pixels is not None and layout is not None:
        top_eps = max(eps_list)
        size = pixels.shape[-2:]
        for method in config["methods"]:
            columns_ = {}
            for variant in config["variants"]:
                for eps, label in ((0.0, "clean"), (top_eps, f"ε={top_eps * 255:g}/255")):
                    m = maps.get((method, variant, eps))
                    if m is not None:
                        columns_[f"{variant} {label}"] = tokens_to_pixels(m, layout, size)[:, 0]
            if columns_:
                report.add_figure(
                    f"heatmaps_{method}",
                    heatmap_grid(pixels, columns_, f"{method}: vanilla vs DDS, clean vs attacked"),
                    f"{method}: heat maps on clean and attacked images, vanilla and DDS",
                )
    if result.certificates:
        curves: dict[str, list[float]] = {}
        grid_r = None
        for method, data in result.certificates.items():
            grid_r = data["radius_grid"]  # one grid shared by every method
            curves[f"{method} R_β"] = data["fraction_r_beta"]
            curves[f"{method} R_pred"] = data["fraction_r_pred"]
        report.add_figure("certified_curves", certified_curve_plot(grid_r, curves), "Certified curves")
        for method, certs in examples.get("regions", {}).items():
            if layout is None or pixels is None or not certs:
                continue
            size = pixels.shape[-2:]
            regions = torch.stack([c["region"].float() for c in certs])
            region_px = tokens_to_pixels(regions, layout, size, mode="nearest")[:, 0] > 0.5
            top = torch.zeros(len(certs), layout.num_patches)
            for i, c in enumerate(certs):
                top[i, c["topk"]] = 1.0
            top_px = tokens_to_pixels(top, layout, size, mode="nearest")[:, 0] > 0.5
            titles = [f"R_β={c['radius_beta']:.3f} R={c['radius']:.3f}" for c in certs]
            report.add_figure(
                f"regions_{method}",
                region_overlay(pixels[: len(certs)], region_px, top_px, titles),
                f"{method}: certified faithful region (green: r_in > 0) and estimated top-k (outlined)",
            )
    paths = report.write(result.to_dict())
    paths["csv"] = write_csv(result, out / "results.csv")
    return paths
