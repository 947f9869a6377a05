"""Choosing the diffusion timestep that matches a pixel-space noise level.

A DDPM-family model sees, at timestep ``t``,
``x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps`` with ``x0`` in [-1, 1].
Scaling by ``1 / sqrt(abar_t)`` gives ``x0 + sqrt((1 - abar_t) / abar_t) * eps``:
a clean image plus white noise of std ``sqrt((1 - abar_t) / abar_t)`` in
[-1, 1] units. Pixel noise of std ``sigma`` in [0, 1] units has std
``2 * sigma`` in [-1, 1] units, so the matching timestep is

    t* = min { t : sqrt((1 - abar_t) / abar_t) >= 2 * sigma }.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import check_sigma

__all__ = ["max_sigma", "noise_to_signal", "timestep_for_sigma"]


def _as_alphas_cumprod(alphas_cumprod: Tensor | Sequence[float]) -> Tensor:
    a = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).reshape(-1)
    if a.numel() == 0:
        raise ValueError("alphas_cumprod is empty; pass the scheduler's 1-D alphas_cumprod.")
    if not torch.isfinite(a).all() or (a <= 0).any() or (a > 1).any():
        raise ValueError(
            "alphas_cumprod must lie in (0, 1]; pass scheduler.alphas_cumprod of a "
            "DDPM-family scheduler (not betas or alphas)."
        )
    if (a[1:] > a[:-1]).any():
        raise ValueError(
            "alphas_cumprod must be non-increasing in t (more noise at larger t); "
            "pass scheduler.alphas_cumprod in timestep order."
        )
    return a


def noise_to_signal(alphas_cumprod: Tensor | Sequence[float]) -> Tensor:
    """Noise std of the rescaled sample ``x_t / sqrt(abar_t)`` per timestep.

    Parameters
    ----------
    alphas_cumprod : torch.Tensor or sequence of float
        ``abar_t`` for ``t = 0 .. T-1``, non-increasing, in (0, 1].

    Returns
    -------
    torch.Tensor
        float64 tensor ``sqrt((1 - abar_t) / abar_t)`` in [-1, 1] image units
        (divide by 2 for [0, 1] pixel units); non-decreasing in ``t``.
    """
    a = _as_alphas_cumprod(alphas_cumprod)
    return ((1.0 - a) / a).sqrt()


def max_sigma(alphas_cumprod: Tensor | Sequence[float]) -> float:
    """Largest pixel noise std (in [0, 1] pixel units) the schedule can match.

    Parameters
    ----------
    alphas_cumprod : torch.Tensor or sequence of float

    Returns
    -------
    float
        ``sqrt((1 - abar_{T-1}) / abar_{T-1}) / 2``.
    """
    return float(noise_to_signal(alphas_cumprod)[-1]) / 2.0


def timestep_for_sigma(alphas_cumprod: Tensor | Sequence[float], sigma: float) -> int:
    """Smallest timestep whose noise level reaches pixel noise ``sigma``.

    Parameters
    ----------
    alphas_cumprod : torch.Tensor or sequence of float
        ``abar_t`` of the diffusion schedule for ``t = 0 .. T-1``
        (e.g. ``scheduler.alphas_cumprod``).
    sigma : float
        Noise std in **[0, 1] pixel units**; finite and > 0.

    Returns
    -------
    int
        ``t* = min { t : sqrt((1 - abar_t) / abar_t) >= 2 * sigma }``. The
        factor 2 converts [0, 1] pixel units to the model's [-1, 1] units.

    Raises
    ------
    ValueError
        If ``sigma`` is not a finite float > 0, or if ``2 * sigma`` exceeds the
        noise level of the schedule's last timestep (``sigma`` too large).

    Examples
    --------
    For diffusers' ``DDPMScheduler`` with the linear 1000-step schedule
    (betas 1e-4 .. 0.02), sigma = 0.12, 0.25, 0.5, 1.0 give t* = 70, 145,
    259, 396.
    """
    sigma_f = check_sigma(sigma)
    ratio = noise_to_signal(alphas_cumprod)
    target = torch.tensor([2.0 * sigma_f], dtype=torch.float64)
    t = int(torch.searchsorted(ratio, target, right=False)[0])
    if t >= ratio.numel():
        raise ValueError(
            f"sigma={sigma_f:g} (pixel units) is too large for this diffusion "
            f"schedule: it needs a noise-to-signal ratio 2*sigma={2 * sigma_f:g}, "
            f"but the last of its {ratio.numel()} timesteps only reaches "
            f"{float(ratio[-1]):g} (max sigma {float(ratio[-1]) / 2:g}). Use a "
            "smaller sigma or a scheduler with more noise at its final step."
        )
    return t
