"""One batch of an evaluation, as small steps that turn images into per-image rows.

:class:`Pipeline` is built once per run (explainers, FaithfulRegions and the attack are
constructed once, not per batch); :meth:`Pipeline.run_batch` takes one global batch and
returns its rows — one per (image, method, variant, ε) of kind ``"explain"`` and, when
certifying, one per (image, certified method) of kind ``"certify"`` — plus the figure
material of batch 0. Rows are plain JSON values; a row depends only on its batch (same
images, same seed ``seed + batch``), never on the rank or on what ran before, so a resumed or
sharded run writes the same rows as one uninterrupted process.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attr import AttentionMap, DDSAttention, FaithfulRegion
from ..errors import NonFiniteError
from ..model_io import logits_of
from ..space import Normalization
from .attacks import AttackContext, AttackSpec, get_attack
from .config import EvaluationConfig
from .metrics import spearman, topk_overlap
from .segmentation import segmentation_counts

__all__ = ["KEY_FIELDS", "Batch", "BatchOutput", "ImageFailure", "Pipeline", "load_batch"]

#: Fields identifying a row (``kind`` is "explain", "certify" or "run").
KEY_FIELDS = ("kind", "image", "method", "variant", "eps")


class ImageFailure(NonFiniteError):
    """A non-finite value stopped the evaluation of one image; no row was written for it."""

    def __init__(self, image: int, name: str | None, error: NonFiniteError) -> None:
        super().__init__(error.stage, error.input_index, error.sample_index)
        self.image = image
        label = f"image {image}" + (f" ({name})" if name else "")
        self.args = (f"{label}: {error}",)


@dataclass
class Batch:
    """One global batch: dataset indices, pixels in [0, 1], labels (-1 unknown), masks."""

    index: int
    images: list[int]
    pixels: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    names: list[str | None]


@dataclass
class BatchOutput:
    """Rows of one batch and, for batch 0, the figure material."""

    rows: list[dict]
    examples: dict[str, Any] = field(default_factory=dict)


def _name_of(dataset: Any, index: int) -> str | None:
    paths = getattr(dataset, "paths", None)
    if paths is None:
        return None
    root = getattr(dataset, "root", None)
    path = paths[index]
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except (AttributeError, ValueError):
        return str(path)


def load_batch(dataset: Any, batch_index: int, images: Sequence[int]) -> Batch:
    """Load dataset items ``images`` (``dataset.batch`` when it has one)."""
    images = list(images)
    if hasattr(dataset, "batch"):
        data = dataset.batch(images)
        pixels, labels, masks = data["image"], data["label"], data.get("mask")
    else:
        samples = [dataset[i] for i in images]
        pixels = torch.stack([s["image"] for s in samples])
        labels = torch.tensor([int(s["label"]) for s in samples])
        found = [s.get("mask") for s in samples]
        masks = torch.stack(found) if all(m is not None for m in found) else None
    names = [_name_of(dataset, i) for i in images]
    return Batch(batch_index, images, pixels, torch.as_tensor(labels).long(), masks, names)


def _region(model, denoiser, method, config: EvaluationConfig, normalization) -> FaithfulRegion:
    select = "n_select" if "n_select" in inspect.signature(FaithfulRegion).parameters else "n0"
    return FaithfulRegion(
        model,
        denoiser,
        method,
        k=config.k,
        beta=config.beta,
        alpha=config.alpha,
        n=config.certify_n,
        sigma=config.sigma,
        batch_size=max(config.batch_size * 4, 16),
        input_mean=normalization.mean,
        input_std=normalization.std,
        **{select: config.certify_n0},
    )


@dataclass
class Pipeline:
    """Everything built once per run; :meth:`run_batch` evaluates one batch."""

    model: nn.Module
    denoiser: Callable | None
    normalization: Normalization
    config: EvaluationConfig
    device: torch.device
    explainers: dict[tuple[str, str], Any]
    regions: dict[str, FaithfulRegion]
    attack: AttackSpec | None
    grid_of: AttentionMap

    @classmethod
    def build(
        cls,
        model: nn.Module,
        denoiser: Callable | None,
        normalization: Normalization,
        config: EvaluationConfig,
        device: torch.device,
    ) -> Pipeline:
        """Construct the explainers, regions and attack of ``config`` once."""
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
        regions = {
            m: _region(model, denoiser, m, config, normalization) for m in config.certified_methods
        }
        attack = None if config.attack == "none" else get_attack(config.attack, config.norm)
        return cls(
            model, denoiser, normalization, config, device, explainers, regions, attack,
            AttentionMap(model, config.methods[0]),
        )  # fmt: skip

    # -- what a batch must produce ---------------------------------------------------------
    def expected_keys(self, images: Sequence[int]) -> set[tuple]:
        """Keys of every row the batch of ``images`` writes."""
        keys = {
            ("explain", i, method, variant, eps)
            for i in images
            for (method, variant) in self.explainers
            for eps in self.config.eps_list
        }
        keys |= {("certify", i, m, "dds", 0.0) for i in images for m in self.regions}
        return keys

    # -- steps -----------------------------------------------------------------------------
    def _predict(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return logits_of(self.model(self.normalization.from_pixels(pixels))).argmax(1)

    def _context(self, map_fn=None) -> AttackContext:
        c = self.config
        return AttackContext(
            self.model, self.normalization, self.denoiser, c.sigma, map_fn=map_fn, k=c.k
        )

    def _attack(self, pixels, labels, eps, seed, map_fn=None) -> torch.Tensor:
        if eps == 0 or self.attack is None:
            return pixels
        return self.attack.fn(
            self._context(map_fn), pixels, labels, eps,
            norm=self.config.norm, steps=self.config.attack_steps, seed=seed,
        )  # fmt: skip

    def _explain(self, key, pixels, labels) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``N×P`` token map and, for DDS, the smoothed prediction."""
        x = self.normalization.from_pixels(pixels)
        explainer = self.explainers[key]
        if key[1] == "dds":
            result = explainer.details(x, target=labels, seed=self.config.seed)
            maps, smoothed = result.mean, result.predicted
        else:
            maps, smoothed = explainer.token_map(x, target=labels), None
        bad = ~torch.isfinite(maps.reshape(maps.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            raise NonFiniteError("method", int(bad.nonzero()[0, 0]))
        return maps, smoothed

    def _map_fn(self, key, labels):
        def map_fn(x: torch.Tensor) -> torch.Tensor:
            return self._explain(key, self.normalization.to_pixels(x).clamp(0, 1), labels)[0]

        return map_fn

    def run_batch(self, batch: Batch) -> BatchOutput:
        """Evaluate one batch; a non-finite value raises :class:`ImageFailure`."""
        try:
            return self._run_batch(batch)
        except ImageFailure:
            raise
        except NonFiniteError as err:
            index = min(max(err.input_index, 0), len(batch.images) - 1)
            raise ImageFailure(batch.images[index], batch.names[index], err) from err

    def _run_batch(self, batch: Batch) -> BatchOutput:
        c = self.config
        pixels = batch.pixels.to(self.device)
        masks = None if batch.masks is None else batch.masks.to(self.device)
        predicted_clean = self._predict(pixels)
        known = batch.labels.to(self.device) >= 0
        labels = torch.where(known, batch.labels.to(self.device), predicted_clean)
        seed = c.seed + batch.index
        grid = self.grid_of.token_grid(pixels.shape[-2:])
        base = [
            {
                "image": image,
                "name": name,
                "label": int(labels[j]),
                "label_known": bool(known[j]),
                "pred_clean": int(predicted_clean[j]),
            }
            for j, (image, name) in enumerate(zip(batch.images, batch.names, strict=True))
        ]
        output = BatchOutput(rows=[])
        figures = batch.index == 0 and c.figure_images > 0
        shown = slice(0, c.figure_images)
        if figures:
            output.examples = {"pixels": pixels[shown].cpu(), "maps": {}, "grid": list(grid)}
            output.examples["patch"] = list(self.grid_of.explainer.adapter.patch_size(self.model))
        shared: dict[float, torch.Tensor] = {}
        for key in self.explainers:
            clean_maps, clean_smoothed = self._explain(key, pixels, labels)
            for eps in c.eps_list:
                if eps == 0:
                    attacked, maps, smoothed = pixels, clean_maps, clean_smoothed
                else:
                    if self.attack is not None and self.attack.explanation:
                        attacked = self._attack(pixels, labels, eps, seed, self._map_fn(key, labels))
                    else:
                        if eps not in shared:
                            shared[eps] = self._attack(pixels, labels, eps, seed)
                        attacked = shared[eps]
                    maps, smoothed = self._explain(key, attacked, labels)
                output.rows += self._explain_rows(
                    base, key, eps, attacked, labels, clean_maps, maps, smoothed, masks, grid
                )
                if figures:
                    output.examples["maps"][(*key, eps)] = maps[shown].cpu()
        for method, region in self.regions.items():
            certificates = region.certify(
                self.normalization.from_pixels(pixels), seed=c.seed, radius=c.certify_radius
            )
            output.rows += self._certify_rows(base, method, certificates, labels)
            if figures and c.certify_radius is None:
                output.examples.setdefault("regions", {})[method] = [
                    {
                        "region": cert.region.cpu(),
                        "topk": cert.topk.cpu(),
                        "radius_beta": cert.radius_beta,
                        "radius": cert.radius,
                    }
                    for cert in certificates[shown]
                ]
        return output

    def _explain_rows(self, base, key, eps, attacked, labels, clean, maps, smoothed, masks, grid):
        c = self.config
        predicted = self._predict(attacked) if eps else None
        overlap = topk_overlap(clean, maps, c.k).tolist()
        rho = spearman(clean, maps).tolist()
        seg = None
        if masks is not None:
            seg = segmentation_counts(maps, masks, grid=grid)
        rows = []
        for j, common in enumerate(base):
            pred = common["pred_clean"] if predicted is None else int(predicted[j])
            row = {
                "kind": "explain",
                **common,
                "method": key[0],
                "variant": key[1],
                "eps": eps,
                "eps_255": round(eps * 255, 6),
                "pred": pred,
                "correct": pred == common["label"],
                "pred_smoothed": None if smoothed is None else int(smoothed[j]),
                "topk_overlap": float(overlap[j]),
                "spearman": float(rho[j]),
            }
            if seg is not None:
                row.update(
                    seg_correct=int(seg["correct"][j]),
                    seg_labelled=int(seg["labelled"][j]),
                    seg_intersection=seg["intersection"][j].tolist(),
                    seg_union=seg["union"][j].tolist(),
                    ap=float(seg["ap"][j]),
                )
            rows.append(row)
        return rows

    def _certify_rows(self, base, method, certificates, labels):
        rows = []
        for common, cert in zip(base, certificates, strict=True):
            correct = cert.label == common["label"] and not cert.abstain
            rows.append(
                {
                    "kind": "certify",
                    **common,
                    "method": method,
                    "variant": "dds",
                    "eps": 0.0,
                    "label_smoothed": int(cert.label),
                    "abstain": bool(cert.abstain),
                    "p_lower": float(cert.p_lower),
                    "radius_beta": float(cert.radius_beta),
                    "radius_beta_linf": float(cert.radius_beta_linf),
                    "radius_pred": float(cert.radius_pred),
                    "radius_pred_correct": float(cert.radius_pred) if correct else 0.0,
                    "radius": float(cert.radius),
                    "correct": bool(correct),
                }
            )
            if self.config.certify_radius is not None:  # the sequential test at a radius
                rows[-1].update(
                    certify_radius=float(cert.requested_radius),
                    decision=cert.decision,
                    samples_used=int(cert.n_samples),
                )
        return rows
