"""The certificate record every certifier returns, and the one routine that builds them.

:class:`BaseCertificate` holds what every certificate of one input states — the top-k
explanation's bounds and radii, the prediction's, and the faithful radius
``R = min(R_β, R_pred)`` — whether it comes from the fixed-n certificate
(:class:`~captum_fvit.attr.region.RegionCertificate`) or from the anytime-valid sequences
(:class:`~captum_fvit.attr.region_sequential.AnytimeCertificate` and
:class:`~captum_fvit.attr.region_sequential.SequentialCertificate`).
:func:`assemble_certificates` turns the batched tensors of a certifier into one record per
input; all maths stays in the pure tensor functions of :mod:`captum_fvit.certify` and
:mod:`captum_fvit.certify_sequential`.

Radii are ℓ2 in [0, 1] pixel units unless named ``*_linf`` (ℓ∞, ``R₂/√d`` with ``d = C·H·W``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from .. import certify as cert
from ..validation import check_radius

__all__ = ["BaseCertificate", "assemble_certificates"]

C = TypeVar("C", bound="BaseCertificate")


@dataclass(kw_only=True)
class BaseCertificate:
    """What a certificate of one input states (fields shared by every certificate record).

    Attributes
    ----------
    certified : bool
        Whether the bounds are confidence bounds (True) or plug-in point estimates (False,
        ``alpha=None``: numbers, not certificates).
    k, beta : int, float
        Top-k size and required top-k overlap fraction in (0, 1].
    sigma : float
        Noise std in [0, 1] pixel units.
    alpha, alpha_pred : float or None
        Failure probabilities of the explanation and prediction statements; together they
        hold with probability ≥ :attr:`confidence`.
    n_select : int
        Selection samples (the class, Cohen et al.'s step 1).
    n_samples : int
        Estimation samples the statements use.
    label : int
        The smoothed classifier's class, selected from the ``n_select`` samples.
    lower, upper : Tensor
        ``P`` simultaneous bounds on the smoothed per-token statistic ``g``.
    r_in : Tensor
        ``P`` per-token radii: token ``i`` stays in the smoothed top-k for ``‖Δ‖₂ < r_in[i]``.
    radius_beta, radius_beta_linf : float
        ``R_β``: the top-k overlap stays ≥ β within it (0 = abstain).
    p_lower : float
        Lower bound of ``P(f(x+δ) = label)``.
    radius_pred, radius_pred_linf : float
        ``R_pred = σ Φ⁻¹(p_lower)`` (Cohen et al.; 0 where ``p_lower ≤ 1/2``).
    radius, radius_linf : float
        ``min(R_β, R_pred)``: the input is an (R, β, k)-faithful point.
    seed : int
        Seed of all noise draws.
    """

    certified: bool
    k: int
    beta: float
    sigma: float
    alpha: float | None
    alpha_pred: float | None
    n_select: int
    n_samples: int
    label: int
    lower: torch.Tensor
    upper: torch.Tensor
    r_in: torch.Tensor
    radius_beta: float
    radius_beta_linf: float
    p_lower: float
    radius_pred: float
    radius_pred_linf: float
    radius: float
    radius_linf: float
    seed: int

    @property
    def confidence(self) -> float | None:
        """Probability (over the sampling) that every statement holds, ``1 − α − α_pred``;
        ``None`` for plug-in estimates."""
        if not self.certified:
            return None
        return 1.0 - self.alpha - self.alpha_pred

    def region_at(self, radius: float) -> torch.Tensor:
        """``P`` bool: the tokens certified to stay in the top-k for every ℓ2 change smaller
        than ``radius`` ([0, 1] pixel units), i.e. ``r_in > radius`` (no new sampling)."""
        return cert.faithful_region(self.r_in, check_radius(radius))


def assemble_certificates(
    cls: type[C],
    input_shape: Sequence[int],
    *,
    radius_beta: torch.Tensor,
    radius_pred: torch.Tensor,
    per_input: Mapping[str, torch.Tensor | Sequence[Any]],
    shared: Mapping[str, Any],
) -> list[C]:
    """One ``cls`` record per input from a certifier's batched results.

    Computes ``radius = min(R_β, R_pred)`` and the three ℓ∞ radii (``R₂/√d``) once for the
    batch; every other field comes from ``per_input`` (row ``i`` of each batched value: 0-d
    entries become Python numbers, rows stay tensors) or ``shared`` (the same for all).

    Parameters
    ----------
    cls : type
        A :class:`BaseCertificate` subclass.
    input_shape : sequence of int
        ``(C, H, W)`` of one image (its ``d = C·H·W`` converts ℓ2 to ℓ∞ radii).
    radius_beta, radius_pred : Tensor
        ``N`` ℓ2 radii ([0, 1] pixel units).
    per_input : mapping
        Field name → value with a leading batch dimension ``N`` (tensor or list).
    shared : mapping
        Field name → value common to every input (``k``, ``sigma``, ``seed``, ...).

    Returns
    -------
    list
        ``N`` records, in input order.
    """
    rb = radius_beta.detach().to(torch.float64).cpu()
    rp = radius_pred.detach().to(torch.float64).cpu()
    radius = torch.minimum(rb, rp)
    d = math.prod(int(s) for s in input_shape)
    columns: dict[str, list] = {
        "radius_beta": rb.tolist(),
        "radius_pred": rp.tolist(),
        "radius": radius.tolist(),
        "radius_beta_linf": cert.l2_to_linf(rb, d).tolist(),
        "radius_pred_linf": cert.l2_to_linf(rp, d).tolist(),
        "radius_linf": cert.l2_to_linf(radius, d).tolist(),
    }
    for name, value in per_input.items():
        columns[name] = _rows(value)
    n = len(columns["radius"])
    wrong = [name for name, rows in columns.items() if len(rows) != n]
    if wrong:
        raise ValueError(f"per-input values {wrong} do not have one entry per input ({n})")
    return [
        cls(**shared, **{name: rows[i] for name, rows in columns.items()}) for i in range(n)
    ]


def _rows(value: torch.Tensor | Sequence[Any]) -> list:
    """Rows of a batched value: Python numbers for a 1-d tensor (one transfer), else views."""
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.dim() == 1 else list(value.unbind(0))
    return list(value)
