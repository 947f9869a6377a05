"""Writing the aggregates of an evaluation: ``results.json``, ``results.csv``, ``summary.md``,
``report.html`` and ``figures/*.png``. Every file records the configuration and versions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from ...attention import TokenLayout
from ...space import tokens_to_pixels
from ..experiment.aggregate import EvaluationResult
from ..experiment.variants import VARIANTS

__all__ = ["METRIC_NOTES", "write_csv", "write_report", "setup_items"]

#: Columns of the metric tables (those present are shown).
METRIC_COLUMNS = [
    "method", "variant", "attack", "threat", "eps_255", "n_images", "topk_overlap",
    "topk_overlap_low", "topk_overlap_high", "spearman", "spearman_low", "spearman_high",
    "topk_overlap_indep", "topk_overlap_indep_low", "topk_overlap_indep_high", "floor_overlap",
    "floor_overlap_low", "floor_overlap_high", "accuracy", "smoothed_accuracy",
    "pixel_accuracy", "miou", "map",
]  # fmt: skip


#: One sentence per column of the report's tables: what the number means.
METRIC_NOTES = {
    "method": "The attention method explained (raw, rollout, grad_rollout or attn_gradcam).",
    "variant": "vanilla is the plain attention map of the image; smoothgrad averages it over "
    "noise (Captum NoiseTunnel), identity smooths it without denoising, and dds smooths it by "
    "denoised diffusion smoothing (noise, one-shot denoising, mean over the samples).",
    "attack": "The attack that produced the image (clean: none, at ε = 0).",
    "threat": "transfer attacks differentiate the plain ViT only; adaptive attacks "
    "differentiate through the smoothing itself (noise, denoiser, ViT, method).",
    "eps_255": "The attack budget ε in [0, 1] pixel units times 255; 0 means the clean images.",
    "n_images": "How many images the row averages over.",
    "topk_overlap": "V_k: the fraction of the k highest tokens of the clean image's map that are "
    "still among the k highest of the attacked image's map (1 = the attack moved none; at ε = 0 "
    "the map is compared with itself), with its bootstrap 95% interval over images.",
    "spearman": "Spearman rank correlation between the clean and the attacked map over all "
    "tokens (1 = same ordering), with its bootstrap 95% interval over images.",
    "topk_overlap_indep": "V_k of the attacked map against a clean map of an independent seed "
    "(smoothed variants with the Monte-Carlo floor), with its bootstrap 95% interval.",
    "floor_overlap": "The Monte-Carlo floor: V_k of two clean maps with independent seeds (what "
    "noise alone moves), with its bootstrap 95% interval.",
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
    "topk_overlap_indep": "V_k, independent seeds", "floor_overlap": "Monte-Carlo floor",
}  # fmt: skip

#: Metrics shown with their confidence interval in one cell.
WITH_CI = ("topk_overlap", "spearman", "topk_overlap_indep", "floor_overlap")


def _attack_text(config: dict) -> str:
    attacks = [a for a in config["attack"] if a != "none"]
    if not attacks:
        return "none (clean images only)"
    threats = config.get("threats", {})
    steps = f"{config['attack_steps']} steps"
    if config.get("adaptive_steps") is not None:
        steps += f" (adaptive: {config['adaptive_steps']} × {config['n_eot']} EOT samples)"
    named = ", ".join(f"{a} ({threats[a]})" if threats.get(a) else a for a in attacks)
    return f"{named}; {config['norm']}, {steps}"


def _certify_text(config: dict) -> str:
    return (
        f"{', '.join(config['certify_methods'] or [])}: n = {config['certify_n_samples']}, "
        f"n_select = {config['certify_n_select']}, β = {config['beta']:g}, α = {config['alpha']:g}"
    )


def setup_items(result: EvaluationResult) -> list[tuple[str, str]]:
    """The setup of a run as (name, value) pairs: model, denoiser, data, protocol, versions."""
    config, setup = result.config, result.meta.get("setup", {})
    items = [
        ("Model", str(setup.get("model", "?"))),
        ("Denoiser", str(setup.get("denoiser", "?"))),
        ("Data", f"{setup.get('data', '?')}; {result.n_images} images evaluated"),
        ("Methods", f"{', '.join(config['methods'])}; variants {', '.join(config['variants'])}"),
        ("Attack", _attack_text(config)),
        ("ε", ", ".join(f"{e * 255:g}/255" for e in config["eps"]) + " ([0, 1] pixel units × 255)"),
        ("Smoothing", f"σ = {config['sigma']:g} ([0, 1] pixel units), {config['n_samples']} samples per image"),
        ("Top-k", f"k = {config['k']}"),
        ("Seed", str(config["seed"])),
    ]
    if config.get("certify"):
        items.append(("Certification", _certify_text(config)))
    versions = result.meta.get("versions", {})
    items.append(("Versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None) or "unknown"))
    return items


def _provenance(result: EvaluationResult) -> dict:
    return {
        "config": result.config,
        "setup": result.meta.get("setup", {}),
        "versions": result.meta.get("versions", {}),
    }


def write_csv(result: EvaluationResult, path: Path) -> Path:
    """The metric table as CSV; ``#`` comment lines first hold the configuration and versions
    (``pandas.read_csv(path, comment="#")`` reads the table)."""
    columns = _shown_columns(result.rows)
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
    versions), accuracy under each attack (transfer or adaptive) of the plain and the
    smoothed classifier, the explanation metrics with one sentence per column, figures with
    colour bars and legends outside the axes, certified curves and regions, and a
    drill-down per image.
    """
    from .html import Report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, title)
    report.add_heading("Setup")
    report.add_setup("Model, denoiser, data and versions", setup_items(result))
    report.add_details("Configuration (JSON)", json.dumps(result.config, sort_keys=True, indent=1))
    _accuracy_section(report, result)
    _metrics_section(report, result)
    layout = _layout(result.examples)
    _heatmaps(report, result, layout)
    if result.certificates:
        _certificates_section(report, result, layout)
    _drilldown(report, result, layout)
    paths = report.write(result.to_dict())
    paths["csv"] = write_csv(result, out / "results.csv")
    return paths


