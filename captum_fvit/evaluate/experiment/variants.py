"""The explanation variants an evaluation compares, as a registry (all at one σ).

* ``"vanilla"`` — the plain attention map (:class:`~captum_fvit.AttentionMap`); its classifier
  is the plain ViT.
* ``"smoothgrad"`` — Captum's NoiseTunnel around the same map
  (:class:`~captum_fvit.evaluate.experiment.baselines.SmoothGradAttention`): noise, no denoiser; smooths
  the map only.
* ``"identity"`` — randomized smoothing without denoising: :class:`~captum_fvit.DDSAttention`
  with the identity denoiser; map and classifier smoothed.
* ``"dds"`` — :class:`~captum_fvit.DDSAttention` with the run's denoiser (what users run).

A variant is built once per (run, method) into an :class:`Explainer`:
``explain(x, labels, seed) -> (N×P token maps, N smoothed predictions or None)``. Adding a
variant is one :func:`register_variant` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ...attr import AttentionMap, DDSAttention
from ...space import Normalization

__all__ = ["VARIANTS", "Explainer", "VariantSpec", "build_explainer", "register_variant"]


class Explainer(Protocol):
    """One method under one variant: maps and (for smoothed classifiers) predictions."""

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass(frozen=True)
class VariantSpec:
    """A registered variant.

    Attributes
    ----------
    build : callable
        ``build(model, denoiser, method, normalization, config) -> Explainer``.
    smoothed : bool
        Its maps carry Monte-Carlo noise (so they get the seed-to-seed floor).
    description : str
        One line for reports.
    """

    build: Callable[..., Explainer]
    smoothed: bool
    description: str = ""


#: Variants by name, in report order.
VARIANTS: dict[str, VariantSpec] = {}


def register_variant(name: str, build: Callable[..., Explainer], *, smoothed: bool,
                     description: str = "") -> VariantSpec:  # fmt: skip
    """Add a variant to :data:`VARIANTS`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"variant name must be a non-empty string, got {name!r}")
    VARIANTS[name] = VariantSpec(build, bool(smoothed), description)
    return VARIANTS[name]


def _chunk(config: Any) -> int:
    """Images per denoiser/ViT chunk of the smoothed variants."""
    return max(config.batch_size * 4, 16)


def _vanilla(model, denoiser, method, normalization, config) -> Explainer:
    explainer = AttentionMap(model, method)

    def explain(x, labels, seed):
        return explainer.token_map(x, target=labels), None

    return explain


def _smoothgrad(model, denoiser, method, normalization, config) -> Explainer:
    from .baselines import SmoothGradAttention

    explainer = SmoothGradAttention(model, method, config.sigma, config.n_samples,
                                    normalization=normalization)  # fmt: skip

    def explain(x, labels, seed):
        return explainer.token_map(x, labels, seed=seed), None

    return explain


def _smoothed(denoiser_of: Callable[[Any], Any]) -> Callable[..., Explainer]:
    def build(model, denoiser, method, normalization: Normalization, config) -> Explainer:
        explainer = DDSAttention(
            model, denoiser_of(denoiser), method, sigma=config.sigma, n_samples=config.n_samples,
            batch_size=_chunk(config), input_mean=normalization.mean, input_std=normalization.std,
        )  # fmt: skip

        def explain(x, labels, seed):
            result = explainer.details(x, target=labels, seed=seed)
            return result.mean, result.predicted

        return explain

    return build


register_variant("vanilla", _vanilla, smoothed=False, description="the plain attention map")
register_variant(
    "smoothgrad", _smoothgrad, smoothed=True,
    description="Captum NoiseTunnel (SmoothGrad) around the plain map, no denoiser",
)  # fmt: skip
register_variant(
    "identity", _smoothed(lambda denoiser: None), smoothed=True,
    description="randomized smoothing without denoising (DDSAttention, identity denoiser)",
)  # fmt: skip
register_variant(
    "dds", _smoothed(lambda denoiser: denoiser), smoothed=True,
    description="Denoised Diffusion Smoothing (DDSAttention with the run's denoiser)",
)  # fmt: skip


def build_explainer(variant: str, model: nn.Module, denoiser: Callable | None, method: str,
                    normalization: Normalization, config: Any) -> Explainer:  # fmt: skip
    """The :class:`Explainer` of ``method`` under the registered ``variant``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)}")
    return VARIANTS[variant].build(model, denoiser, method, normalization, config)
