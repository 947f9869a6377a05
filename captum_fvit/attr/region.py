"""``FaithfulRegion``: certified stability of the top-k attention tokens and the prediction.

The paper calls a ViT *faithful* at ``x`` when, for every input change within a radius, its
top-k attention tokens stay mostly the same and its prediction stays the same. With DDS both
the explanation and the prediction are Gaussian smoothings, and the Lipschitz lemma of
Gaussian smoothing (THEORY §2) turns Monte-Carlo estimates with simultaneous confidence
bounds into certified radii:

* per token, ``r_in`` (certified to stay in the smoothed top-k) and ``r_out`` (to stay out);
* ``R_β``: within it at least ``⌈βk⌉`` of the top-k tokens stay (top-k overlap ≥ β);
* ``R_pred``: Cohen et al.'s radius of the smoothed classifier's prediction;
* ``R = min(R_β, R_pred)``: the (R, β, k)-faithful radius, holding with probability
  ``≥ 1 − α − α_pred`` over the sampling.

All radii are ℓ2 distances in [0, 1] pixel units, also given as ℓ∞ (``R₂/√d``).

Sampling: ``n0`` samples from an independent noise stream select the class (Cohen's
CERTIFY); ``n`` fresh samples give the votes (or mean map) *and* the count of the selected
class, so the same denoised samples serve the explanation and the prediction certificate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.log import log_usage
from torch import nn

from .. import certify as cert
from ..explain.targets import TargetType
from ..noise import random_seed
from ..smoothing import SELECTION_STREAM
from .attention_map import InputType, forward_args_tuple, unpack_inputs
from .base import ViTAttribution
from .dds_attention import SMOOTHINGS, DDSAttention

__all__ = ["FaithfulRegion", "RegionCertificate"]


@dataclass
class RegionCertificate:
    """The certificate of one input.

    Radii are ℓ2 in [0, 1] pixel units unless named ``*_linf``. When ``certified`` is
    False the numbers are plug-in *estimates* (``alpha=None``), not certificates.

    Attributes
    ----------
    certified : bool
        Whether the bounds are confidence bounds (True) or point estimates (False).
    k, beta : int, float
        Top-k size and required overlap fraction.
    alpha, alpha_pred : float or None
        Failure probabilities of the explanation and prediction certificates; both hold
        together with probability ≥ ``confidence``.
    sigma : float
        Noise std in [0, 1] pixel units.
    n0, n : int
        Selection and estimation samples.
    smoothing : str
        ``"vote"`` or ``"mean"``.
    topk : Tensor
        Indices of the top-k tokens of the smoothed explanation (estimate).
    estimate, lower, upper : Tensor
        ``P`` point estimates of ``g`` and simultaneous bounds.
    r_in, r_out : Tensor
        ``P`` per-token radii.
    radius_beta, radius_beta_linf : float
        ``R_β`` (0 = abstain: fewer than ``⌈βk⌉`` tokens certified at all).
    label : int
        Class of the smoothed classifier (selected from the ``n0`` samples).
    abstain : bool
        The prediction certificate abstains (``p̲ ≤ 1/2``); then ``radius_pred = 0``.
    p_lower : float
        Lower confidence bound of ``P(f(x+δ) = label)``.
    radius_pred, radius_pred_linf : float
        ``R_pred``.
    radius, radius_linf : float
        ``min(R_β, R_pred)``: the input is an (R, β, k)-faithful point.
    region_radius : float
        Radius at which :attr:`region` was evaluated.
    region : Tensor
        ``P`` bool: tokens certified to stay in the top-k at every ``‖Δ‖ < region_radius``.
    grid : tuple of int
        Patch grid ``(h, w)``.
    """

    certified: bool
    k: int
    beta: float
    alpha: float | None
    alpha_pred: float | None
    sigma: float
    n0: int
    n: int
    smoothing: str
    topk: torch.Tensor
    estimate: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    r_in: torch.Tensor
    r_out: torch.Tensor
    radius_beta: float
    radius_beta_linf: float
    label: int
    abstain: bool
    p_lower: float
    radius_pred: float
    radius_pred_linf: float
    radius: float
    radius_linf: float
    region_radius: float
    region: torch.Tensor
    grid: tuple[int, int]
    seed: int = field(default=0)

    @property
    def confidence(self) -> float | None:
        """Probability (over the sampling) that every statement holds; None for estimates."""
        if not self.certified:
            return None
        return 1.0 - self.alpha - self.alpha_pred

    def summary(self) -> str:
        """One line a person can read."""
        kind = (
            f"certified with confidence {self.confidence:.4g}"
            if self.certified
            else "NOT certified (plug-in estimate)"
        )
        pred = (
            "abstains" if self.abstain else f"class {self.label}, R_pred={self.radius_pred:.4f}"
        )
        return (
            f"{kind}: top-{self.k} overlap ≥ {self.beta:g} within R_β={self.radius_beta:.4f} "
            f"(ℓ∞ {self.radius_beta_linf:.5f}); prediction {pred}; "
            f"faithful radius R={self.radius:.4f} (ℓ2, [0,1] pixel units)"
        )


class FaithfulRegion(ViTAttribution):
    """Certified faithful region of a ViT explanation smoothed with DDS.

    Parameters
    ----------
    model_or_dds : nn.Module or DDSAttention
        A configured :class:`DDSAttention` (its model, denoiser, method, σ, noise and
        normalisation are used), or the ViT itself.
    denoiser : callable, optional
        Denoiser when a model is given (``None`` = identity, plain randomized smoothing).
    method : str, default "rollout"
        Explanation method when a model is given.
    k : int, default 10
        Size of the top-k token set.
    beta : float, default 0.8
        Required top-k overlap fraction, in (0, 1].
    alpha : float or None, default 0.001
        Failure probability of the explanation certificate (simultaneous over all tokens);
        ``None`` = plug-in estimate, labelled not certified.
    alpha_pred : float or None, optional
        Failure probability of the prediction certificate (default: ``alpha``).
    n0 : int, default 64
        Selection samples (choose the class).
    n : int, default 1000
        Estimation samples (votes or mean map, and the count of the selected class).
    smoothing : {"vote", "mean"}, default "vote"
        Certify top-k vote frequencies (Clopper–Pearson) or the mean normalised map
        (empirical Bernstein).
    sigma, batch_size, **dds_kwargs
        Passed to :class:`DDSAttention` when a model is given (σ in [0, 1] pixel units).

    Raises
    ------
    ValueError
        For β ∉ (0, 1], α ∉ (0, 1), n0 or n < 1, k < 1, or non-Gaussian noise (the
        certificate's lemma holds for Gaussian noise only).
    """

    def __init__(
        self,
        model_or_dds: nn.Module | DDSAttention,
        denoiser: Callable | None = None,
        method: str = "rollout",
        *,
        k: int = 10,
        beta: float = 0.8,
        alpha: float | None = 0.001,
        alpha_pred: float | None = None,
        n0: int = 64,
        n: int = 1000,
        smoothing: str = "vote",
        sigma: float = 0.25,
        batch_size: int = 64,
        **dds_kwargs: Any,
    ) -> None:
        if isinstance(model_or_dds, DDSAttention):
            if denoiser is not None or dds_kwargs:
                raise ValueError(
                    "pass either a configured DDSAttention or a model with denoiser/DDS "
                    "options, not both"
                )
            dds = model_or_dds
        else:
            dds = DDSAttention(
                model_or_dds, denoiser, method, sigma=sigma, batch_size=batch_size, **dds_kwargs
            )
        super().__init__(dds.model)
        cert.require_gaussian(dds.engine.noise)
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not 0 < float(beta) <= 1:
            raise ValueError(f"beta must lie in (0, 1], got {beta}")
        for name, value in (("alpha", alpha), ("alpha_pred", alpha_pred)):
            if value is not None and not 0 < float(value) < 1:
                raise ValueError(f"{name} must lie in (0, 1) (or be None for an estimate), got {value}")
        if (alpha is None) != (alpha_pred is None) and alpha_pred is not None:
            raise ValueError("alpha_pred needs alpha: give both, or alpha=None for estimates")
        for name, value in (("n0", n0), ("n", n)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
        if smoothing == "mean" and alpha is not None and n < 2:
            raise ValueError("mean smoothing needs n ≥ 2 samples for its variance")
        self.dds = dds
        self.k = int(k)
        self.beta = float(beta)
        self.alpha = None if alpha is None else float(alpha)
        self.alpha_pred = self.alpha if alpha_pred is None else float(alpha_pred)
        self.n0 = int(n0)
        self.n = int(n)
        self.smoothing = smoothing

    @property
    def sigma(self) -> float:
        """Noise std in [0, 1] pixel units."""
        return self.dds.sigma

    def _check_k(self, images: torch.Tensor) -> None:
        explainer = self.dds.explainer
        patch = explainer.adapter.patch_size(explainer.model)
        tokens = (images.shape[-2] // patch[0]) * (images.shape[-1] // patch[1])
        if self.k >= tokens:
            raise ValueError(
                f"k={self.k} must be smaller than the number of patch tokens ({tokens} for "
                f"{images.shape[-2]}x{images.shape[-1]} inputs); choose a smaller k"
            )

    def certify(
        self,
        inputs: InputType,
        seed: int | None = None,
        radius: float = 0.0,
        additional_forward_args: Any = None,
        target: TargetType = None,
    ) -> list[RegionCertificate]:
        """Certify every input.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        seed : int, optional
            Seed of all noise draws.
        radius : float, default 0
            ℓ2 radius ([0, 1] pixel units) at which to report the faithful region.
        additional_forward_args : Any, optional
            Extra positional arguments for the model.
        target : optional
            Class to explain for class-specific methods (default: the class selected from
            the ``n0`` samples). The prediction certificate always uses the selected class.

        Returns
        -------
        list of RegionCertificate
            One per input.
        """
        images, _ = unpack_inputs(inputs)
        self._check_k(images)
        if not math.isfinite(radius) or radius < 0:
            raise ValueError(f"radius must be a finite number ≥ 0 (pixel units), got {radius}")
        seed = random_seed() if seed is None else int(seed)
        forward_args = forward_args_tuple(additional_forward_args)
        counts_n0 = self.dds.smoothed_prediction(
            images, self.n0, seed, stream=SELECTION_STREAM, forward_args=forward_args
        )
        selected = cert.select_class(counts_n0)
        explained = selected if target is None else target
        result = self.dds.details(
            images,
            target=explained if self.dds.method.class_specific else None,
            seed=seed,
            k=self.k,
            additional_forward_args=additional_forward_args,
            n_samples=self.n,
        )
        if self.smoothing == "vote":
            bounds = cert.vote_bounds(result.votes, self.n, self.alpha)
            estimate = result.votes.double() / self.n
        else:
            estimate = result.mean.double()
            bounds = cert.mean_bounds(estimate, result.variance, self.n, self.alpha)
        explanation = cert.certify_explanation(bounds, self.k, self.sigma, self.dds.engine.noise)
        r_beta = explanation.overlap_radius(self.beta)
        fresh = result.class_counts.gather(1, selected[:, None])[:, 0]
        prediction = cert.certify_prediction(
            counts_n0, fresh, self.n, self.alpha_pred, self.sigma, self.dds.engine.noise
        )
        d = math.prod(images.shape[1:])
        region = explanation.faithful_region(radius)
        topk = estimate.topk(self.k, dim=1).indices
        certificates = []
        for i in range(images.shape[0]):  # assembling results only; all sampling is batched
            rb = float(r_beta[i])
            rp = float(prediction.radius[i])
            r = min(rb, rp)
            certificates.append(
                RegionCertificate(
                    certified=bounds.certified,
                    k=self.k,
                    beta=self.beta,
                    alpha=self.alpha,
                    alpha_pred=self.alpha_pred if self.alpha is not None else None,
                    sigma=self.sigma,
                    n0=self.n0,
                    n=self.n,
                    smoothing=self.smoothing,
                    topk=topk[i],
                    estimate=estimate[i],
                    lower=bounds.lower[i],
                    upper=bounds.upper[i],
                    r_in=explanation.r_in[i],
                    r_out=explanation.r_out[i],
                    radius_beta=rb,
                    radius_beta_linf=float(cert.l2_to_linf(rb, d)),
                    label=int(prediction.label[i]),
                    abstain=bool(prediction.abstain[i]),
                    p_lower=float(prediction.p_lower[i]),
                    radius_pred=rp,
                    radius_pred_linf=float(cert.l2_to_linf(rp, d)),
                    radius=r,
                    radius_linf=float(cert.l2_to_linf(r, d)),
                    region_radius=float(radius),
                    region=region[i],
                    grid=result.grid,
                    seed=seed,
                )
            )
        return certificates

    def region(
        self,
        inputs: InputType,
        radius: float,
        seed: int | None = None,
        pixels: bool = False,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """Tokens certified to stay in the top-k for every ℓ2 change below ``radius``.

        Returns an ``N×P`` bool mask, or with ``pixels=True`` an ``N×1×H×W`` pixel mask.
        """
        images, _ = unpack_inputs(inputs)
        certificates = self.certify(images, seed, radius, additional_forward_args)
        mask = torch.stack([c.region for c in certificates])
        if not pixels:
            return mask
        pixels_mask = self.dds.explainer.to_pixels(
            mask.to(images.dtype), certificates[0].grid, images.shape[-2:], 1, "nearest"
        )
        return pixels_mask > 0.5

    @log_usage()
    def attribute(
        self,
        inputs: InputType,
        seed: int | None = None,
        additional_forward_args: Any = None,
    ) -> InputType:
        """Per-pixel certified radius ``r_in`` of its patch (0 where none), input's shape."""
        images, as_tuple = unpack_inputs(inputs)
        certificates = self.certify(images, seed, 0.0, additional_forward_args)
        r_in = torch.stack([c.r_in for c in certificates]).to(images.dtype)
        r_in = torch.nan_to_num(r_in, posinf=0.0)
        out = self.dds.explainer.to_pixels(
            r_in, certificates[0].grid, images.shape[-2:], images.shape[1], "nearest"
        )
        return (out,) if as_tuple else out
