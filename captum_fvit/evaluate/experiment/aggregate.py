"""Aggregates computed from per-image rows: metric tables with bootstrap CIs, accuracy under
attack, segmentation scores and certified curves.

Everything here is a pure function of the rows, so a resumed, sharded or merged run gives
the same aggregates as one uninterrupted process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..metrics.curves import certified_fraction
from .rows import group_rows, mean_ci
from .variants import VARIANTS

__all__ = [
    "EvaluationResult",
    "accuracy_by_attack",
    "aggregate_rows",
    "certificate_curves",
    "metric_table",
    "smoothed_accuracy_under_attack",
]


@dataclass
class EvaluationResult:
    """Aggregated results (plain Python numbers, ready for JSON) and figure material.

    Attributes
    ----------
    config : dict
        The full configuration (:meth:`EvaluationConfig.to_dict`).
    n_images : int
        Images evaluated.
    accuracy : dict
        ``"{eps:.6g}"`` → accuracy of the plain model under the strongest attack of the run
        (the lowest accuracy over its attacks at that ε).
    rows : list of dict
        One aggregated row per (attack, method, variant, ε): means with bootstrap 95 % CIs,
        and the attack's threat (``"transfer"``/``"adaptive"``; ``None`` for clean rows).
    certificates : dict
        Per certified method: radii per image and certified curves on a shared grid.
    examples : dict
        Figure material (maps and pixels of the first images).
    records : list of dict
        The per-image rows the aggregates were computed from.
    meta : dict
        ``versions`` and ``setup`` (model, denoiser, data).
    smoothed_accuracy : dict
        ``"{eps:.6g}"`` → accuracy of the smoothed classifier (majority vote over the DDS
        samples) under the strongest attack; empty without DDS rows.
    accuracy_by_attack, smoothed_accuracy_by_attack : dict
        ``attack`` → ``"{eps:.6g}"`` → accuracy (ε = 0 under ``"clean"``).
    """

    config: dict
    n_images: int
    accuracy: dict[str, float]
    rows: list[dict]
    certificates: dict[str, dict] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    smoothed_accuracy: dict[str, float] = field(default_factory=dict)
    accuracy_by_attack: dict[str, dict[str, float]] = field(default_factory=dict)
    smoothed_accuracy_by_attack: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "setup": self.meta.get("setup", {}),
            "versions": self.meta.get("versions", {}),
            "n_images": self.n_images,
            "accuracy_under_attack": self.accuracy,
            "smoothed_accuracy_under_attack": self.smoothed_accuracy,
            "accuracy_by_attack": self.accuracy_by_attack,
            "smoothed_accuracy_by_attack": self.smoothed_accuracy_by_attack,
            "metrics": self.rows,
            "certificates": self.certificates,
        }


def _ci(prefix: str, values: list[float], seed: int) -> dict[str, float]:
    mean, low, high, _ = mean_ci(values, seed=seed)
    return {prefix: mean, f"{prefix}_low": low, f"{prefix}_high": high}


def _segmentation_scores(group: list[dict]) -> dict[str, float]:
    labelled = sum(g["seg_labelled"] for g in group)
    inter = torch.tensor([g["seg_intersection"] for g in group], dtype=torch.float64).sum(0)
    union = torch.tensor([g["seg_union"] for g in group], dtype=torch.float64).sum(0)
    iou = inter[union > 0] / union[union > 0]
    ap = [g["ap"] for g in group if g["ap"] is not None and math.isfinite(g["ap"])]
    return {
        "pixel_accuracy": sum(g["seg_correct"] for g in group) / labelled if labelled else math.nan,
        "miou": float(iou.mean()) if iou.numel() else math.nan,
        "map": sum(ap) / len(ap) if ap else math.nan,
    }


def _metric_row(key: tuple, group: list[dict], seed: int) -> dict[str, Any]:
    attack, method, variant, eps = key
    row: dict[str, Any] = {
        "attack": attack, "threat": group[0].get("threat"), "method": method, "variant": variant,
        "eps": eps, "eps_255": round(eps * 255, 3), "n_images": len(group),
    }  # fmt: skip
    for metric in ("topk_overlap", "spearman", "topk_overlap_indep", "floor_overlap"):
        if all(metric in g for g in group):
            row |= _ci(metric, [g[metric] for g in group], seed)
    row["accuracy"] = sum(bool(g["correct"]) for g in group) / len(group)
    smoothed = [g["pred_smoothed"] == g["label"] for g in group if g.get("pred_smoothed") is not None]
    if smoothed:
        row["smoothed_accuracy"] = sum(smoothed) / len(smoothed)
    if all("seg_labelled" in g for g in group):
        row |= _segmentation_scores(group)
    return row


def metric_table(rows: Iterable[dict], config: dict) -> list[dict]:
    """One aggregated row per (attack, method, variant, ε) of the ``"explain"`` rows."""
    explain = [r for r in rows if r.get("kind") == "explain"]
    groups = group_rows(explain, ("attack", "method", "variant", "eps"))
    seed = int(config.get("seed", 0))
    table = [_metric_row(key, group, seed) for key, group in groups.items()]
    methods = {m: i for i, m in enumerate(config["methods"])}
    variants = {v: i for i, v in enumerate(VARIANTS)}
    attacks = {a: i for i, a in enumerate(["clean", *config.get("attack", [])])}
    table.sort(key=lambda r: (methods.get(r["method"], 99), variants.get(r["variant"], 99),
                              r["eps"], attacks.get(r["attack"], 99)))  # fmt: skip
    return table


def accuracy_by_attack(rows: Iterable[dict], smoothed: bool = False) -> dict[str, dict[str, float]]:
    """Accuracy per attack and ε of the plain model (``smoothed=False``, every row's
    ``correct``) or of the smoothed classifier (the rows' ``pred_smoothed``): per image the
    mean over its rows (methods, variants), then the mean over images."""
    per_image: dict[tuple, list[bool]] = {}
    for r in rows:
        if r.get("kind") != "explain" or (smoothed and r.get("pred_smoothed") is None):
            continue
        ok = r["pred_smoothed"] == r["label"] if smoothed else bool(r["correct"])
        per_image.setdefault((r.get("attack", "clean"), r["eps"], r["image"]), []).append(ok)
    by_attack: dict[str, dict[float, list[float]]] = {}
    for (attack, eps, _), flags in per_image.items():
        by_attack.setdefault(attack, {}).setdefault(eps, []).append(sum(flags) / len(flags))
    return {
        attack: {f"{eps:.6g}": sum(v) / len(v) for eps, v in sorted(by_eps.items())}
        for attack, by_eps in by_attack.items()
    }


def _strongest(by_attack: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per ε the lowest accuracy over the attacks (ε = 0: the clean accuracy)."""
    worst: dict[str, float] = {}
    for by_eps in by_attack.values():
        for eps, value in by_eps.items():
            worst[eps] = min(value, worst.get(eps, value))
    return dict(sorted(worst.items(), key=lambda item: float(item[0])))


def smoothed_accuracy_under_attack(rows: Iterable[dict]) -> dict[str, float]:
    """Accuracy of the smoothed classifier per ε (from the rows' ``pred_smoothed``) under the
    strongest attack."""
    return _strongest(accuracy_by_attack(rows, smoothed=True))


def certificate_curves(rows: Iterable[dict], methods: list[str], num: int = 51) -> dict[str, dict]:
    """Per certified method: ``r_beta``/``r_pred`` per image (ordered by image) and the
    certified curves, all on ONE radius grid shared by every method (so a method that
    certifies nothing and one that certifies something can be plotted together)."""
    certify = [r for r in rows if r.get("kind") == "certify"]
    by_method = group_rows(sorted(certify, key=lambda r: r["image"]), ("method",))
    radii = {
        m: (
            [r["radius_beta"] for r in by_method.get((m,), [])],
            [r["radius_pred_correct"] for r in by_method.get((m,), [])],
        )
        for m in methods
        if (m,) in by_method
    }
    finite = [v for rb, rp in radii.values() for v in (*rb, *rp) if math.isfinite(v) and v > 0]
    top = max(finite, default=0.0)
    grid = torch.linspace(0.0, top, num, dtype=torch.float64) if top > 0 else torch.zeros(1, dtype=torch.float64)
    out = {}
    for method, (r_beta, r_pred) in radii.items():
        out[method] = {
            "images": [r["image"] for r in by_method[(method,)]],
            "r_beta": r_beta,
            "r_pred": r_pred,
            "radius_grid": grid.tolist(),
            "fraction_r_beta": certified_fraction(r_beta, grid).tolist(),
            "fraction_r_pred": certified_fraction(r_pred, grid).tolist(),
        }
    return out


def aggregate_rows(
    rows: list[dict], config: dict, meta: dict | None = None, examples: dict | None = None
) -> EvaluationResult:
    """The :class:`EvaluationResult` of the per-image ``rows`` (header rows are ignored)."""
    data = [r for r in rows if r.get("kind") != "run"]
    images = {r["image"] for r in data}
    certified = config.get("certify_methods") or []
    by_attack = accuracy_by_attack(data)
    smoothed_by_attack = accuracy_by_attack(data, smoothed=True)
    return EvaluationResult(
        config=config,
        n_images=len(images),
        accuracy=_strongest(by_attack),
        rows=metric_table(data, config),
        certificates=certificate_curves(data, list(certified)) if config.get("certify") else {},
        examples=examples or {},
        records=data,
        meta=meta or {},
        smoothed_accuracy=_strongest(smoothed_by_attack),
        accuracy_by_attack=by_attack,
        smoothed_accuracy_by_attack=smoothed_by_attack,
    )
