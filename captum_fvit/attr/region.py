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

Sampling: ``n_select`` samples from an independent noise stream select the class (Cohen's
CERTIFY, the routine shared with :class:`DDSAttention` and :class:`DDS`); ``n`` fresh samples
give the votes (or mean map) *and* the count of the selected class, so the same denoised
samples serve the explanation and the prediction certificate.

Two questions can be asked: "what radius?" (:meth:`FaithfulRegion.certify` without
``radius``: fixed ``n``, the maximal radii) and "is ``x`` faithful at radius ``r``?"
(``certify(x, radius=r)``: an anytime-valid sequential test that stops as soon as the answer
is decided, :mod:`captum_fvit.attr.sequential`).
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
from ..attention.layout import TokenLayout
from ..concurrency import model_lock
from ..model_io import InputType, TargetType, forward_args_tuple
from ..noise import random_seed
from ..space import tokens_to_pixels
from ..validation import (
    check_choice,
    check_count,
    check_k,
    check_probability,
    check_radius,
    check_seed,
)
from .base import ViTAttribution, prepare_inputs
from .dds_attention import SMOOTHINGS, DDSAttention
from .selection import ClassSelection, explained_classes, select_classes

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
    n_select, n : int
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
        Class of the smoothed classifier (selected from the ``n_select`` samples).
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
    layout : TokenLayout
        Token layout (patch grid ``layout.grid``, patch size) of the token vectors.
    seed : int
        Seed of the noise.
    """

    certified: bool
    k: int
    beta: float
    alpha: float | None
    alpha_pred: float | None
    sigma: float
    n_select: int
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
    layout: TokenLayout
    seed: int = field(default=0)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of the token vectors."""
        return self.layout.grid

    def region_at(self, radius: float) -> torch.Tensor:
        """``P`` bool: the tokens certified to stay in the top-k for every ℓ2 change smaller
        than ``radius`` ([0, 1] pixel units), i.e. ``r_in > radius`` (no new sampling)."""
        return cert.faithful_region(self.r_in, check_radius(radius))

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
        A configured :class:`DDSAttention` (its model, denoiser, method, σ, noise, batch size,
        ``n_select`` and normalisation are used — passing any of those options too is an
        error, never silently ignored), or the ViT itself.
    denoiser : callable, optional
        Denoiser when a model is given (``None`` = identity, plain randomized smoothing).
    method : str, optional
        Explanation method when a model is given (default ``"rollout"``).
    k : int, default 10
        Size of the top-k token set.
    beta : float, default 0.8
        Required top-k overlap fraction, in (0, 1].
    alpha : float or None, default 0.001
        Failure probability of the explanation certificate (simultaneous over all tokens);
        ``None`` = plug-in estimate, labelled not certified.
    alpha_pred : float or None, optional
        Failure probability of the prediction certificate (default: ``alpha``).
    n : int, default 1000
        Estimation samples (votes or mean map, and the count of the selected class); the
        budget ``n_max`` of the sequential test at a given radius.
    smoothing : {"vote", "mean"}, default "vote"
        Certify top-k vote frequencies (Clopper–Pearson) or the mean normalised map
        (empirical Bernstein).
    progress : bool, default False
        Show a progress bar over the denoised images.
    sigma, batch_size, n_select, **dds_kwargs
        When a model is given: passed to :class:`DDSAttention` (σ in [0, 1] pixel units,
        default 0.25; ``batch_size`` default 64; ``n_select`` default 64).

    Raises
    ------
    ValueError
        For β ∉ (0, 1], α ∉ (0, 1), counts < 1, k < 1, options given together with a
        configured DDSAttention, or non-Gaussian noise (the certificate's lemma holds for
        Gaussian noise only).
    TypeError
        For non-integer counts (``n=2.5``, ``k=True``).
    """

    def __init__(
        self,
        model_or_dds: nn.Module | DDSAttention,
        denoiser: Callable | None = None,
        method: str | None = None,
        *,
        k: int = 10,
        beta: float = 0.8,
        alpha: float | None = 0.001,
        alpha_pred: float | None = None,
        n: int = 1000,
        smoothing: str = "vote",
        progress: bool = False,
        sigma: float | None = None,
        batch_size: int | None = None,
        n_select: int | None = None,
        **dds_kwargs: Any,
    ) -> None:
        if isinstance(model_or_dds, DDSAttention):
            given = {
                name: value
                for name, value in (
                    ("denoiser", denoiser),
                    ("method", method),
                    ("sigma", sigma),
                    ("batch_size", batch_size),
                    ("n_select", n_select),
                )
                if value is not None
            }
            given.update(dds_kwargs)
            if given:
                raise ValueError(
                    f"FaithfulRegion got a configured DDSAttention and also {sorted(given)}; "
                    "the DDSAttention's own settings are used, so configure them there (e.g. "
                    "DDSAttention(model, denoiser, method='raw', sigma=0.5)) or pass the model "
                    "instead of the DDSAttention"
                )
            dds = model_or_dds
        else:
            dds = DDSAttention(
                model_or_dds,
                denoiser,
                "rollout" if method is None else method,
                sigma=0.25 if sigma is None else sigma,
                batch_size=64 if batch_size is None else batch_size,
                n_select=64 if n_select is None else n_select,
                **dds_kwargs,
            )
        super().__init__(dds.model)
        cert.require_gaussian(dds.engine.noise)
        self.smoothing = check_choice(smoothing, "smoothing", SMOOTHINGS)
        self.k = check_k(k)
        self.beta = check_probability(beta, "beta", high_open=False)
        self.alpha = None if alpha is None else check_probability(alpha, "alpha")
        if alpha_pred is not None and alpha is None:
            raise ValueError("alpha_pred needs alpha: give both, or alpha=None for estimates")
        self.alpha_pred = (
            self.alpha if alpha_pred is None else check_probability(alpha_pred, "alpha_pred")
        )
        self.n = check_count(n, "n")
        if smoothing == "mean" and alpha is not None and self.n < 2:
            raise ValueError("mean smoothing needs n ≥ 2 samples for its variance")
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        self.progress = progress
        self.dds = dds
        self.model = dds.model

    @property
    def sigma(self) -> float:
        """Noise std in [0, 1] pixel units."""
        return self.dds.sigma

    @property
    def n_select(self) -> int:
        """Selection samples (those of the DDSAttention)."""
        return self.dds.n_select

    def _check_k(self, images: torch.Tensor) -> None:
        check_k(self.k, self.dds.token_count(images.shape[-2:]))

    def select(
        self,
        images: torch.Tensor,
        seed: int,
        forward_args: tuple = (),
        *,
        process_group=None,
    ) -> ClassSelection:
        """The class of each input selected from ``n_select`` independent samples (with the
        counts), by the routine shared with :class:`DDSAttention` and :class:`DDS`."""
        with model_lock(self.model):
            return select_classes(
                self.dds.engine,
                self.dds.model,
                images,
                self.n_select,
                seed,
                forward_args,
                process_group=process_group,
                progress=self.progress,
            )

    def certify(
        self,
        inputs: InputType,
        seed: int | None = None,
        radius: float | None = None,
        additional_forward_args: Any = None,
        target: TargetType = None,
        *,
        n_max: int | None = None,
        chunk: int | None = None,
        confidence_sequence: str = "beta_binomial",
        stop: str = "faithful",
        time_budget_s: float | None = None,
        process_group=None,
    ) -> list:
        """Certify every input.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        seed : int, optional
            Seed of all noise draws.
        radius : float, optional
            ``None``: the maximal certified radii from ``n`` samples
            (:class:`RegionCertificate`). A number ``r`` (ℓ2, [0, 1] pixel units): decide
            whether each input is (r, β, k)-faithful with an anytime-valid sequential test
            that stops as soon as the answer is decided or ``n_max`` samples are spent
            (:class:`~captum_fvit.attr.sequential.SequentialCertificate`).
        additional_forward_args : Any, optional
            Extra positional arguments for the model.
        target : optional
            Class to explain for class-specific methods (default: the selected class). The
            prediction certificate always uses the selected class.
        n_max : int, optional
            Sample budget of the sequential test (default ``n``); only with ``radius``.
        chunk, confidence_sequence, stop, time_budget_s : optional
            Settings of the sequential test, only with ``radius``: samples per look (default
            32), ``"beta_binomial"`` (Robbins' mixture) or ``"union"`` confidence sequences,
            stop when the combined answer is known (``"faithful"``) or when both parts are
            (``"both"``), and a wall-clock budget in seconds
            (:func:`captum_fvit.attr.sequential.certify_at_radius`).
        process_group : torch.distributed.ProcessGroup, optional
            Split the samples over the group's ranks (fixed-n certification).

        Returns
        -------
        list
            One certificate per input.
        """
        if radius is None:
            sequential_options = {
                "n_max": n_max is not None,
                "chunk": chunk is not None,
                "confidence_sequence": confidence_sequence != "beta_binomial",
                "stop": stop != "faithful",
                "time_budget_s": time_budget_s is not None,
            }
            given = [name for name, set_ in sequential_options.items() if set_]
            if given:
                raise ValueError(
                    f"{given} set the sequential test at a radius: pass radius=r too (the "
                    "fixed-n certificate uses n samples)"
                )
            images = prepare_inputs(inputs, self.model, self.dds.normalization).images
            return self._certify_fixed(
                images, seed, 0.0, additional_forward_args, target, process_group
            )
        radius = check_radius(radius)
        if process_group is not None:
            raise ValueError(
                "the sequential test at a radius runs on one process; shard images across "
                "ranks instead (captum-fvit evaluate under torchrun)"
            )
        from .sequential import certify_at_radius

        with model_lock(self.model):  # certify_at_radius checks and prepares the inputs
            return certify_at_radius(
                self,
                inputs,
                radius,
                seed,
                forward_args_tuple(additional_forward_args),
                target,
                n_max=n_max,
                chunk=chunk,
                method=confidence_sequence,
                stop=stop,
                time_budget_s=time_budget_s,
            )

    def _certify_fixed(
        self,
        images: torch.Tensor,
        seed: int | None,
        region_radius: float,
        additional_forward_args: Any,
        target: TargetType,
        process_group=None,
    ) -> list[RegionCertificate]:
        """The fixed-n certificate of images already prepared by the public entry point."""
        self._check_k(images)
        seed = random_seed() if seed is None else check_seed(seed)
        forward_args = forward_args_tuple(additional_forward_args)
        dds = self.dds
        with model_lock(self.model):
            selection = self.select(images, seed, forward_args, process_group=process_group)
            explained = None
            if dds.method.class_specific:
                explained = selection.classes
                if target is not None:
                    explained = explained_classes(
                        dds.engine, dds.model, images, target, dds.n_select, seed, forward_args
                    )
            dds.engine.check_inputs(images)
            result = dds._details(
                images, explained, seed, self.k, forward_args, range(self.n), process_group,
                self.progress,
            )  # fmt: skip
        return self._assemble(images, selection, result, region_radius, seed)

    def _assemble(self, images, selection, result, region_radius, seed) -> list[RegionCertificate]:
        if self.smoothing == "vote":
            bounds = cert.vote_bounds(result.votes, self.n, self.alpha)
            estimate = result.votes.double() / self.n
        else:
            estimate = result.mean.double()
            bounds = cert.mean_bounds(estimate, result.variance, self.n, self.alpha)
        explanation = cert.certify_explanation(bounds, self.k, self.sigma, self.dds.engine.noise)
        r_beta = explanation.overlap_radius(self.beta)
        fresh = result.class_counts.gather(1, selection.classes[:, None])[:, 0]
        prediction = cert.certify_prediction(
            selection.counts, fresh, self.n, self.alpha_pred, self.sigma, self.dds.engine.noise
        )
        d = math.prod(images.shape[1:])
        region = explanation.faithful_region(region_radius)
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
                    n_select=self.n_select,
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
                    region_radius=float(region_radius),
                    region=region[i],
                    layout=result.layout,
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
        """Tokens certified to stay in the top-k for every ℓ2 change below ``radius``
        (fixed-n certificate).

        Returns an ``N×P`` bool mask, or with ``pixels=True`` an ``N×1×H×W`` pixel mask.
        """
        radius = check_radius(radius)
        if not isinstance(pixels, bool):
            raise TypeError(f"pixels must be True or False, got {pixels!r}")
        images = prepare_inputs(inputs, self.model, self.dds.normalization).images
        certificates = self._certify_fixed(images, seed, radius, additional_forward_args, None)
        mask = torch.stack([c.region for c in certificates])
        if not pixels:
            return mask
        pixels_mask = tokens_to_pixels(
            mask.to(images.dtype), certificates[0].layout, images.shape[-2:], 1, "nearest"
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
        prepared = prepare_inputs(inputs, self.model, self.dds.normalization)
        images = prepared.images
        certificates = self._certify_fixed(images, seed, 0.0, additional_forward_args, None)
        r_in = torch.stack([c.r_in for c in certificates]).to(images.dtype)
        r_in = torch.nan_to_num(r_in, posinf=0.0)
        out = tokens_to_pixels(
            r_in, certificates[0].layout, images.shape[-2:], images.shape[1], "nearest"
        )
        return prepared.wrap(out)
