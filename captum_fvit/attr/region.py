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
CERTIFY, the routine shared with :class:`DDSAttention` and :class:`DDS`); ``n_samples`` fresh
samples give the votes (or mean map) *and* the count of the selected class, so the same
denoised samples serve the explanation and the prediction certificate.

Three questions can be asked, each a method with one return type: "what radius?"
(:meth:`FaithfulRegion.certify`: fixed ``n_samples``, the maximal radii,
:class:`RegionCertificate`), "is ``x`` faithful at radius ``r``?" (:meth:`FaithfulRegion.decide`:
an anytime-valid sequential test that stops as soon as the answer is decided,
:class:`~captum_fvit.attr.region_sequential.SequentialCertificate`) and "what radius can I
report whenever I stop?" (:meth:`FaithfulRegion.anytime_radii`,
:class:`~captum_fvit.attr.region_sequential.AnytimeCertificate`). All records share
:class:`~captum_fvit.attr.certificate.BaseCertificate`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    check_alpha,
    check_choice,
    check_count,
    check_k,
    check_probability,
    check_radius,
    check_seed,
    renamed_argument,
)
from .base import ViTAttribution, prepare_inputs
from .certificate import BaseCertificate, assemble_certificates
from .dds_attention import SMOOTHINGS, DDSAttention
from .region_sequential import (
    AnytimeCertificate,
    SequentialCertificate,
    anytime_radii,
    certify_at_radius,
    iter_anytime_radii,
)
from .selection import ClassSelection, explained_classes, select_classes

__all__ = ["FaithfulRegion", "RegionCertificate"]


