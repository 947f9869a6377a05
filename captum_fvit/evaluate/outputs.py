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

__all__ = ["METRIC_NOTES", "write_csv", "write_report", "setup_items", "setup_text"]

#: Columns of the metric tables (those present are shown).
METRIC_COLUMNS = [
    "method", "variant", "eps_255", "n_images", "topk_overlap", "topk_overlap_low",
    "topk_overlap_high", "spearman", "spearman_low", "spearman_high", "accuracy",
    "smoothed_accuracy", "pixel_accuracy", "miou", "map",
]  # fmt: skip


#: One sentence per column of the report's tables: what the number means.
METRIC_NOTES = {
    "method": "The attention method explained (raw, rollout, grad_rollout or attn_gradcam).",
    "variant": "vanilla is the plain attention map of the image; dds is the same map smoothed "
    "by denoised diffusion smoothing (noise, one-shot denoising, mean over the samples).",
    "eps_255": "The attack budget ε in [0, 1] pixel units times 255; 0 means the clean images.",
    "n_images": "How many images the row averages over.",
    "topk_overlap": "V_k: the fraction of the k highest tokens of the clean image's map that are "
    "still among the k highest of the attacked image's map (1 = the attack moved none; at ε = 0 "
    "the map is compared with itself), with its bootstrap 95% interval over images.",
    "spearman": "Spearman rank correlation between the clean and the attacked map over all "
    "tokens (1 = same ordering), with its bootstrap 95% interval over images.",
    "accuracy": "Fraction of the images the plain ViT classifies correctly at this ε (against "
    "the label, or the clean prediction when the data has no labels).",
    "smoothed_accuracy": "The same for the smoothed classifier, the majority vote of the ViT "
    "over the DDS samples (DDS rows only).",
    "pixel_accuracy": "Segmentation test: the fraction of labelled pixels called correctly "
    "object or background when the map is thresholded at its mean.",
    "miou": "Segmentation test: intersection over union of that thresholded map with the "
    "object mask, summed over the images, averaged over object and background.",
    "map": "Segmentation test: mean over images of the average precision of the continuous "
    "map as a detector of the object's pixels (1 = every object pixel outranks the background).",
    "plain_accuracy": "Fraction of the images the plain ViT classifies correctly after the attack.",
    "smoothed_accuracy_attack": "Fraction the smoothed classifier (majority vote over the DDS "
    "samples, the prediction the certificates are about) classifies correctly after the attack.",
}

#: Column headers of the HTML and Markdown tables.
HEADERS = {
    "eps_255": "ε (/255)", "n_images": "images", "topk_overlap": "top-k overlap V_k",
    "spearman": "Spearman ρ", "smoothed_accuracy": "smoothed accuracy",
    "pixel_accuracy": "pixel accuracy", "miou": "mIoU", "map": "mAP",
    "plain_accuracy": "plain ViT accuracy", "smoothed_accuracy_attack": "smoothed classifier accuracy",
}  # fmt: skip

#: Metrics shown with their confidence interval in one cell.
WITH_CI = ("topk_overlap", "spearman")


def setup_items(result: EvaluationResult) -> list[tuple[str, str]]:
    """The setup of a run as (name, value) pairs: model, denoiser, data, protocol, versions."""
    config, setup = result.config, result.meta.get("setup", {})
    attack = (
        "none (clean images only)"
        if config["attack"] == "none"
        else f"{config['attack']} ({config['norm']}, {config['attack_steps']} steps)"
    )
    items = [
        ("Model", str(setup.get("model", "?"))),
        ("Denoiser", str(setup.get("denoiser", "?"))),
        ("Data", f"{setup.get('data', '?')}; {result.n_images} images evaluated"),
        ("Methods", f"{', '.join(config['methods'])}; variants {', '.join(config['variants'])}"),
        ("Attack", attack),
        ("ε", ", ".join(f"{e * 255:g}/255" for e in config["eps"]) + " ([0, 1] pixel units × 255)"),
        ("DDS", f"σ = {config['sigma']:g} ([0, 1] pixel units), {config['n_samples']} samples per image"),
        ("Top-k", f"k = {config['k']}"),
        ("Seed", str(config["seed"])),
    ]
    if config.get("certify"):
        items.append((
            "Certification",
            f"{', '.join(config['certify_methods'] or [])}: n = {config['certify_n']}, "
            f"n_select = {config['certify_n0']}, β = {config['beta']:g}, α = {config['alpha']:g}",
        ))  # fmt: skip
    versions = result.meta.get("versions", {})
    items.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None) or "unknown"))
    return items


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