def _shown_columns(rows: list[dict]) -> list[str]:
    return [c for c in METRIC_COLUMNS if any(r.get(c) is not None for r in rows)]


def _accuracy_rows(result: EvaluationResult) -> list[dict]:
    """One row per (attack, ε): plain and smoothed accuracy (attack ``clean`` at ε = 0)."""
    threats = result.config.get("threats", {})
    smoothed = result.smoothed_accuracy_by_attack
    rows = []
    for attack, by_eps in result.accuracy_by_attack.items():
        for eps, value in by_eps.items():
            rows.append({
                "attack": attack, "threat": threats.get(attack) or "–",
                "eps_255": round(float(eps) * 255, 2), "plain_accuracy": value,
                "smoothed_accuracy_attack": smoothed.get(attack, {}).get(eps, float("nan")),
            })  # fmt: skip
    return sorted(rows, key=lambda r: (r["eps_255"], r["attack"]))


def _accuracy_section(report, result: EvaluationResult) -> None:
    from .figures import line_plot

    report.add_heading("Accuracy under attack")
    rows = _accuracy_rows(result)
    several = len(set(result.accuracy_by_attack) - {"clean"}) > 1
    columns = (["attack", "threat"] if several else []) + ["eps_255", "plain_accuracy"]
    if result.smoothed_accuracy:
        columns.append("smoothed_accuracy_attack")
    report.add_table("Plain and smoothed classifier under attack", rows, columns,
                     {c: METRIC_NOTES[c] for c in columns}, HEADERS)  # fmt: skip
    eps_list = result.config["eps"]
    if len(eps_list) > 1 and rows:
        x255 = [e * 255 for e in eps_list]
        curves = {"plain ViT": [result.accuracy.get(_eps_key(e), float("nan")) for e in eps_list]}
        if result.smoothed_accuracy:
            curves["smoothed dds"] = [result.smoothed_accuracy.get(_eps_key(e), float("nan")) for e in eps_list]
        report.add_figure(
            "accuracy_vs_eps",
            line_plot(x255, curves, "ε (/255, pixel units)", "accuracy", "accuracy under attack"),
            "Accuracy of the plain ViT and of the smoothed (DDS) classifier against ε "
            "(the strongest attack at each ε)",
        )