@dataclass(kw_only=True)
class RegionCertificate(BaseCertificate):
    """The fixed-n certificate of one input (:meth:`FaithfulRegion.certify`).

    Radii are ℓ2 in [0, 1] pixel units unless named ``*_linf``. When ``certified`` is
    False the numbers are plug-in *estimates* (``alpha=None``), not certificates. Adds to
    the fields of :class:`~captum_fvit.attr.certificate.BaseCertificate` (where
    ``n_samples`` is the fixed number of estimation samples):

    Attributes
    ----------
    smoothing : str
        ``"vote"`` or ``"mean"``.
    topk : Tensor
        Indices of the top-k tokens of the smoothed explanation (estimate).
    estimate : Tensor
        ``P`` point estimates of ``g`` (``lower``/``upper`` are its simultaneous bounds).
    r_out : Tensor
        ``P`` per-token radii within which a token stays *out* of the top-k.
    abstain : bool
        The prediction certificate abstains (``p̲ ≤ 1/2``); then ``radius_pred = 0``.
    region_radius : float
        Radius at which :attr:`region` was evaluated.
    region : Tensor
        ``P`` bool: tokens certified to stay in the top-k at every ``‖Δ‖ < region_radius``.
    layout : TokenLayout
        Token layout (patch grid ``layout.grid``, patch size) of the token vectors.
    """

    smoothing: str
    topk: torch.Tensor
    estimate: torch.Tensor
    r_out: torch.Tensor
    abstain: bool
    region_radius: float
    region: torch.Tensor
    layout: TokenLayout

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of the token vectors."""
        return self.layout.grid

    @property
    def n(self) -> int:
        """Deprecated name of :attr:`n_samples` (removed in the next release)."""
        warnings.warn(
            "RegionCertificate.n is deprecated; use RegionCertificate.n_samples",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.n_samples

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

    Three questions, three methods: "what radius, from a fixed sample?" (:meth:`certify`),
    "is each input (r, β, k)-faithful at radius ``r``?" (:meth:`decide`, sequential, stops
    as soon as the answer is known) and "what radius can I report whenever I stop?"
    (:meth:`anytime_radii` / :meth:`iter_anytime_radii`).

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
    n_samples : int, default 1000
        Estimation samples (votes or mean map, and the count of the selected class); the
        default budget ``n_max`` of :meth:`decide` and :meth:`anytime_radii`.
    smoothing : {"vote", "mean"}, default "vote"
        Certify top-k vote frequencies (Clopper–Pearson) or the mean normalised map
        (empirical Bernstein).
    progress : bool, default False
        Show a progress bar over the denoised images.
    sigma, batch_size, n_select, **dds_kwargs
        When a model is given: passed to :class:`DDSAttention` (σ in [0, 1] pixel units,
        default 0.25; ``batch_size`` images per chunk, default 64; ``n_select`` default 64).
    n : int, optional
        Deprecated name of ``n_samples``.

    Raises
    ------
    ValueError
        For β ∉ (0, 1], α ∉ (0, 1), counts < 1, k < 1, options given together with a
        configured DDSAttention, or non-Gaussian noise (the certificate's lemma holds for
        Gaussian noise only).
    TypeError
        For non-integer counts (``n_samples=2.5``, ``k=True``).
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
        n_samples: int | None = None,
        smoothing: str = "vote",
        progress: bool = False,
        sigma: float | None = None,
        batch_size: int | None = None,
        n_select: int | None = None,
        n: int | None = None,
        **dds_kwargs: Any,
    ) -> None:
        options = dict(denoiser=denoiser, method=method, sigma=sigma, batch_size=batch_size,
                       n_select=n_select, **dds_kwargs)  # fmt: skip
        dds = _dds_of(model_or_dds, options)
        super().__init__(dds.model)
        cert.require_gaussian(dds.engine.noise)
        self.smoothing = check_choice(smoothing, "smoothing", SMOOTHINGS)
        self.k = check_k(k)
        self.beta = check_probability(beta, "beta", high_open=False)
        self.alpha = check_alpha(alpha, allow_none=True)
        if alpha_pred is not None and alpha is None:
            raise ValueError("alpha_pred needs alpha: give both, or alpha=None for estimates")
        self.alpha_pred = (
            self.alpha if alpha_pred is None else check_alpha(alpha_pred, "alpha_pred")
        )
        if n is not None:
            renamed_argument(n_samples, n, "n_samples", "n", None, "FaithfulRegion")
            self.n_samples = check_count(n, "n")
        else:
            self.n_samples = check_count(1000 if n_samples is None else n_samples, "n_samples")
        if smoothing == "mean" and alpha is not None and self.n_samples < 2:
            raise ValueError("mean smoothing needs n_samples ≥ 2 for its variance")
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

    @property
    def n(self) -> int:
        """Deprecated name of :attr:`n_samples` (removed in the next release)."""
        warnings.warn(
            "FaithfulRegion.n is deprecated; use FaithfulRegion.n_samples",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.n_samples

    def check_k(self, images: torch.Tensor) -> int:
        """``k``, checked to be smaller than the number of patch tokens of ``images``.

        Raises
        ------
        ValueError
            When ``k`` is not smaller than the token count of an ``images``-sized input.
        """
        return check_k(self.k, self.dds.token_count(images.shape[-2:]))

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
        process_group=None,
        **sequential_options: Any,
    ) -> list[RegionCertificate]:
        """The fixed-n certificate of every input: maximal certified radii from ``n_samples``.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        seed : int, optional
            Seed of all noise draws.
        radius : float, optional
            Deprecated: ``certify(x, radius=r)`` is :meth:`decide` ``(x, r)`` (it returns
            :class:`~captum_fvit.attr.region_sequential.SequentialCertificate`); pass the
            sequential options (``n_max``, ``chunk``, ``confidence_sequence``, ``stop``,
            ``time_budget_s``) only with it.
        additional_forward_args : Any, optional
            Extra positional arguments for the model.
        target : optional
            Class to explain for class-specific methods (default: the selected class). The
            prediction certificate always uses the selected class.
        process_group : torch.distributed.ProcessGroup, optional
            Split the samples over the group's ranks.

        Returns
        -------
        list of RegionCertificate
            One certificate per input.
        """
        if radius is not None:
            warnings.warn(
                "FaithfulRegion.certify(x, radius=r) is deprecated (removed in the next "
                "release): use FaithfulRegion.decide(x, r, ...) for the sequential decision",
                DeprecationWarning,
                stacklevel=2,
            )
            if process_group is not None:
                raise ValueError(
                    "the sequential test at a radius runs on one process; shard images across "
                    "ranks instead (captum-fvit evaluate under torchrun)"
                )
            options = _sequential_options(sequential_options)
            return self.decide(inputs, radius, seed, additional_forward_args, target, **options)
        if sequential_options:
            _sequential_options(sequential_options)  # TypeError for unknown keywords
            raise ValueError(
                f"{sorted(sequential_options)} set the sequential test at a radius: call "
                "decide(x, radius, ...) (certify is the fixed-n certificate from n_samples)"
            )
        images = prepare_inputs(inputs, self.model, self.dds.normalization).images
        return self._certify_fixed(
            images, seed, 0.0, additional_forward_args, target, process_group
        )

    def decide(
        self,
        inputs: InputType,
        radius: float,
        seed: int | None = None,
        additional_forward_args: Any = None,
        target: TargetType = None,
        *,
        n_max: int | None = None,
        samples_per_look: int | None = None,
        confidence_sequence: str = "beta_binomial",
        stop: str = "faithful",
        time_budget_s: float | None = None,
        chunk: int | None = None,
        method: str | None = None,
    ) -> list[SequentialCertificate]:
        """Is each input (radius, β, k)-faithful? An anytime-valid sequential test that
        stops each input as soon as its answer is decided or ``n_max`` samples are spent.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        radius : float
            ℓ2 radius ``r ≥ 0`` to decide, in [0, 1] pixel units.
        seed, additional_forward_args, target
            As in :meth:`certify`.
        n_max : int, optional
            Estimation-sample budget per input (default ``n_samples``).
        samples_per_look : int, optional
            Samples between looks (default 32).
        confidence_sequence : {"beta_binomial", "union"}, default "beta_binomial"
            Robbins' mixture, or Clopper–Pearson with α spent over the pre-declared looks.
        stop : {"faithful", "both"}, default "faithful"
            Stop when the combined answer is known, or only when both parts are.
        time_budget_s : float, optional
            Wall-clock budget in seconds; the reported radii stay valid.
        chunk, method : optional
            Deprecated names of ``samples_per_look`` and ``confidence_sequence``.

        Returns
        -------
        list of SequentialCertificate
            One per input (:func:`captum_fvit.attr.region_sequential.certify_at_radius`).
        """
        look = renamed_argument(samples_per_look, chunk, "samples_per_look", "chunk", None,
                                "FaithfulRegion.decide")  # fmt: skip
        kind = renamed_argument(confidence_sequence, method, "confidence_sequence", "method",
                                "beta_binomial", "FaithfulRegion.decide")  # fmt: skip
        with model_lock(self.model):  # certify_at_radius checks and prepares the inputs
            return certify_at_radius(
                self, inputs, radius, seed, forward_args_tuple(additional_forward_args),
                target, n_max=n_max, samples_per_look=look, confidence_sequence=kind,
                stop=stop, time_budget_s=time_budget_s,
            )  # fmt: skip

    def iter_anytime_radii(
        self,
        inputs: InputType,
        seed: int | None = None,
        additional_forward_args: Any = None,
        target: TargetType = None,
        *,
        n_max: int | None = None,
        samples_per_look: int | None = None,
        confidence_sequence: str = "beta_binomial",
    ) -> Iterator[list[AnytimeCertificate]]:
        """Anytime-valid certificates of every input after each look; stop iterating
        whenever you like (:func:`captum_fvit.attr.region_sequential.iter_anytime_radii`).

        Parameters as in :meth:`decide`; ``n_max`` (default ``n_samples``) ends the loop.
        """
        return iter_anytime_radii(
            self, inputs, seed, forward_args_tuple(additional_forward_args), target,
            n_max=n_max, samples_per_look=samples_per_look,
            confidence_sequence=confidence_sequence,
        )  # fmt: skip

    def anytime_radii(
        self,
        inputs: InputType,
        seed: int | None = None,
        additional_forward_args: Any = None,
        target: TargetType = None,
        *,
        n_max: int | None = None,
        time_budget_s: float | None = None,
        samples_per_look: int | None = None,
        confidence_sequence: str = "beta_binomial",
    ) -> list[AnytimeCertificate]:
        """Anytime-valid ``R_β``, ``R_pred`` and ``R`` within a sample and/or time budget
        (:func:`captum_fvit.attr.region_sequential.anytime_radii`).

        Parameters as in :meth:`decide`; returns the certificates of the last look.
        """
        with model_lock(self.model):
            return anytime_radii(
                self, inputs, seed, forward_args_tuple(additional_forward_args), target,
                n_max=n_max, time_budget_s=time_budget_s, samples_per_look=samples_per_look,
                confidence_sequence=confidence_sequence,
            )  # fmt: skip

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
        self.check_k(images)
        seed = random_seed() if seed is None else check_seed(seed)
        forward_args = forward_args_tuple(additional_forward_args)
        dds = self.dds
        with model_lock(self.model):
            selection = self.select(images, seed, forward_args, process_group=process_group)
            explained = None
            if dds.method.class_specific:  # the selected class unless a target is given
                explained = selection.classes if target is None else explained_classes(
                    dds.engine, dds.model, images, target, dds.n_select, seed, forward_args
                )
            dds.engine.check_inputs(images)
            result = dds.details_prepared(
                images, explained, seed, self.k, forward_args, range(self.n_samples),
                process_group=process_group, progress=self.progress,
            )  # fmt: skip
        return self._assemble(images, selection, result, region_radius, seed)

    def _assemble(self, images, selection, result, region_radius, seed) -> list[RegionCertificate]:
        n = self.n_samples
        if self.smoothing == "vote":
            bounds = cert.vote_bounds(result.votes, n, self.alpha)
            estimate = result.votes.double() / n
        else:
            estimate = result.mean.double()
            bounds = cert.mean_bounds(estimate, result.variance, n, self.alpha)
        noise = self.dds.engine.noise
        explanation = cert.certify_explanation(bounds, self.k, self.sigma, noise)
        fresh = result.class_counts.gather(1, selection.classes[:, None])[:, 0]
        prediction = cert.certify_prediction(
            selection.counts, fresh, n, self.alpha_pred, self.sigma, noise
        )
        return assemble_certificates(
            RegionCertificate,
            images.shape[1:],
            radius_beta=explanation.overlap_radius(self.beta),
            radius_pred=prediction.radius,
            per_input=dict(
                label=prediction.label, abstain=prediction.abstain, p_lower=prediction.p_lower,
                lower=bounds.lower, upper=bounds.upper, r_in=explanation.r_in,
                r_out=explanation.r_out, estimate=estimate,
                topk=estimate.topk(self.k, dim=1).indices,
                region=explanation.faithful_region(region_radius),
            ),
            shared=dict(
                certified=bounds.certified, k=self.k, beta=self.beta, sigma=self.sigma,
                alpha=self.alpha, alpha_pred=self.alpha_pred if self.alpha is not None else None,
                n_select=self.n_select, n_samples=n, smoothing=self.smoothing,
                region_radius=float(region_radius), layout=result.layout, seed=seed,
            ),
        )  # fmt: skip

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
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        seed: int | None = None,
    ) -> InputType:
        """Per-pixel certified radius ``r_in`` of its patch (0 where none), input's shape.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        target : int, sequence of int or Tensor, optional
            Captum's slot: the class to explain for class-specific methods (default: the
            smoothed classifier's class).
        additional_forward_args : Any, optional
            Extra positional arguments for the model.
        seed : int, optional
            Seed of all noise draws (keyword only; before 0.2 it was the second argument).
        """
        if seed is None and isinstance(target, int) and not isinstance(target, bool):
            warnings.warn(
                "FaithfulRegion.attribute(inputs, target, ...) takes Captum's target second; "
                "it took the seed there before: pass the seed as seed=... (this warning goes "
                "in the next release)",
                DeprecationWarning,
                stacklevel=3,
            )
        prepared = prepare_inputs(inputs, self.model, self.dds.normalization)
        images = prepared.images
        certificates = self._certify_fixed(images, seed, 0.0, additional_forward_args, target)
        r_in = torch.stack([c.r_in for c in certificates]).to(images.dtype)
        r_in = torch.nan_to_num(r_in, posinf=0.0)
        out = tokens_to_pixels(
            r_in, certificates[0].layout, images.shape[-2:], images.shape[1], "nearest"
        )
        return prepared.wrap(out)


#: Keywords of the sequential test that the deprecated ``certify(x, radius=r)`` forwards.
_SEQUENTIAL_KEYWORDS = {
    "n_max": "n_max",
    "chunk": "samples_per_look",
    "samples_per_look": "samples_per_look",
    "confidence_sequence": "confidence_sequence",
    "stop": "stop",
    "time_budget_s": "time_budget_s",
}


def _sequential_options(options: dict) -> dict:
    """Keywords of the deprecated ``certify(x, radius=r, ...)`` under :meth:`decide`'s names."""
    unknown = sorted(set(options) - set(_SEQUENTIAL_KEYWORDS))
    if unknown:
        raise TypeError(f"FaithfulRegion.certify() got unexpected keyword arguments {unknown}")
    return {_SEQUENTIAL_KEYWORDS[name]: value for name, value in options.items()}


def _dds_of(model_or_dds: nn.Module | DDSAttention, options: dict) -> DDSAttention:
    """The DDSAttention to certify: the one given (then ``options`` must be unset), or one
    built for the model from ``options``."""
    if isinstance(model_or_dds, DDSAttention):
        given = sorted(name for name, value in options.items() if value is not None)
        if given:
            raise ValueError(
                f"FaithfulRegion got a configured DDSAttention and also {given}; "
                "the DDSAttention's own settings are used, so configure them there (e.g. "
                "DDSAttention(model, denoiser, method='raw', sigma=0.5)) or pass the model "
                "instead of the DDSAttention"
            )
        return model_or_dds
    defaults = dict(sigma=0.25, batch_size=64, n_select=64)
    options = {name: value for name, value in options.items() if value is not None}
    denoiser = options.pop("denoiser", None)
    method = options.pop("method", "rollout")
    return DDSAttention(model_or_dds, denoiser, method, **{**defaults, **options})
