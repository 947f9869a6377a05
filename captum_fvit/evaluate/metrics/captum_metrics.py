"""Captum's ``infidelity`` and ``sensitivity_max`` for any explanation, with pixel-unit noise.

Captum perturbs the inputs the model receives — here the model's *normalised* tensors. The
perturbation functions below draw their noise in **[0, 1] pixel units** (so a radius means
the same for every model) and convert it to model units by dividing by the per-channel
``std`` of the model's :class:`~captum_fvit.space.Normalization`. They draw from a seeded
``torch.Generator``, so a metric is reproducible; perturbed inputs are not clamped to the
pixel range (for infidelity, the perturbation must be exactly what the attribution is
multiplied with).

For stochastic explanations (DDS) pass ``explain_kwargs={"seed": 0}``: Captum deep-copies
keyword arguments, so an int seed (not a generator) fixes the Monte-Carlo noise and the
metric measures the explanation, not its sampling noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from ...explain.targets import TargetType, logits_of, resolve_target
from ...space import Normalization, resolve_normalization
from ...validation import check_image_batch, check_positive

__all__ = [
    "FORWARD_OUTPUTS",
    "gaussian_perturbation",
    "infidelity_score",
    "sensitivity_score",
    "uniform_perturbation",
]

#: What infidelity compares: the target logit or the target softmax probability.
FORWARD_OUTPUTS = ("logit", "probability")


class _SeededNoise:
    """A generator created lazily on the inputs' device, seeded once."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    @staticmethod
    def scale(normalization: Normalization, inputs: torch.Tensor) -> torch.Tensor:
        """Model units per pixel unit (``1/std``), shaped ``1×C×1×1`` (or a scalar)."""
        scale = torch.tensor(normalization.pixel_scale(), dtype=inputs.dtype, device=inputs.device)
        if scale.numel() == 1:
            return scale.reshape(())
        if inputs.dim() != 4 or inputs.shape[1] != scale.numel():
            raise ValueError(
                f"the normalisation has {scale.numel()} channels but the inputs have shape "
                f"{tuple(inputs.shape)}; pass normalization= matching the model"
            )
        return scale.view(1, -1, 1, 1)


