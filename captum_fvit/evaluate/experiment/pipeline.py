"""One batch of an evaluation, as small steps that turn images into per-image rows.

:class:`Pipeline` is built once per run (one explainer per method and registered variant,
FaithfulRegions, the attacks of the registry). A batch is evaluated in *units* — the clean
unit (ε = 0, with the certificates) and one unit per (attack, ε > 0) — so a killed run
resumes at its first unfinished unit. :meth:`Pipeline.prepare` explains the clean batch once
(and a second time with an independent seed when the config asks for the Monte-Carlo
floor); :meth:`Pipeline.unit_rows` attacks and explains for one unit.

Rows are plain JSON values of kind ``"explain"`` (one per image, attack, method, variant and
ε) or ``"certify"`` (one per image and certified method). A row depends only on its batch
(same images, same seeds), never on the rank or on what ran before, so a resumed or sharded
run writes the same rows as one uninterrupted process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...attr import AttentionMap, FaithfulRegion
from ...errors import NonFiniteError
from ...model_io import logits_of
from ...space import Normalization
from ..attacks.registry import AttackContext, AttackSpec, get_attack
from ..metrics.segmentation import segmentation_counts
from ..metrics.similarity import spearman, topk_overlap
from .config import CLEAN, EvaluationConfig, attack_threat
from .variants import VARIANTS, Explainer, build_explainer

__all__ = ["KEY_FIELDS", "Batch", "BatchState", "ImageFailure", "Pipeline", "Unit", "load_batch"]

#: Fields identifying a row (``kind`` is "explain", "certify" or "run"), the one key of
#: every evaluation, presets included.
KEY_FIELDS = ("kind", "image", "attack", "method", "variant", "eps")
#: Offset of the second, independent clean seed (the Monte-Carlo floor).
FLOOR_SEED_OFFSET = 1_000_003


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


@dataclass(frozen=True)
class Unit:
    """A unit of work within a batch: ``attack`` (``"clean"`` at ε = 0) at ``eps``."""

    attack: str
    eps: float


@dataclass
class BatchState:
    """What every unit of a batch shares: labels, clean maps (and floor maps), row stems."""

    batch: Batch
    pixels: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    grid: tuple[int, int]
    base: list[dict]
    clean: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None]]
    floor: dict[tuple[str, str], torch.Tensor]
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
    return Batch(batch_index, images, pixels.float(), torch.as_tensor(labels).long(), masks, names)


def _region(model, denoiser, method, config: EvaluationConfig, normalization) -> FaithfulRegion:
    return FaithfulRegion(
        model, denoiser, method, k=config.k, beta=config.beta, alpha=config.alpha,
        n_samples=config.certify_n_samples, n_select=config.certify_n_select, sigma=config.sigma,
        batch_size=max(config.batch_size * 4, 16), input_mean=normalization.mean,
        input_std=normalization.std,
    )  # fmt: skip


@contextmanager
def _naming_the_image(batch: Batch) -> Iterator[None]:
    """Turn a :class:`NonFiniteError` into an :class:`ImageFailure` naming the image."""
    try:
        yield
    except ImageFailure:
        raise
    except NonFiniteError as err:
        index = min(max(err.input_index, 0), len(batch.images) - 1)
        raise ImageFailure(batch.images[index], batch.names[index], err) from err


@dataclass
class Pipeline:
    """Everything built once per run; :meth:`prepare` and :meth:`unit_rows` run a batch."""

    model: nn.Module
    denoiser: Callable | None
    normalization: Normalization
    config: EvaluationConfig
    device: torch.device
    explainers: dict[tuple[str, str], Explainer]
    regions: dict[str, FaithfulRegion]
    attacks: dict[str, AttackSpec]
    grid_of: AttentionMap

    @classmethod
    def build(cls, model: nn.Module, denoiser: Callable | None, normalization: Normalization,
              config: EvaluationConfig, device: torch.device) -> Pipeline:  # fmt: skip
        """Construct the explainers, regions and attacks of ``config`` once."""
        explainers = {
            (method, variant): build_explainer(variant, model, denoiser, method, normalization, config)
            for method in config.methods
            for variant in config.variants
        }
        regions = {
            m: _region(model, denoiser, m, config, normalization) for m in config.certified_methods
        }
        attacks = {name: get_attack(name, config.norm) for name in config.attacks}
        return cls(model, denoiser, normalization, config, device, explainers, regions, attacks,
                   AttentionMap(model, config.methods[0]))  # fmt: skip

    # -- the plan ----------------------------------------------------------------------------
    def units(self) -> list[Unit]:
        """Every unit of a batch: clean first, then each attack at each ε > 0."""
        attacked = [e for e in self.config.eps_list if e > 0]
        names = self.config.attacks or ("none",)
        return [Unit(CLEAN, 0.0)] + [Unit(a, e) for e in attacked for a in names]

    def unit_images(self, unit: Unit, images: Sequence[int]) -> list[int]:
        """The images of a batch that ``unit`` evaluates (adaptive attacks: the first ones)."""
        limit = self.config.n_adaptive_images
        if limit is None or unit.attack in (CLEAN, "none") or attack_threat(unit.attack) != "adaptive":
            return list(images)
        return [i for i in images if i < limit]

    def expected_keys(self, images: Sequence[int], unit: Unit | None = None) -> set[tuple]:
        """Keys of every row ``unit`` (default: every unit) writes for the batch ``images``."""
        keys: set[tuple] = set()
        for u in [unit] if unit is not None else self.units():
            chosen = self.unit_images(u, images)
            keys |= {("explain", i, u.attack, m, v, u.eps) for i in chosen for (m, v) in self.explainers}
            if u.attack == CLEAN:
                keys |= {("certify", i, CLEAN, m, "dds", 0.0) for i in chosen for m in self.regions}
        return keys

    # -- steps -------------------------------------------------------------------------------
    def _predict(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return logits_of(self.model(self.normalization.from_pixels(pixels))).argmax(1)

    def _explain(self, key, pixels, labels, seed=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``N×P`` token map and, for smoothed classifiers, the smoothed prediction."""
        seed = self.config.seed if seed is None else seed
        maps, smoothed = self.explainers[key](self.normalization.from_pixels(pixels), labels, seed)
        bad = ~torch.isfinite(maps.reshape(maps.shape[0], -1)).all(dim=1)
        if bool(bad.any()):
            raise NonFiniteError("method", int(bad.nonzero()[0, 0]))
        return maps.detach(), None if smoothed is None else smoothed.detach()

    def _map_fn(self, method: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The plain map of ``method`` on model-space inputs (what a transfer attack targets):
        a bound ``token_map``, so attacks can read the method from it."""
        return AttentionMap(self.model, method).token_map

    def _attack(self, unit: Unit, pixels, target, seed, method=None) -> torch.Tensor:
        if unit.attack == "none":
            return pixels
        c = self.config
        context = AttackContext(
            model=self.model, normalization=self.normalization, denoiser=self.denoiser,
            sigma=c.sigma, k=c.k, n_eot=c.n_eot, method=method,
            map_fn=None if method is None else self._map_fn(method),
            batch_size=max(c.batch_size * 4, 16), n_clean=c.n_samples,
        )  # fmt: skip
        return self.attacks[unit.attack].fn(
            context, pixels, target, unit.eps, norm=c.norm, steps=c.steps_of(unit.attack), seed=seed
        )

    def prepare(self, batch: Batch) -> BatchState:
        """Labels (unknown → the clean prediction), row stems and the clean maps of ``batch``."""
        with _naming_the_image(batch):
            return self._prepare(batch)

    def _prepare(self, batch: Batch) -> BatchState:
        c = self.config
        pixels = batch.pixels.to(self.device)
        masks = None if batch.masks is None else batch.masks.to(self.device)
        predicted = self._predict(pixels)
        known = batch.labels.to(self.device) >= 0
        labels = torch.where(known, batch.labels.to(self.device), predicted)
        base = [
            {"image": image, "name": name, "label": int(labels[j]), "label_known": bool(known[j]),
             "pred_clean": int(predicted[j])}
            for j, (image, name) in enumerate(zip(batch.images, batch.names, strict=True))
        ]  # fmt: skip
        clean = {key: self._explain(key, pixels, labels) for key in self.explainers}
        floor = {
            key: self._explain(key, pixels, labels, c.seed + FLOOR_SEED_OFFSET)[0]
            for key in self.explainers
            if c.floor and VARIANTS[key[1]].smoothed
        }
        grid = self.grid_of.token_grid(pixels.shape[-2:])
        state = BatchState(batch, pixels, labels, masks, grid, base, clean, floor)
        if batch.index == 0 and c.figure_images > 0:
            shown = slice(0, c.figure_images)
            state.examples = {
                "pixels": pixels[shown].cpu(), "grid": list(grid),
                "patch": list(self.grid_of.explainer.adapter.patch_size(self.model)),
                "maps": {(*key, 0.0): maps[shown].cpu() for key, (maps, _) in clean.items()},
            }  # fmt: skip
        return state

    def unit_rows(self, state: BatchState, unit: Unit) -> list[dict]:
        """The rows of ``unit`` for the batch of ``state`` (attacking as the unit says)."""
        with _naming_the_image(state.batch):
            if unit.attack == CLEAN:
                return self._clean_rows(state)
            return self._attacked_rows(state, unit)

    def _clean_rows(self, state: BatchState) -> list[dict]:
        rows = []
        every = torch.ones(len(state.batch.images), dtype=torch.bool, device=state.pixels.device)
        for key, (maps, smoothed) in state.clean.items():
            rows += self._explain_rows(state, every, Unit(CLEAN, 0.0), "all", key, None, maps,
                                       smoothed)  # fmt: skip
        for method, region in self.regions.items():
            rows += self._certify(state, method, region)
        return rows

    def _attacked_rows(self, state: BatchState, unit: Unit) -> list[dict]:
        chosen = set(self.unit_images(unit, state.batch.images))
        subset = torch.tensor([i in chosen for i in state.batch.images], device=state.pixels.device)
        if not bool(subset.any()):
            return []
        pixels, labels = state.pixels[subset], state.labels[subset]
        seed = self.config.seed + state.batch.index
        spec = self.attacks.get(unit.attack)
        if spec is not None and spec.explanation:
            targets = [(m, [m], self._attack(unit, pixels, labels, seed, m)) for m in self.config.methods]
        else:
            targets = [("all", list(self.config.methods), self._attack(unit, pixels, labels, seed))]
        rows = []
        for scope, methods, attacked in targets:
            predicted = self._predict(attacked).tolist()
            for key in self.explainers:
                if key[0] in methods:
                    maps, smoothed = self._explain(key, attacked, labels)
                    rows += self._explain_rows(state, subset, unit, scope, key, predicted, maps, smoothed)
                    self._keep_example(state, unit, key, maps)
        return rows

    def _keep_example(self, state: BatchState, unit: Unit, key, maps) -> None:
        """Figure material: the maps of the first attack (batch 0 only)."""
        shown = state.examples.get("maps")
        if shown is not None and unit.attack == (self.config.attacks or ("none",))[0]:
            shown[(*key, unit.eps)] = maps[: self.config.figure_images].cpu()

    def _explain_rows(self, state, subset, unit, scope, key, predicted, maps, smoothed) -> list[dict]:
        """Rows of one (method, variant) for the ``subset`` of the batch; ``predicted``: the
        plain model's classes on the attacked images (``None``: the clean prediction)."""
        c = self.config
        clean = state.clean[key][0][subset]
        columns = {"topk_overlap": topk_overlap(clean, maps, c.k), "spearman": spearman(clean, maps)}
        if key in state.floor:
            floor = state.floor[key][subset]
            columns["topk_overlap_indep"] = topk_overlap(floor, maps, c.k)
            columns["floor_overlap"] = topk_overlap(clean, floor, c.k)
        if state.masks is not None:
            columns |= _segmentation(maps, state.masks[subset], state.grid)
        base = [b for b, keep in zip(state.base, subset.tolist(), strict=True) if keep]
        stem = {"kind": "explain", "attack": unit.attack, "threat": attack_threat(unit.attack),
                "scope": scope, "method": key[0], "variant": key[1], "eps": unit.eps,
                "eps_255": round(unit.eps * 255, 6)}  # fmt: skip
        rows = []
        for j, common in enumerate(base):
            pred = common["pred_clean"] if predicted is None else int(predicted[j])
            row = {**stem, **common, "pred": pred, "correct": pred == common["label"],
                   "pred_smoothed": None if smoothed is None else int(smoothed[j])}  # fmt: skip
            row.update({name: _json(values[j]) for name, values in columns.items()})
            rows.append(row)
        return rows

    def _certify(self, state: BatchState, method: str, region: FaithfulRegion) -> list[dict]:
        c = self.config
        x = self.normalization.from_pixels(state.pixels)
        if c.certify_radius is None:
            certificates = region.certify(x, seed=c.seed)
        else:  # the anytime-valid sequential test at one radius
            certificates = region.decide(x, c.certify_radius, seed=c.seed)
        if state.examples and c.certify_radius is None:
            state.examples.setdefault("regions", {})[method] = [
                {"region": cert.region.cpu(), "topk": cert.topk.cpu(),
                 "radius_beta": cert.radius_beta, "radius": cert.radius}
                for cert in certificates[: c.figure_images]
            ]  # fmt: skip
        return [self._certify_row(common, method, cert) for common, cert in
                zip(state.base, certificates, strict=True)]  # fmt: skip

    def _certify_row(self, common: dict, method: str, cert: Any) -> dict:
        correct = cert.label == common["label"] and not cert.abstain
        row = {
            "kind": "certify", **common, "attack": CLEAN, "method": method, "variant": "dds",
            "eps": 0.0, "label_smoothed": int(cert.label), "abstain": bool(cert.abstain),
            "p_lower": float(cert.p_lower), "radius_beta": float(cert.radius_beta),
            "radius_beta_linf": float(cert.radius_beta_linf), "radius_pred": float(cert.radius_pred),
            "radius_pred_correct": float(cert.radius_pred) if correct else 0.0,
            "radius": float(cert.radius), "correct": bool(correct),
        }  # fmt: skip
        if self.config.certify_radius is not None:  # the sequential test at a radius
            row.update(certify_radius=float(cert.requested_radius), decision=cert.decision,
                       samples_used=int(cert.n_samples))  # fmt: skip
        return row


def _segmentation(maps: torch.Tensor, masks: torch.Tensor, grid) -> dict[str, list]:
    seg = segmentation_counts(maps, masks, grid=grid)
    return {
        "seg_correct": [int(v) for v in seg["correct"]],
        "seg_labelled": [int(v) for v in seg["labelled"]],
        "seg_intersection": [v.tolist() for v in seg["intersection"]],
        "seg_union": [v.tolist() for v in seg["union"]],
        "ap": [float(v) for v in seg["ap"]],
    }


def _json(value: Any) -> Any:
    """A row value: tensors' elements as Python floats, lists as they are."""
    if isinstance(value, torch.Tensor):
        return float(value)
    return value
