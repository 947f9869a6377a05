"""Pixel-space machinery shared by the attacks: ε-balls, projections, random starts.

Perturbations ``δ`` live in **[0, 1] pixel units** of the image as passed in; the attacked
image ``x + δ`` is kept in ``[0, 1]`` and converted back to the model's normalisation only for
the forward pass.
"""

from __future__ import annotations

import torch

from ..noise import random_seed
from ..space import Normalization

__all__ = ["clean_pixels", "make_generator", "project", "random_start", "ascent_step"]

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


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (a fresh seed from torch when ``None``)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(random_seed() if seed is None else int(seed))
    return generator


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