def gaussian_perturbation(
    sigma: float, normalization: Normalization, seed: int = 0
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Infidelity's perturbation: ``I ~ N(0, σ²)`` per pixel in **[0, 1] pixel units**.

    Returns ``perturb(inputs) -> (I_model, inputs − I_model)`` with ``I_model = I / std`` in
    the model's units, as :func:`captum.metrics.infidelity` expects.

    Parameters
    ----------
    sigma : float
        Noise std in pixel units (> 0).
    normalization : Normalization
        The model's normalisation.
    seed : int, default 0
        Seed of the noise sequence (successive calls draw successive noise).
    """
    sigma = check_positive(sigma, "sigma", " (pixel units)")
    noise = _SeededNoise(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        draws = torch.randn(
            inputs.shape, generator=noise.generator(inputs.device), device=inputs.device
        ).to(inputs.dtype)
        perturbation = draws * sigma * noise.scale(normalization, inputs)
        return perturbation, inputs - perturbation

    return perturb


def uniform_perturbation(
    normalization: Normalization, seed: int = 0
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Sensitivity's perturbation: uniform in the ℓ∞ ball of radius ``perturb_radius`` **pixels**.

    Returns ``perturb(inputs, perturb_radius) -> perturbed_inputs`` (Captum's signature for
    :func:`captum.metrics.sensitivity_max`), the noise converted to model units.
    """
    noise = _SeededNoise(seed)

    def perturb(inputs: torch.Tensor, perturb_radius: float) -> torch.Tensor:
        draws = torch.rand(
            inputs.shape, generator=noise.generator(inputs.device), device=inputs.device
        ).to(inputs.dtype)
        return inputs + (2 * draws - 1) * perturb_radius * noise.scale(normalization, inputs)

    return perturb


def _explain_function(explain_fn: Any) -> Callable[..., torch.Tensor]:
    if hasattr(explain_fn, "attribute") and callable(explain_fn.attribute):
        return explain_fn.attribute
    if not callable(explain_fn):
        raise TypeError(
            "explain_fn must be a Captum Attribution or a callable "
            f"explain_fn(inputs, target=..., **kwargs), got {type(explain_fn).__name__}"
        )
    return explain_fn


def _resolved_target(model: nn.Module, images: torch.Tensor, target: TargetType) -> torch.Tensor:
    with torch.no_grad():
        logits = logits_of(model(images))
    return resolve_target(target, logits)


def infidelity_score(
    explain_fn: Any,
    model: nn.Module,
    inputs: torch.Tensor,
    target: TargetType = None,
    *,
    sigma: float = 0.02,
    n_perturb_samples: int = 16,
    normalize: bool = True,
    forward: str = "logit",
    seed: int = 0,
    normalization: Normalization | None = None,
    max_examples_per_batch: int | None = None,
    explain_kwargs: dict[str, Any] | None = None,
    attributions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Captum's explanation infidelity (Yeh et al. 2019) with Gaussian pixel noise.

    ``E_I[(Iᵀ Φ(x) − (f(x) − f(x − I)))²]`` over ``I ~ N(0, σ²)`` in pixel units (converted
    to model units), ``f`` the target's logit or probability.

    Parameters
    ----------
    explain_fn : Attribution or callable
        A Captum attribution (its ``attribute`` is used), e.g. ``DDSAttention(...)``, or
        ``explain_fn(inputs, target=..., **explain_kwargs)`` returning maps of the inputs'
        shape.
    model : nn.Module
        The classifier ``f``.
    inputs : Tensor
        ``N×C×H×W`` in the model's normalisation.
    target : int, sequence or Tensor, optional
        Class per image; default the model's prediction on ``inputs`` (used for the
        explanation too, so both explain the same class).
    sigma : float, default 0.02
        Noise std in **[0, 1] pixel units**.
    n_perturb_samples : int, default 16
        Noise samples per image.
    normalize : bool, default True
        Captum's scale-invariant infidelity (the attribution is rescaled by the optimal
        β); leave on for attention maps, whose scale is arbitrary.
    forward : {"logit", "probability"}, default "logit"
        What ``f`` returns for the target.
    seed : int, default 0
        Seed of the perturbations.
    normalization : Normalization, optional
        The model's normalisation (default :func:`~captum_fvit.space.resolve_normalization`).
    max_examples_per_batch : int, optional
        Passed to Captum.
    explain_kwargs : dict, optional
        Extra keyword arguments of ``explain_fn`` (e.g. ``{"seed": 0}`` for DDS).
    attributions : Tensor, optional
        Precomputed attributions of ``inputs`` (then ``explain_fn`` is not called).

    Returns
    -------
    Tensor
        ``N`` infidelities (lower is better).
    """
    if forward not in FORWARD_OUTPUTS:
        raise ValueError(f"forward must be one of {FORWARD_OUTPUTS}, got {forward!r}")
    images = check_image_batch(inputs)
    normalization = normalization if normalization is not None else resolve_normalization(model)
    classes = _resolved_target(model, images, target)
    if attributions is None:
        explain = _explain_function(explain_fn)
        attributions = explain(images, target=classes, **(explain_kwargs or {}))
    if isinstance(attributions, tuple):
        attributions = attributions[0]
    if attributions.shape != images.shape:
        raise ValueError(
            f"infidelity needs attributions of the inputs' shape {tuple(images.shape)}, got "
            f"{tuple(attributions.shape)}; use `attribute` (pixel maps), not `token_map`"
        )

    def forward_func(x: torch.Tensor) -> torch.Tensor:
        logits = logits_of(model(x))
        return logits.softmax(dim=1) if forward == "probability" else logits

    return infidelity(
        forward_func,
        gaussian_perturbation(sigma, normalization, seed),
        images,
        attributions.detach(),
        target=classes,
        n_perturb_samples=int(n_perturb_samples),
        max_examples_per_batch=max_examples_per_batch,
        normalize=normalize,
    )


def sensitivity_score(
    explain_fn: Any,
    model: nn.Module,
    inputs: torch.Tensor,
    target: TargetType = None,
    *,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    seed: int = 0,
    normalization: Normalization | None = None,
    max_examples_per_batch: int | None = None,
    explain_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Captum's max-sensitivity (Yeh et al. 2019) with uniform ℓ∞ pixel noise.

    ``max_{‖δ‖∞ ≤ r} ‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖`` estimated over ``n_perturb_samples``
    uniform draws, ``r = perturb_radius`` in pixel units.

    Parameters
    ----------
    explain_fn : Attribution or callable
        A Captum attribution or ``explain_fn(inputs, target=..., **explain_kwargs)``
        returning maps of any per-image shape (token maps work too).
    model : nn.Module
        Used for the normalisation and the default target.
    inputs : Tensor
        ``N×C×H×W`` in the model's normalisation.
    target : int, sequence or Tensor, optional
        Class per image; default the model's prediction on the clean ``inputs`` (kept fixed
        for the perturbed copies).
    perturb_radius : float, default 0.02
        ℓ∞ radius in **[0, 1] pixel units**.
    n_perturb_samples, norm_ord, max_examples_per_batch
        Passed to Captum.
    seed : int, default 0
        Seed of the perturbations.
    normalization : Normalization, optional
        The model's normalisation.
    explain_kwargs : dict, optional
        Extra keyword arguments (e.g. ``{"seed": 0}`` for DDS; Captum deep-copies them).

    Returns
    -------
    Tensor
        ``N`` max-sensitivities (lower is more stable).
    """
    images = check_image_batch(inputs)
    radius = check_positive(perturb_radius, "perturb_radius", " (pixel units)")
    normalization = normalization if normalization is not None else resolve_normalization(model)
    classes = _resolved_target(model, images, target)
    explain = _explain_function(explain_fn)
    return sensitivity_max(
        explain,
        images,
        perturb_func=uniform_perturbation(normalization, seed),
        perturb_radius=radius,
        n_perturb_samples=int(n_perturb_samples),
        norm_ord=norm_ord,
        max_examples_per_batch=max_examples_per_batch,
        target=classes,
        **(explain_kwargs or {}),
    )
