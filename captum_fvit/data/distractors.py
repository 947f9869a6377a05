"""Distractors: small shapes of random colour that carry no class information.

Every distractor is a *capsule* (the set of points within radius ``r`` of a segment of
half-length ``L``), which covers three kinds, chosen with probabilities 0.35 / 0.35 / 0.30:

=========  ==================  ======================  ==========================
kind       radius ``r`` (px)   half-length ``L`` (px)  looks like
=========  ==================  ======================  ==========================
dot        1.0 – 2.2           0                       a small dot
segment    0.5 – 0.9           3.5 – 8                 a thin line segment
blob       1.2 – 2.0           2.5 – 5                 a small elongated pill
=========  ==================  ======================  ==========================

(pixel sizes at 64×64; they scale with the image side). The largest distractor covers
about 1.3 % of a 64×64 image, a fifth of the smallest object, and none is close to any
class shape: a dot is far smaller than the smallest disk, pills are elongated (aspect ≥ 2.25).

Distractors are placed uniformly over the image, in random colours, and are drawn *under*
the object and kept at least :data:`KEEP_OUT` pixels (scaled) away from it, so they never
hide or touch the object's outline. Where distractors overlap, later ones are painted over
earlier ones. Each is rendered only on a small patch around it (cost independent of the
image area).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .rng import DOMAIN_DISTRACTORS, cos_sin, counter_uniform

__all__ = ["DistractorParams", "KEEP_OUT", "patch_size", "sample_distractor_params", "draw_distractors"]

#: Minimum gap between distractors and the object, in pixels at 64×64 (scaled with the side).
KEEP_OUT = 2.0

_KIND_CDF = (0.35, 0.70)  # dot | segment | blob
_RADIUS = ((1.0, 2.2), (0.5, 0.9), (1.2, 2.0))
_HALF_LENGTH = ((0.0, 0.0), (3.5, 8.0), (2.5, 5.0))
_PER_DISTRACTOR = 9
_INACTIVE_RADIUS = -1.0e6


@dataclass(frozen=True)
class DistractorParams:
    """Per-image distractor parameters, ``D`` = maximum distractors per image.

    Attributes
    ----------
    center : torch.Tensor
        ``(B, D, 2)`` centres ``(x, y)`` in pixels.
    half_vec : torch.Tensor
        ``(B, D, 2)`` half-segment vector ``L (cos, sin)`` in pixels.
    inv_len2 : torch.Tensor
        ``(B, D)`` ``1 / L²`` (0 for dots), in 1/pixels².
    radius : torch.Tensor
        ``(B, D)`` radius in pixels (a huge negative value for unused slots).
    colour : torch.Tensor
        ``(B, D, 3)`` colours in ``[0, 1]``.
    count : torch.Tensor
        ``(B,)`` int64 number of distractors drawn.
    """

    center: torch.Tensor
    half_vec: torch.Tensor
    inv_len2: torch.Tensor
    radius: torch.Tensor
    colour: torch.Tensor
    count: torch.Tensor


def sample_distractor_params(
    seed: int, indices: np.ndarray, image_size: int, count_range: tuple[int, int] = (3, 7)
) -> DistractorParams:
    """Draw the distractors of images ``indices`` of dataset ``seed``.

    Parameters
    ----------
    seed : int
        Dataset seed.
    indices : numpy.ndarray
        ``(B,)`` non-negative image indices.
    image_size : int
        Image side in pixels.
    count_range : (int, int)
        Inclusive range of the number of distractors per image.

    Returns
    -------
    DistractorParams
    """
    lo, hi = count_range
    d = max(hi, 1)
    u = counter_uniform(seed, indices, DOMAIN_DISTRACTORS, 1 + d * _PER_DISTRACTOR)
    b = u.shape[0]
    count = lo + np.minimum(np.floor(u[:, 0] * (hi - lo + 1)), hi - lo).astype(np.int64)
    p = u[:, 1:].reshape(b, d, _PER_DISTRACTOR)
    kind = (p[..., 0] >= _KIND_CDF[0]).astype(np.int64) + (p[..., 0] >= _KIND_CDF[1])
    k = image_size / 64.0
    r_lo = np.take(np.array([r[0] for r in _RADIUS]), kind)
    r_hi = np.take(np.array([r[1] for r in _RADIUS]), kind)
    l_lo = np.take(np.array([h[0] for h in _HALF_LENGTH]), kind)
    l_hi = np.take(np.array([h[1] for h in _HALF_LENGTH]), kind)
    radius = (r_lo + (r_hi - r_lo) * p[..., 1]) * k
    half = (l_lo + (l_hi - l_lo) * p[..., 2]) * k
    c, s = cos_sin(math.pi * p[..., 3])
    center = p[..., 4:6] * image_size
    colour = p[..., 6:9]
    active = np.arange(d)[None, :] < count[:, None]
    radius = np.where(active, radius, _INACTIVE_RADIUS)
    len2 = half * half
    inv_len2 = np.where(len2 > 0.0, 1.0 / np.where(len2 > 0.0, len2, 1.0), 0.0)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).float()

    return DistractorParams(
        center=t(center),
        half_vec=t(np.stack([half * c, half * s], axis=-1)),
        inv_len2=t(inv_len2),
        radius=t(radius),
        colour=t(colour),
        count=torch.from_numpy(count),
    )


def patch_size(image_size: int) -> int:
    """Side, in pixels, of the square patch that holds any distractor of an image.

    Covers every pixel centre within ``L + r + 0.5`` of the centre for the largest
    distractor, wherever its centre falls within a pixel.
    """
    k = image_size / 64.0
    extent = (max(h[1] for h in _HALF_LENGTH) + max(r[1] for r in _RADIUS)) * k + 0.5
    return min(image_size, 2 * math.ceil(extent + 2.0))


def draw_distractors(
    canvas: torch.Tensor,
    params: DistractorParams,
    keep_out: torch.Tensor | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Paint distractors onto ``canvas``, one after the other (later ones on top).

    Each distractor is rendered only on the square patch (:func:`patch_size`) around it,
    gathered from and scattered back into the canvas, so the cost does not grow with the
    image area.

    Parameters
    ----------
    canvas : torch.Tensor
        ``(B, 3, H, W)`` float32 background (not modified).
    params : DistractorParams
        From :func:`sample_distractor_params`.
    keep_out : torch.Tensor, optional
        ``(B, H, W)`` distractor opacity factor in ``[0, 1]`` (0 where nothing may be drawn).
    antialias : bool
        Box-filtered edges (a 1-pixel ramp of the signed distance) if true, hard edges if not.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` new canvas.
    """
    b, _, h, w = canvas.shape
    if h != w:
        raise ValueError(f"canvas must be square, got {h}x{w}")
    # Slots beyond the largest count in the batch are unused everywhere: skipping them is exact.
    used = int(params.count.max()) if params.count.numel() else 0
    out = canvas.reshape(b, 3, h * w).clone()
    if used == 0:
        return out.reshape(b, 3, h, w)
    p = patch_size(w)
    ar = torch.arange(p)
    keep_flat = keep_out.reshape(b, h * w) if keep_out is not None else None
    for j in range(used):
        cx = params.center[:, j, 0]
        cy = params.center[:, j, 1]
        ox = (torch.floor(cx).long() - p // 2).clamp(0, w - p)
        oy = (torch.floor(cy).long() - p // 2).clamp(0, h - p)
        xs = ox[:, None] + ar  # (B, P) pixel columns
        ys = oy[:, None] + ar  # (B, P) pixel rows
        flat = (ys[:, :, None] * w + xs[:, None, :]).reshape(b, p * p)
        dx = (xs.float() + 0.5 - cx[:, None])[:, None, :]  # (B, 1, P)
        dy = (ys.float() + 0.5 - cy[:, None])[:, :, None]  # (B, P, 1)
        hx = params.half_vec[:, j, 0, None, None]
        hy = params.half_vec[:, j, 1, None, None]
        il = params.inv_len2[:, j, None, None]
        t = (dx * (hx * il) + dy * (hy * il)).clamp(-1.0, 1.0)
        qx = dx - t * hx
        qy = dy - t * hy
        dist = torch.sqrt(qx * qx + qy * qy) - params.radius[:, j, None, None]
        alpha = (0.5 - dist).clamp(0.0, 1.0) if antialias else (dist <= 0.0).float()
        alpha = alpha.reshape(b, 1, p * p)
        if keep_flat is not None:
            alpha = alpha * torch.gather(keep_flat, 1, flat)[:, None]
        idx3 = flat[:, None, :].expand(b, 3, p * p)
        patch = torch.gather(out, 2, idx3)
        patch = patch + (params.colour[:, j, :, None] - patch) * alpha
        out.scatter_(2, idx3, patch)
    return out.reshape(b, 3, h, w)
