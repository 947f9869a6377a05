"""Textured clutter behind the object: colour gradient + two octaves of value noise + stripes.

Each image's background is the sum of

* a linear colour gradient between two random colours (each channel in ``[0.05, 0.95]``)
  along a random direction, spanning the image;
* band-limited colour *value noise*: random values on a coarse lattice (4×4 cells, amplitude
  0.08–0.22) and a fine lattice (12×12 cells, amplitude 0.03–0.10), interpolated with a
  smooth-step fade (separably, so the cost is a few tensor operations per image);
* with probability ``stripe_prob``, soft stripes (a smoothed triangle wave, period 4–12 px at
  64×64, amplitude 0.05–0.15) of random orientation, phase and colour.

Sizes are relative to the image side, so a 128×128 background is a finer rendering of the
same pattern family as a 64×64 one. The result is *not* clamped (the benchmark clamps the
final image). Random numbers come from :mod:`.rng`, so the background of image ``i`` depends
only on ``(seed, i)``. Only exactly-rounded arithmetic (and ``floor``/``abs``) touches pixel
tensors; angles go through Python's :mod:`math`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .rng import DOMAIN_BACKGROUND, DOMAIN_NOISE, cos_sin, counter_uniform

__all__ = ["BackgroundParams", "sample_background_params", "render_background", "value_noise"]

#: Lattice cells per image side of the coarse and fine noise octaves.
NOISE_CELLS: tuple[int, int] = (4, 12)
_NOISE_AMPLITUDE = ((0.08, 0.22), (0.03, 0.10))
_STRIPE_PERIOD = (4.0 / 64.0, 12.0 / 64.0)  # fraction of the image side
_STRIPE_AMPLITUDE = (0.05, 0.15)
_COLOUR_RANGE = (0.05, 0.95)
_N_SCALARS = 17


@dataclass(frozen=True)
class BackgroundParams:
    """Per-image background parameters (tensors with leading batch dimension ``B``).

    Attributes
    ----------
    colour0, colour1 : torch.Tensor
        ``(B, 3)`` gradient end colours, in ``[0, 1]``.
    gradient_dir : torch.Tensor
        ``(B, 2)`` unit gradient direction ``(cos, sin)``.
    noise : tuple of torch.Tensor
        Per octave, ``(B, 3, G+1, G+1)`` lattice values already scaled by the amplitude.
    stripe : torch.Tensor
        ``(B,)`` bool, whether the image has stripes.
    stripe_wave : torch.Tensor
        ``(B, 3)``: ``cos/period``, ``sin/period`` (1/pixels) and phase of the stripes.
    stripe_colour : torch.Tensor
        ``(B, 3)`` stripe colour offset (amplitude times a direction in ``[-1, 1]³``).
    """

    colour0: torch.Tensor
    colour1: torch.Tensor
    gradient_dir: torch.Tensor
    noise: tuple[torch.Tensor, ...]
    stripe: torch.Tensor
    stripe_wave: torch.Tensor
    stripe_colour: torch.Tensor


def _lerp(lo: float, hi: float, u: np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * u


def sample_background_params(
    seed: int, indices: np.ndarray, image_size: int, stripe_prob: float = 0.5
) -> BackgroundParams:
    """Draw the background parameters of images ``indices`` of dataset ``seed``.

    Parameters
    ----------
    seed : int
        Dataset seed.
    indices : numpy.ndarray
        ``(B,)`` non-negative image indices.
    image_size : int
        Image side in pixels.
    stripe_prob : float
        Probability that an image has stripes.

    Returns
    -------
    BackgroundParams
    """
    u = counter_uniform(seed, indices, DOMAIN_BACKGROUND, _N_SCALARS)
    b = u.shape[0]
    colour0 = _lerp(*_COLOUR_RANGE, u[:, 0:3])
    colour1 = _lerp(*_COLOUR_RANGE, u[:, 3:6])
    gc, gs = cos_sin(2.0 * math.pi * u[:, 6])
    amps = [_lerp(*_NOISE_AMPLITUDE[k], u[:, 7 + k]) for k in range(len(NOISE_CELLS))]
    stripe = u[:, 9] < stripe_prob
    sc, ss = cos_sin(math.pi * u[:, 10])
    period = _lerp(*_STRIPE_PERIOD, u[:, 11]) * image_size
    phase = u[:, 12]
    s_amp = _lerp(*_STRIPE_AMPLITUDE, u[:, 13])
    s_dir = 2.0 * u[:, 14:17] - 1.0

    sizes = [(g + 1) * (g + 1) * 3 for g in NOISE_CELLS]
    lat = counter_uniform(seed, indices, DOMAIN_NOISE, sum(sizes))
    noise = []
    start = 0
    for g, n, amp in zip(NOISE_CELLS, sizes, amps):
        vals = (2.0 * lat[:, start : start + n] - 1.0) * amp[:, None]
        noise.append(torch.from_numpy(vals.reshape(b, 3, g + 1, g + 1)).float())
        start += n

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).float()

    return BackgroundParams(
        colour0=t(colour0),
        colour1=t(colour1),
        gradient_dir=t(np.stack([gc, gs], axis=1)),
        noise=tuple(noise),
        stripe=torch.from_numpy(stripe),
        stripe_wave=t(np.stack([sc / period, ss / period, phase], axis=1)),
        stripe_colour=t(s_amp[:, None] * s_dir),
    )


def _fade_weights(size: int, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice cell index ``(size,)`` int64 and smooth-step weight ``(size,)`` per pixel."""
    t = (np.arange(size, dtype=np.float64) + 0.5) * (cells / size)
    i0 = np.minimum(np.floor(t).astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3.0 - 2.0 * f)
    return torch.from_numpy(i0), torch.from_numpy(f).float()


