"""The baselines DDS is compared with, all at the same noise level σ.

* ``"vanilla"`` — the attention map of the plain ViT (:class:`~captum_fvit.AttentionMap`);
  its classifier is the plain ViT.
* ``"smoothgrad"`` — what a Captum user would try first: Captum's
  :class:`~captum.attr.NoiseTunnel` (``nt_type="smoothgrad"``) around the same
  :class:`~captum_fvit.AttentionMap`, i.e. the average attention map over Gaussian noise added
  to the input, *without* a denoiser. NoiseTunnel adds its noise in the model's units, so the
  pixel σ is converted: ``stdev = σ / std`` (the model's per-channel normalisation std).
  It smooths the map only; its classifier is the plain ViT.
* ``"identity"`` — randomized smoothing without denoising: DDS with the identity denoiser
  (:class:`~captum_fvit.DDSAttention` with ``denoiser=None``); map and classifier smoothed.
* ``"dds"`` — Denoised Diffusion Smoothing with the diffusion denoiser.

Differences between ``smoothgrad`` and ``identity``: NoiseTunnel averages the raw token maps
``a`` (not the sum-normalised ``h``) and draws its noise from torch's global generator (seeded
here through ``torch.random.fork_rng``, so the caller's random state is untouched).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from torch import nn

from ...attr import AttentionMap
from ...denoise.base import check_sigma
from ...space import Normalization, resolve_normalization
from ...validation import check_count, check_seed

__all__ = ["BASELINES", "SmoothGradAttention", "noise_tunnel_stdev"]

#: The explanation variants compared in the paper preset, at one σ.
BASELINES = ("vanilla", "smoothgrad", "identity", "dds")


def noise_tunnel_stdev(sigma: float, normalization: Normalization) -> float:
    """NoiseTunnel's ``stdevs`` (model units) for pixel noise of std ``sigma`` ([0, 1] units).

    Raises
    ------
    ValueError
        When the channels have different normalisation stds (NoiseTunnel takes one stdev per
        input tensor, so equal pixel noise on every channel cannot be expressed); use the
        ``"identity"`` baseline (``DDSAttention(model, None, ...)``), which adds the noise in
        pixel units.
    """
    sigma = check_sigma(sigma)
    stds = set(float(s) for s in normalization.std)
    if len(stds) != 1:
        raise ValueError(
            f"the model normalises its channels with different stds {normalization.std}: "
            "NoiseTunnel adds one stdev to all channels, which is not one pixel σ; use "
            "DDSAttention(model, None, ...) (noise in pixel units, no denoiser) instead"
        )
    return sigma / stds.pop()


class SmoothGradAttention:
    """SmoothGrad-style average of an attention map through Captum's ``NoiseTunnel``.

    Parameters
    ----------
    model : nn.Module
        The ViT (left as it was).
    method : str, default "rollout"
        Explanation method of the wrapped :class:`~captum_fvit.AttentionMap`.
    sigma : float, default 0.25
        Noise std in **[0, 1] pixel units** (converted to the model's units for NoiseTunnel).
    n_samples : int, default 16
        ``nt_samples``.
    batch_size : int, optional
        ``nt_samples_batch_size`` (default: all samples at once).
    normalization : Normalization, optional
        The model's input normalisation.
    **method_options
        Options of the method.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "rollout",
        sigma: float = 0.25,
        n_samples: int = 16,
        *,
        batch_size: int | None = None,
        normalization: Normalization | None = None,
        **method_options: Any,
    ) -> None:
        self.normalization = normalization or resolve_normalization(model)
        self.sigma = check_sigma(sigma)
        self.stdev = noise_tunnel_stdev(self.sigma, self.normalization)
        self.n_samples = check_count(n_samples, "n_samples")
        self.batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
        # Nearest upsampling spreads each token's value over its patch exactly, so averaging
        # the pixel map over a patch gives back the token value.
        self.attention = AttentionMap(model, method, upsample="nearest", **method_options)
        self.method = self.attention.method
        self.tunnel = NoiseTunnel(self.attention)
        self.patch = self.attention.explainer.adapter.patch_size(model)

    def token_map(
        self, inputs: torch.Tensor, target: Any = None, seed: int | None = 0
    ) -> torch.Tensor:
        """``N×P`` NoiseTunnel-averaged token map of ``inputs`` (model normalisation).

        ``seed`` seeds NoiseTunnel's draws inside ``torch.random.fork_rng`` (the global random
        state is restored afterwards); ``None`` uses the current global state.
        """
        seed = check_seed(seed)
        devices = [inputs.device] if inputs.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            pixels = self.tunnel.attribute(
                inputs,
                nt_type="smoothgrad",
                nt_samples=self.n_samples,
                nt_samples_batch_size=self.batch_size,
                stdevs=self.stdev,
                target=target,
            )
        pooled = F.avg_pool2d(pixels[:, :1], kernel_size=tuple(self.patch), stride=tuple(self.patch))
        return pooled.flatten(1)

    def __repr__(self) -> str:
        return (
            f"SmoothGradAttention(method={self.method!r}, sigma={self.sigma:g} px "
            f"(stdev {self.stdev:g} model units), n_samples={self.n_samples})"
        )
