"""Denoisers for DDS (Denoised Diffusion Smoothing).

A denoiser maps ``x_noisy = x + delta`` (``delta ~ N(0, sigma**2 I)``, all in
[0, 1] pixel units, unclamped) back to a clean image in [0, 1]:
``denoiser(x_noisy, sigma, generator=None) -> x_denoised``.

* :class:`IdentityDenoiser` - no denoising (plain randomized smoothing).
* :class:`DiffusionDenoiser` - one-shot (or few-step) denoising with a
  diffusers ``UNet2DModel`` and a DDPM-family scheduler.
* :func:`load_guided_diffusion` - OpenAI guided-diffusion (ADM) checkpoints,
  such as the paper's ``256x256_diffusion_uncond.pt``, as diffusers models.
"""

from __future__ import annotations

from .adm import (
    ADM_256_UNCOND,
    ADMConfig,
    GuidedDiffusionModel,
    adm_scheduler_kwargs,
    adm_unet_kwargs,
    convert_adm_state_dict,
    load_guided_diffusion,
)
from .base import (
    Denoiser,
    check_channels,
    check_images,
    check_sigma,
    denoiser_in_channels,
    validate_denoiser_inputs,
)
from .diffusion import DiffusionDenoiser
from .identity import IdentityDenoiser
from .schedule import max_sigma, noise_to_signal, timestep_for_sigma

__all__ = [
    "ADM_256_UNCOND",
    "ADMConfig",
    "Denoiser",
    "DiffusionDenoiser",
    "GuidedDiffusionModel",
    "IdentityDenoiser",
    "adm_scheduler_kwargs",
    "adm_unet_kwargs",
    "check_channels",
    "check_images",
    "check_sigma",
    "convert_adm_state_dict",
    "denoiser_in_channels",
    "load_guided_diffusion",
    "max_sigma",
    "noise_to_signal",
    "timestep_for_sigma",
    "validate_denoiser_inputs",
]
