"""The :class:`Denoiser` protocol and the input checks every denoiser shares.

Units
-----
All denoisers in :mod:`captum_fvit.denoise` work in **[0, 1] pixel units**:
the clean image ``x`` has values in [0, 1], the noisy input is
``x_noisy = x + delta`` with ``delta ~ N(0, sigma**2 I)`` (not clamped, so
``x_noisy`` may leave [0, 1]) and ``sigma`` is the standard deviation of that
noise in the same [0, 1] pixel units (``sigma = 0.25`` means a quarter of the
full dynamic range).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..validation import check_sigma

__all__ = [
    "Denoiser",
    "check_channels",
    "check_generator",
    "check_images",
    "check_sigma",
    "denoiser_in_channels",
    "randn_like",
    "validate_denoiser_inputs",
]


@runtime_checkable
class Denoiser(Protocol):
    """Anything that maps a Gaussian-noised image batch back to a clean one.

    A denoiser is called as ``denoiser(x_noisy, sigma, generator=None)``.

    Parameters
    ----------
    x_noisy : torch.Tensor
        ``N x C x H x W`` floating tensor in [0, 1] pixel units, equal to
        ``x + delta`` with ``delta ~ N(0, sigma**2 I)``. It is **not** clamped,
        so values may lie outside [0, 1].
    sigma : float
        Standard deviation of ``delta`` in [0, 1] pixel units; finite and > 0.
    generator : torch.Generator, optional
        Source of any randomness the denoiser uses internally (for example
        the extra noise of exact noise matching or stochastic multi-step
        sampling). Pass a seeded generator for reproducible results.

    Returns
    -------
    torch.Tensor
        Denoised batch with the same shape as ``x_noisy``, in [0, 1] pixel
        units.

    Notes
    -----
    A denoiser may also expose an ``in_channels`` attribute: the number of
    image channels it accepts, or ``None`` when it accepts any number. It is
    optional (plain functions are valid denoisers); read it with
    :func:`denoiser_in_channels`.
    """

    def __call__(
        self,
        x_noisy: Tensor,
        sigma: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        ...


def denoiser_in_channels(denoiser: object) -> int | None:
    """Number of image channels ``denoiser`` accepts (``None`` = any).

    Parameters
    ----------
    denoiser : object
        Any denoiser; one without an ``in_channels`` attribute accepts any
        number of channels.

    Returns
    -------
    int or None
    """
    channels = getattr(denoiser, "in_channels", None)
    return None if channels is None else int(channels)


def check_images(x: object, *, name: str = "x_noisy") -> Tensor:
    """Check that ``x`` is an ``N x C x H x W`` floating-point tensor.

    The denoiser-side twin of :func:`captum_fvit.validation.check_image_batch`: the same
    exception type for the same mistake (a non-tensor or a non-floating dtype is a
    ``TypeError``, a wrong shape a ``ValueError``), with [0, 1]-pixel advice, and no
    finiteness scan (the smoothing engine's ``FiniteGuard`` checks what comes back).

    Parameters
    ----------
    x : object
        Candidate image batch in [0, 1] pixel units.
    name : str
        Name used in error messages.

    Returns
    -------
    torch.Tensor
        ``x`` itself.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor or not floating point.
    ValueError
        If ``x`` is not 4-D.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape N x C x H x W, got "
            f"{type(x).__name__}."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor in [0, 1] pixel units, got "
            f"dtype {x.dtype}; convert uint8 images with x.float() / 255."
        )
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-D batch N x C x H x W in [0, 1] pixel units, "
            f"got shape {tuple(x.shape)}; add a batch dimension with "
            f"{name}.unsqueeze(0) for a single image."
        )
    return x


def check_channels(x: Tensor, expected: int | None, *, who: str = "this denoiser") -> None:
    """Raise if ``x`` does not have the number of channels ``who`` expects.

    Parameters
    ----------
    x : torch.Tensor
        ``N x C x H x W`` image batch.
    expected : int or None
        Channels expected; ``None`` accepts any.
    who : str
        Description of the denoiser, used in the error message.

    Raises
    ------
    ValueError
        On a channel mismatch.
    """
    if expected is None:
        return
    got = int(x.shape[1])
    if got != expected:
        hint = ""
        if expected == 3 and got == 1:
            hint = " Repeat a grayscale image to RGB with x.expand(-1, 3, -1, -1)."
        elif expected == 1 and got == 3:
            hint = " Convert RGB to grayscale before denoising."
        raise ValueError(
            f"{who} expects images with {expected} channel(s), got {got} "
            f"(input shape {tuple(x.shape)}).{hint} Otherwise use a denoiser "
            f"trained for {got}-channel images."
        )


def randn_like(like: Tensor, generator: object = None) -> Tensor:
    """Standard-normal noise shaped like ``like`` from ``generator``.

    ``generator`` may be ``None`` (torch's global generator), a :class:`torch.Generator`, or
    a :class:`~captum_fvit.noise.SampleNoise` (noise addressed per sample, so the result does
    not depend on chunking). Denoisers draw all their randomness through this function.
    """
    from ..noise import SampleNoise

    if isinstance(generator, SampleNoise):
        return generator.randn_like(like)
    if generator is None:
        return torch.randn(like.shape, dtype=like.dtype, device=like.device)
    noise = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=generator.device)
    return noise.to(like.device)


def check_generator(generator: object) -> object:
    """Check that ``generator`` is ``None``, a :class:`torch.Generator` or a
    :class:`~captum_fvit.noise.SampleNoise`.

    Raises
    ------
    TypeError
        If it is something else (for example an integer seed).
    """
    from ..noise import SampleNoise

    if generator is not None and not isinstance(generator, (torch.Generator, SampleNoise)):
        raise TypeError(
            "generator must be a torch.Generator, a captum_fvit.noise.SampleNoise or None, got "
            f"{type(generator).__name__}; build one with "
            "torch.Generator(device=x.device).manual_seed(seed)."
        )
    return generator


def validate_denoiser_inputs(
    x_noisy: object,
    sigma: object,
    generator: object = None,
    *,
    in_channels: int | None = None,
    who: str = "this denoiser",
) -> float:
    """Run every shared check of the denoiser contract; return ``sigma``.

    Parameters
    ----------
    x_noisy : torch.Tensor
        ``N x C x H x W`` batch in [0, 1] pixel units (unclamped).
    sigma : float
        Noise std in [0, 1] pixel units.
    generator : torch.Generator or None
    in_channels : int or None
        Channels the denoiser expects (``None`` = any).
    who : str
        Description of the denoiser for error messages.

    Returns
    -------
    float
        ``sigma`` as a float.
    """
    x = check_images(x_noisy)
    sigma_f = check_sigma(sigma)
    check_channels(x, in_channels, who=who)
    check_generator(generator)
    return sigma_f