def _series(result: EvaluationResult, metric: str) -> dict[str, list[float]]:
    """``"method variant[ attack]"`` → the metric at every ε of the sweep (ε = 0: clean)."""
    attacks = [a for a in result.config["attack"] if a != "none"] or ["none"]
    value = {(r["attack"], r["method"], r["variant"], r["eps"]): r.get(metric, float("nan"))
             for r in result.rows}  # fmt: skip
    pairs = list(dict.fromkeys((r["method"], r["variant"]) for r in result.rows))
    out = {}
    for attack in attacks:
        for method, variant in pairs:
            name = f"{method} {variant}" + (f" {attack}" if len(attacks) > 1 else "")
            out[name] = []
            for e in result.config["eps"]:
                key = ("clean" if e == 0 else attack, method, variant, e)
                out[name].append(value.get(key, value.get((None, method, variant, e), float("nan"))))
    return out


def _metrics_section(report, result: EvaluationResult) -> None:
    from .figures import line_plot

    report.add_heading("Explanation metrics")
    shown = [c for c in _shown_columns(result.rows) if not c.endswith(("_low", "_high"))]
    report.add_table(
        "Mean over images, bootstrap 95% interval in brackets (clean vs attacked maps; "
        "segmentation vs object masks)",
        _display_rows(result.rows, shown), shown,
        {c: METRIC_NOTES[c] for c in shown if c in METRIC_NOTES}, HEADERS,
    )  # fmt: skip
    x255 = [e * 255 for e in result.config["eps"]]
    k = result.config["k"]
    report.add_figure(
        "topk_overlap_vs_eps",
        line_plot(x255, _series(result, "topk_overlap"), "ε (/255, pixel units)",
                  f"top-{k} overlap V_k", "V_k vs ε"),
        "Top-k overlap V_k between clean and attacked maps against ε (higher = more stable); "
        "vanilla dashed with filled markers, smoothed variants solid with hollow markers",
    )  # fmt: skip
    if any("miou" in r for r in result.rows):
        report.add_figure(
            "miou_vs_eps",
            line_plot(x255, _series(result, "miou"), "ε (/255, pixel units)", "mIoU",
                      "segmentation mIoU vs ε"),
            "Segmentation mIoU of the maps against the object masks",
        )  # fmt: skip


def _layout(examples: dict) -> TokenLayout | None:
    if "grid" not in examples:
        return None
    return TokenLayout(0, tuple(examples["grid"]), tuple(examples["patch"]))


def _heatmaps(report, result: EvaluationResult, layout: TokenLayout | None) -> None:
    """Per method: the maps of the first images, clean and at the largest ε, every variant."""
    from .figures import heatmap_grid

    maps, pixels = result.examples.get("maps", {}), result.examples.get("pixels")
    if not maps or pixels is None or layout is None:
        return
    top_eps, size = max(result.config["eps"]), pixels.shape[-2:]
    for method in result.config["methods"]:
        columns = {}
        for variant in result.config["variants"]:
            for eps, label in ((0.0, "clean"), (top_eps, f"ε={top_eps * 255:g}/255")):
                m = maps.get((method, variant, eps))
                if m is not None:
                    columns[f"{variant} {label}"] = tokens_to_pixels(m, layout, size)[:, 0]
        if columns:
            report.add_figure(
                f"heatmaps_{method}",
                heatmap_grid(pixels, columns, f"{method}: every variant, clean and attacked"),
                f"{method}: maps of the first images, clean and attacked, for every variant "
                "(each map min–max scaled: the colour bar shows the scaled value)",
            )