def value_noise(lattice: torch.Tensor, image_size: int) -> torch.Tensor:
    """Interpolate lattice values over an image with a smooth-step fade (separably).

    Parameters
    ----------
    lattice : torch.Tensor
        ``(B, C, G+1, G+1)`` values at the lattice nodes (``G`` cells per side).
    image_size : int
        Output side in pixels.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` float32 noise, ``H = W = image_size``.
    """
    cells = lattice.shape[-1] - 1
    i0, f = _fade_weights(image_size, cells)
    # Along x: (B, C, G+1, W).
    step = lattice[..., 1:] - lattice[..., :-1]
    rows = torch.index_select(lattice, -1, i0) + torch.index_select(step, -1, i0) * f
    # Along y: (B, C, H, W); differences are taken on the small (G+1)-row tensor.
    step = rows[..., 1:, :] - rows[..., :-1, :]
    return torch.index_select(rows, -2, i0) + torch.index_select(step, -2, i0) * f[:, None]


def render_background(params: BackgroundParams, image_size: int) -> torch.Tensor:
    """Render backgrounds (not clamped).

    Parameters
    ----------
    params : BackgroundParams
        From :func:`sample_background_params`.
    image_size : int
        Image side in pixels.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` float32 colours, roughly in ``[0, 1]``.
    """
    n = image_size
    pix = torch.arange(n, dtype=torch.float32) + 0.5
    rel = (pix - 0.5 * n) / n  # in [-0.5, 0.5]
    gx = params.gradient_dir[:, 0, None, None]
    gy = params.gradient_dir[:, 1, None, None]
    t = (rel[None, None, :] * gx + rel[None, :, None] * gy + 0.5).clamp(0.0, 1.0)  # (B, H, W)
    c0 = params.colour0[:, :, None, None]
    bg = c0 + (params.colour1[:, :, None, None] - c0) * t[:, None]
    for lattice in params.noise:
        bg = bg + value_noise(lattice, n)

    sel = torch.nonzero(params.stripe).flatten()
    if sel.numel():
        w = params.stripe_wave[sel]
        phase = w[:, 2, None, None]
        s = pix[None, None, :] * w[:, 0, None, None] + (pix[None, :, None] * w[:, 1, None, None] + phase)
        s = s - torch.floor(s)
        tri = (s * 2.0 - 1.0).abs()
        tri = tri * tri * (3.0 - tri * 2.0) - 0.5  # smooth-step, centred: [-0.5, 0.5]
        bg[sel] = bg[sel] + params.stripe_colour[sel][:, :, None, None] * tri[:, None]
    return bg
