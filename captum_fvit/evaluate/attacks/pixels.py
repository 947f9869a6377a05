"""Pixel-space machinery shared by the attacks: ε-balls, projections, random starts, steps.

Perturbations ``δ`` live in **[0, 1] pixel units** of the image as passed in; the attacked
image ``x + δ`` is kept in ``[0, 1]`` and converted back to the model's normalisation only for
the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...noise import ATTACK_START_STREAM, random_seed, stream_generator
from ...space import Normalization
from ...validation import check_positive

__all__ = [
    "ascent_step",
    "clean_pixels",
    "project",
    "projected_ascent",
    "random_start",
    "seeded_start",
    "start_generator",
    "resolve_step",
]

#: How far outside [0, 1] converted pixels may lie before the inputs are rejected.
PIXEL_TOLERANCE = 1e-3


def clean_pixels(inputs: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """The inputs in [0, 1] pixel units (detached), or an error naming the normalisation fix."""
    pixels = normalization.to_pixels(inputs.detach())
    low, high = float(pixels.min()), float(pixels.max())
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        raise ValueError(
            f"the inputs are not images in the model's normalisation: converted with mean "
            f"{normalization.mean} and std {normalization.std} their pixels span "
            f"[{low:.3g}, {high:.3g}] instead of [0, 1]. Pass normalization= (e.g. "
            "Normalization(mean, std) or resolve_normalization(model, input_mean, input_std)) "
            "matching how the inputs were normalised"
        )
    return pixels.clamp(0, 1)


def start_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """The generator of an attack's random start: stream
    :data:`~captum_fvit.noise.ATTACK_START_STREAM` of ``seed`` (a fresh seed when ``None``)."""
    seed = random_seed() if seed is None else int(seed)
    return stream_generator(seed, ATTACK_START_STREAM, 0, device)


def seeded_start(pixels: torch.Tensor, eps: float, norm: str, seed: int | None) -> torch.Tensor:
    """:func:`random_start` drawn from :func:`start_generator` ``(seed)``."""
    return random_start(pixels, eps, norm, start_generator(seed, pixels.device))


def resolve_step(step_size: float | None, eps: float) -> float:
    """The ascent step in **[0, 1] pixel units**: ``step_size``, or ``eps / 5`` when ``None``
    (the paper's published code)."""
    if step_size is None:
        return eps / 5
    return check_positive(step_size, "step_size", " (pixel units)")


def _flat_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per-image ℓ2 norm, shaped to broadcast over ``N×C×H×W``."""
    return delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))


def project(delta: torch.Tensor, pixels: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``δ`` onto the ε-ball, then so that ``x + δ`` stays in ``[0, 1]``.

    Clipping to the pixel box only shrinks each coordinate of ``δ`` (``x`` itself is in
    ``[0, 1]``), so the result stays inside the ε-ball for both norms.
    """
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = _flat_norm(delta)
        delta = delta * torch.where(size > eps, eps / size.clamp(min=1e-12), 1.0)
    return (pixels + delta).clamp(0, 1) - pixels


def random_start(
    pixels: torch.Tensor, eps: float, norm: str, generator: torch.Generator
) -> torch.Tensor:
    """A random ``δ`` in the ε-ball: uniform per pixel (ℓ∞), or a uniformly random direction
    with a radius uniform in ``[0, ε]`` (ℓ2)."""
    if norm == "linf":
        delta = (torch.rand(pixels.shape, generator=generator, device=pixels.device) * 2 - 1) * eps
    else:
        direction = torch.randn(pixels.shape, generator=generator, device=pixels.device)
        direction = direction / _flat_norm(direction).clamp(min=1e-12)
        radius = torch.rand(pixels.shape[0], generator=generator, device=pixels.device)
        delta = direction * (radius * eps).view(-1, *([1] * (pixels.dim() - 1)))
    return project(delta.to(pixels.dtype), pixels, eps, norm)


def ascent_step(grad: torch.Tensor, step_size: float | torch.Tensor, norm: str) -> torch.Tensor:
    """The step up the loss: ``α·sign(g)`` (ℓ∞) or ``α·g/‖g‖₂`` (ℓ2), per image."""
    if isinstance(step_size, torch.Tensor):
        step_size = step_size.view(-1, *([1] * (grad.dim() - 1)))
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / _flat_norm(grad).clamp(min=1e-12)


def projected_ascent(
    gradient: Callable[[torch.Tensor, int], torch.Tensor],
    pixels: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    alpha: float,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient ascent (PGD) in pixel space: the one loop of every PGD attack.

    ``gradient(x_pixels, step) -> N×C×H×W`` is the ascent direction at ``x`` (the plain
    model's cross-entropy gradient for transfer PGD, an EOT estimate through the defence for
    EOT-PGD; ``step = 0 .. steps-1``); ``eps`` (0 returns a copy of ``pixels``) and ``alpha``
    are in **[0, 1] pixel units**; ``start`` is the initial ``δ`` (default 0). Returns the
    detached adversarial pixels, in [0, 1] and within ``eps`` of ``pixels``.
    """
    if eps == 0:
        return pixels.clone()
    delta = torch.zeros_like(pixels) if start is None else start
    for step in range(steps):
        grad = gradient((pixels + delta).detach(), step)
        delta = project(delta + ascent_step(grad, alpha, norm), pixels, eps, norm)
    return (pixels + delta).detach()
