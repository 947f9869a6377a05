"""The do-nothing denoiser: plain randomized smoothing ("without denoise")."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import validate_denoiser_inputs

__all__ = ["IdentityDenoiser"]


class IdentityDenoiser:
    """Return the noisy image unchanged.

    With this denoiser DDS reduces to plain randomized smoothing (the
    "without denoise" ablation): the model explains ``x + delta`` directly.

    Parameters
    ----------
    clamp : bool, default False
        If True, clamp the output to [0, 1] pixel units. The default keeps the
        noisy image exactly as given (values may lie outside [0, 1]), which is
        what randomized smoothing analyses assume.

    Attributes
    ----------
    in_channels : None
        Any number of channels is accepted.

    Notes
    -----
    With ``clamp=False`` the returned tensor **is** ``x_noisy`` (no copy);
    callers must not modify it in place if they still need the input.
    """

    in_channels: int | None = None

    #: Draws its randomness through ``randn_like`` (per-sample addressable noise).
    accepts_sample_noise = True

    def __init__(self, *, clamp: bool = False) -> None:
        self.clamp = bool(clamp)

    def __call__(
        self,
        x_noisy: Tensor,
        sigma: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return ``x_noisy`` (clamped to [0, 1] if ``clamp``).

        Parameters
        ----------
        x_noisy : torch.Tensor
            ``N x C x H x W`` batch in [0, 1] pixel units (unclamped).
        sigma : float
            Noise std in [0, 1] pixel units; validated (finite, > 0), unused.
        generator : torch.Generator, optional
            Unused; accepted for the :class:`~captum_fvit.denoise.Denoiser`
            contract.

        Returns
        -------
        torch.Tensor
        """
        validate_denoiser_inputs(x_noisy, sigma, generator, who="IdentityDenoiser")
        return x_noisy.clamp(0.0, 1.0) if self.clamp else x_noisy

    def __repr__(self) -> str:
        return f"IdentityDenoiser(clamp={self.clamp})"