def _ci_cell(row: dict, metric: str) -> str:
    value, low, high = row.get(metric), row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if value is None:
        return ""
    if low is None or high is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _display_rows(rows: list[dict], columns: list[str]) -> list[dict]:
    out = []
    for row in rows:
        shown = {c: row.get(c, "") for c in columns}
        for metric in WITH_CI:
            if metric in columns:
                shown[metric] = _ci_cell(row, metric)
        out.append(shown)
    return out


def _eps_key(eps: float) -> str:
    return f"{eps:.6g}"


def write_report(
    result: EvaluationResult, out_dir: str | Path, title: str = "captum-fvit evaluation"
) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv``, ``summary.md``, ``report.html`` and figures.

    The HTML page (self-contained) has: the setup (model, denoiser, data, protocol,
    versions), accuracy under attack of the plain and the smoothed classifier, the
    explanation metrics with one sentence per column, figures with colour bars and legends
    outside the axes, certified curves and regions, and a drill-down per image.
    """
    from .figures import certified_curve_plot, heatmap_grid, line_plot, region_overlay
    from .report import Report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, title)
    config = result.config
    report.add_heading("Setup")
    report.add_setup("Model, denoiser, data and versions", setup_items(result))
    report.add_details("Configuration (JSON)", json.dumps(config, sort_keys=True, indent=1))

    eps_list = config["eps"]
    report.add_heading("Accuracy under attack")
    accuracy_rows = [
        {
            "eps_255": round(float(e) * 255, 2),
            "plain_accuracy": result.accuracy.get(_eps_key(e), float("nan")),
            "smoothed_accuracy_attack": result.smoothed_accuracy.get(_eps_key(e), float("nan")),
        }
        for e in sorted({float(k) for k in result.accuracy} | {float(k) for k in result.smoothed_accuracy})
    ]
    accuracy_columns = ["eps_255", "plain_accuracy"]
    if result.smoothed_accuracy:
        accuracy_columns.append("smoothed_accuracy_attack")
    report.add_table(
        "Plain and smoothed classifier under attack",
        accuracy_rows,
        accuracy_columns,
        {c: METRIC_NOTES[c] for c in accuracy_columns},
        HEADERS,
    )
    x255 = [e * 255 for e in eps_list]
    if len(eps_list) > 1 and accuracy_rows:
        curves = {"plain ViT": [result.accuracy.get(_eps_key(e), float("nan")) for e in eps_list]}
        if result.smoothed_accuracy:
            curves["smoothed dds"] = [result.smoothed_accuracy.get(_eps_key(e), float("nan")) for e in eps_list]
        report.add_figure(
            "accuracy_vs_eps",
            line_plot(x255, curves, "ε (/255, pixel units)", "accuracy", "accuracy under attack"),
            "Accuracy of the plain ViT and of the smoothed (DDS) classifier against ε",
        )

    report.add_heading("Explanation metrics")
    columns = [c for c in METRIC_COLUMNS if any(c in r for r in result.rows)]
    shown = [c for c in columns if not c.endswith(("_low", "_high"))]
    report.add_table(
        "Mean over images, bootstrap 95% interval in brackets (clean vs attacked maps; "
        "segmentation vs object masks)",
        _display_rows(result.rows, shown),
        shown,
        {c: METRIC_NOTES[c] for c in shown if c in METRIC_NOTES},
        HEADERS,
    )
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
        "Top-k overlap V_k between clean and attacked maps against ε (higher = more stable); "
        "vanilla dashed with filled markers, dds solid with hollow markers",
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
                    f"{method}: maps of the first images, clean and attacked, vanilla and DDS "
                    "(each map min–max scaled: the colour bar shows the scaled value)",
                )
    if result.certificates:
        report.add_heading("Certificates")
        curves: dict[str, list[float]] = {}
        grid_r = None
        for method, data in result.certificates.items():
            grid_r = data["radius_grid"]  # one grid shared by every method
            curves[f"{method} R_β"] = data["fraction_r_beta"]
            curves[f"{method} R_pred"] = data["fraction_r_pred"]
        report.add_figure(
            "certified_curves",
            certified_curve_plot(grid_r, curves),
            "Certified curves: the fraction of images whose certified R_β (explanation) or "
            "R_pred (correct prediction) is at least r",
        )
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
    _drilldown(report, result, layout)
    paths = report.write(result.to_dict())
    paths["csv"] = write_csv(result, out / "results.csv")
    return paths


#: Columns of the per-image tables.
DRILL_COLUMNS = ["method", "variant", "eps_255", "pred", "pred_smoothed", "topk_overlap", "spearman"]
DRILL_NOTES = {
    "pred": "The plain ViT's predicted class on the (attacked) image.",
    "pred_smoothed": "The smoothed classifier's class (majority vote over the DDS samples; DDS rows only).",
    "topk_overlap": "V_k of this image: the share of its clean map's top-k tokens kept after the attack.",
    "spearman": "Spearman correlation of this image's clean and attacked maps.",
}
CERT_COLUMNS = ["method", "label_smoothed", "abstain", "p_lower", "radius_beta", "radius_pred", "radius"]
CERT_NOTES = {
    "label_smoothed": "The class the smoothed classifier certifies.",
    "abstain": "True when the prediction certificate abstains (lower bound on the class probability ≤ 1/2).",
    "p_lower": "Lower confidence bound on the probability of that class under the noise.",
    "radius_beta": "Certified R_β: ℓ2 radius ([0, 1] pixel units) within which ⌈βk⌉ of the top-k tokens stay.",
    "radius_pred": "Certified R_pred: ℓ2 radius within which the smoothed prediction cannot change.",
    "radius": "The faithful radius R = min(R_β, R_pred).",
}
DRILL_HEADERS = {**HEADERS, "pred": "prediction", "pred_smoothed": "smoothed prediction",
                 "label_smoothed": "certified class", "p_lower": "p lower",
                 "radius_beta": "R_β", "radius_pred": "R_pred", "radius": "R"}  # fmt: skip


def _drill_order(row: dict) -> tuple:
    variants = {"vanilla": 0, "dds": 1}
    return (row.get("method", ""), variants.get(row.get("variant"), 2), row.get("eps", 0.0))


def _drilldown(report, result: EvaluationResult, layout: TokenLayout | None) -> None:
    """Per image of the figure material: predictions, metrics, radii and every map."""
    from .figures import drilldown_maps

    examples = result.examples
    pixels, maps = examples.get("pixels"), examples.get("maps", {})
    if pixels is None or not len(pixels):
        return
    report.add_heading("Per image")
    records = [r for r in result.records if "image" in r]
    images = sorted({r["image"] for r in records})[: len(pixels)]
    size = pixels.shape[-2:]
    for position, image in enumerate(images):
        rows = [r for r in records if r["image"] == image]
        explain = [r for r in rows if r.get("kind") == "explain"]
        certify = [r for r in rows if r.get("kind") == "certify"]
        first = explain[0] if explain else rows[0]
        name = f" ({first['name']})" if first.get("name") else ""
        label = first.get("label", "?")
        known = "" if first.get("label_known", True) else " (no label: the clean prediction)"
        report.add_heading(f"Image {image}{name}: class {label}{known}", 3)
        if explain:
            report.add_table(
                f"Image {image}: predictions and map stability",
                [{c: r.get(c, "") for c in DRILL_COLUMNS}
                 | {"eps_255": round(r["eps"] * 255, 2),
                    "pred_smoothed": "–" if r.get("pred_smoothed") is None else r["pred_smoothed"]}
                 for r in sorted(explain, key=_drill_order)],
                DRILL_COLUMNS, DRILL_NOTES if position == 0 else None, DRILL_HEADERS,
            )  # fmt: skip
        if certify:
            report.add_table(
                f"Image {image}: certificates",
                [{c: r.get(c, "") for c in CERT_COLUMNS} for r in certify],
                CERT_COLUMNS, CERT_NOTES if position == 0 else None, DRILL_HEADERS,
            )  # fmt: skip
        if layout is None or not maps:
            continue
        grid: dict[str, dict[str, torch.Tensor]] = {}
        for (method, variant, eps), m in maps.items():
            if position < len(m):
                label_ = "clean" if eps == 0 else f"ε={eps * 255:g}/255"
                grid.setdefault(f"{method} {variant}", {})[label_] = tokens_to_pixels(
                    m[position : position + 1], layout, size
                )[0, 0]
        if grid:
            report.add_figure(
                f"image_{image}_maps",
                drilldown_maps(pixels[position], grid, f"image {image}: every map, clean and attacked"),
                f"Image {image}: the maps of every method and variant on the clean and the "
                "attacked image (each min–max scaled; the attacked maps are drawn over the "
                "clean image, from which the attack differs by at most ε)",
            )