def _certificates_section(report, result: EvaluationResult, layout: TokenLayout | None) -> None:
    from .figures import certified_curve_plot, region_overlay

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
    pixels = result.examples.get("pixels")
    for method, certs in result.examples.get("regions", {}).items():
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


#: Columns of the per-image tables.
DRILL_COLUMNS = ["method", "variant", "attack", "eps_255", "pred", "pred_smoothed", "topk_overlap",
                 "spearman"]  # fmt: skip
DRILL_NOTES = {
    "attack": "The attack that produced the image (clean: none).",
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
    variants = {v: i for i, v in enumerate(VARIANTS)}
    return (row.get("method", ""), variants.get(row.get("variant"), 99), row.get("eps", 0.0),
            str(row.get("attack")))  # fmt: skip


def _drill_rows(explain: list[dict]) -> tuple[list[dict], list[str]]:
    columns = [c for c in DRILL_COLUMNS if c != "attack" or any(r.get("attack") for r in explain)]
    rows = [
        {c: r.get(c, "") for c in columns}
        | {"eps_255": round(r["eps"] * 255, 2),
           "pred_smoothed": "–" if r.get("pred_smoothed") is None else r["pred_smoothed"]}
        for r in sorted(explain, key=_drill_order)
    ]  # fmt: skip
    return rows, columns


def _image_maps(maps: dict, position: int, layout: TokenLayout, size) -> dict[str, dict[str, torch.Tensor]]:
    grid: dict[str, dict[str, torch.Tensor]] = {}
    for (method, variant, eps), m in maps.items():
        if position < len(m):
            label = "clean" if eps == 0 else f"ε={eps * 255:g}/255"
            pixels = tokens_to_pixels(m[position : position + 1], layout, size)[0, 0]
            grid.setdefault(f"{method} {variant}", {})[label] = pixels
    return grid


def _drilldown(report, result: EvaluationResult, layout: TokenLayout | None) -> None:
    """Per image of the figure material: predictions, metrics, radii and every map."""
    from .figures import drilldown_maps

    pixels, maps = result.examples.get("pixels"), result.examples.get("maps", {})
    if pixels is None or not len(pixels):
        return
    report.add_heading("Per image")
    records = [r for r in result.records if "image" in r]
    for position, image in enumerate(sorted({r["image"] for r in records})[: len(pixels)]):
        rows = [r for r in records if r["image"] == image]
        explain = [r for r in rows if r.get("kind") == "explain"]
        certify = [r for r in rows if r.get("kind") == "certify"]
        first = explain[0] if explain else rows[0]
        name = f" ({first['name']})" if first.get("name") else ""
        known = "" if first.get("label_known", True) else " (no label: the clean prediction)"
        report.add_heading(f"Image {image}{name}: class {first.get('label', '?')}{known}", 3)
        if explain:
            table, columns = _drill_rows(explain)
            report.add_table(f"Image {image}: predictions and map stability", table, columns,
                             DRILL_NOTES if position == 0 else None, DRILL_HEADERS)  # fmt: skip
        if certify:
            report.add_table(
                f"Image {image}: certificates",
                [{c: r.get(c, "") for c in CERT_COLUMNS} for r in certify],
                CERT_COLUMNS, CERT_NOTES if position == 0 else None, DRILL_HEADERS,
            )  # fmt: skip
        grid = _image_maps(maps, position, layout, pixels.shape[-2:]) if layout is not None else {}
        if grid:
            report.add_figure(
                f"image_{image}_maps",
                drilldown_maps(pixels[position], grid, f"image {image}: every map, clean and attacked"),
                f"Image {image}: the maps of every method and variant on the clean and the "
                "attacked image (each min–max scaled; the attacked maps are drawn over the "
                "clean image, from which the attack differs by at most ε)",
            )
