"""Certified curves: the fraction of images certified at radius ``r``, against ``r``.

Given per-image certified radii — ``R_β`` of the faithful region or ``R_pred`` of the smoothed
prediction, in **[0, 1] pixel units** (ℓ2) — the curve at ``r`` is the share of *all* images
with a certificate ``R ≥ r``. An abstention (radius 0 or NaN) never counts, not even at
``r = 0``, so the curve at 0 is the share of images that were certified at all (Cohen et al.
2019's "certified accuracy" when ``correct`` restricts it to correct predictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["CertifiedCurves", "certified_curves", "certified_fraction"]

RadiusArray = torch.Tensor | Sequence[float]


def _radii(radii: object, name: str) -> torch.Tensor:
    values = torch.as_tensor(radii, dtype=torch.float64).detach().cpu().reshape(-1)
    if values.numel() == 0:
        raise ValueError(f"{name} is empty: give one radius per image")
    if (values < 0).any():
        raise ValueError(
            f"{name} has negative radii ({values[values < 0][:4].tolist()}); a radius is ≥ 0 "
            "and an abstention is 0 or NaN"
        )
    return values


def _grid(grid: object) -> torch.Tensor:
    values = torch.as_tensor(grid, dtype=torch.float64).detach().cpu().reshape(-1)
    if values.numel() == 0:
        raise ValueError("the radius grid is empty")
    if not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"radius grid values must be finite and ≥ 0, got {values[:8].tolist()}")
    if values.numel() > 1 and (values[1:] < values[:-1]).any():
        raise ValueError("the radius grid must be sorted in increasing order")
    return values


def certified_fraction(
    radii: RadiusArray,
    radius_grid: RadiusArray,
    *,
    correct: torch.Tensor | Sequence[bool] | None = None,
) -> torch.Tensor:
    """Share of images with a certificate of radius ``≥ r`` for each ``r`` of ``radius_grid``.

    Parameters
    ----------
    radii : array-like
        ``N`` radii in [0, 1] pixel units; 0 or NaN = abstained (never counted); ``inf`` is
        allowed.
    radius_grid : array-like
        ``G`` increasing radii ``r ≥ 0``.
    correct : array-like of bool, optional
        ``N`` flags; images with ``False`` never count (certified accuracy).

    Returns
    -------
    Tensor
        ``G`` float64 fractions of all ``N`` images.
    """
    values = _radii(radii, "radii")
    grid = _grid(radius_grid)
    certified = (values > 0) & ~torch.isnan(values)
    if correct is not None:
        flags = torch.as_tensor(correct).detach().cpu().reshape(-1).bool()
        if flags.numel() != values.numel():
            raise ValueError(f"correct has {flags.numel()} entries for {values.numel()} radii")
        certified &= flags
    reach = (values[None, :] >= grid[:, None]) & certified[None, :]
    return reach.double().mean(dim=1)


@dataclass
class CertifiedCurves:
    """Certified curves on one radius grid.

    Attributes
    ----------
    radius : Tensor
        ``G`` radii ``r`` (pixel units).
    beta : Tensor or None
        ``G`` share of images with ``R_β ≥ r``.
    pred : Tensor or None
        ``G`` share of images with ``R_pred ≥ r``.
    n_images : int
        Images per curve.
    """

    radius: torch.Tensor
    beta: torch.Tensor | None
    pred: torch.Tensor | None
    n_images: int


def certified_curves(
    r_beta: RadiusArray | None = None,
    r_pred: RadiusArray | None = None,
    radius_grid: RadiusArray | None = None,
    *,
    num: int = 51,
    correct: torch.Tensor | Sequence[bool] | None = None,
) -> CertifiedCurves:
    """Curves of ``R_β`` and/or ``R_pred`` on a shared radius grid.

    Parameters
    ----------
    r_beta, r_pred : array-like, optional
        ``N`` radii each (pixel units; 0 or NaN = abstained). At least one is required; when
        both are given they must describe the same images.
    radius_grid : array-like, optional
        Radii to evaluate; default ``num`` evenly spaced points from 0 to the largest finite
        certified radius.
    num : int, default 51
        Points of the default grid.
    correct : array-like of bool, optional
        Count only these images (e.g. correctly classified ones) in both curves.
    """
    if r_beta is None and r_pred is None:
        raise ValueError("give r_beta, r_pred or both")
    given = [
        _radii(r, name) for r, name in ((r_beta, "r_beta"), (r_pred, "r_pred")) if r is not None
    ]
    if len(given) == 2 and given[0].numel() != given[1].numel():
        raise ValueError(
            f"r_beta has {given[0].numel()} radii and r_pred {given[1].numel()}; give one of "
            "each per image"
        )
    if radius_grid is None:
        if int(num) < 1:
            raise ValueError(f"num must be at least 1, got {num}")
        finite = torch.cat([g[torch.isfinite(g)] for g in given])
        top = float(finite.max()) if finite.numel() else 0.0
        radius_grid = torch.linspace(0.0, top, int(num), dtype=torch.float64) if top > 0 else [0.0]
    grid = _grid(radius_grid)
    beta = None if r_beta is None else certified_fraction(r_beta, grid, correct=correct)
    pred = None if r_pred is None else certified_fraction(r_pred, grid, correct=correct)
    return CertifiedCurves(radius=grid, beta=beta, pred=pred, n_images=given[0].numel())
