"""Adaptive attacks on DDS: the attacker knows the defence and differentiates through it.

Both attacks follow the gradient of the *smoothed* quantity itself — noise → denoiser → ViT
→ explanation method — estimated with ``n_eot`` fresh noise samples per step (expectation
over transformation, Athalye et al. 2018) by :class:`~captum_fvit.differentiable.
DifferentiableDDS`; nothing is transferred from the plain model (compare the *transfer*
attacks :func:`~captum_fvit.evaluate.attacks.prediction.pgd_attack` and
:func:`~captum_fvit.evaluate.attacks.explanation_attack.topk_explanation_attack`, which differentiate
the plain ViT only).

* :func:`smooth_pgd` — PGD on the smoothed classifier (SmoothAdv, Salman et al. 2019): ascend
  the cross-entropy ``−log p̄_y(x')`` of the softmax averaged over denoised samples.
* :func:`adaptive_topk` — the label-preserving top-k explanation attack (Ghorbani et al. 2019)
  on the DDS map: ascend ``−Σ_{i∈T_k} g_i(x')``, the smoothed mass on the clean top-k tokens
  ``T_k = T_k(g(x))``, rejecting steps that change the smoothed classifier's label.

Both are thin layers: :func:`smooth_pgd` is the one EOT-PGD
(:func:`~captum_fvit.evaluate.attacks.eot_pgd.eot_pgd`), :func:`adaptive_topk` the one label-preserving
ascent (:func:`~captum_fvit.evaluate.attacks.topk_ascent.label_preserving_ascent`) that the transfer
top-k attack runs too. Threat models ℓ∞ and ℓ2, radius ε in **[0, 1] pixel units**, random
start (stream :data:`~captum_fvit.noise.ATTACK_START_STREAM`), the attacked pixels kept in
[0, 1]. Inputs and outputs are in the model's normalisation. Step ``s`` uses noise samples
``s·m … (s+1)·m − 1`` of stream :data:`~captum_fvit.noise.ADAPTIVE_STREAM` (seeded by
``seed``), never the stream DDS explains with, so the attack does not overfit the
evaluation's noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...differentiable import DifferentiableDDS
from ...explain.base import TokenMapMethod
from ...noise import ADAPTIVE_LABEL_STREAM, ADAPTIVE_STREAM, random_seed
from ...space import Normalization, resolve_normalization
from ...validation import (
    check_count,
    check_eps,
    check_image_batch,
    check_k,
    check_norm,
    check_seed,
    renamed_argument,
)
from ..metrics.similarity import topk_indices
from .eot_pgd import ADAPTIVE_STREAMS, check_eot_pgd_arguments, eot_pgd
from .labels import LabelType, deprecated_alias, resolve_labels
from .pixels import clean_pixels, resolve_step, seeded_start
from .topk_ascent import Probe, label_preserving_ascent

__all__ = [
    "ADAPTIVE_STREAM",
    "ADAPTIVE_LABEL_STREAM",
    "AdaptiveTopKResult",
    "adaptive_topk",
    "smooth_pgd",
]


def _engine(
    dds: DifferentiableDDS | None,
    model: nn.Module,
    denoiser: Callable | None,
    method: str | TokenMapMethod,
    sigma: float,
    normalization: Normalization | None,
    batch_size: int,
    noise: str,
) -> DifferentiableDDS:
    """``dds``, or a :class:`DifferentiableDDS` built from the entry point's arguments."""
    if dds is not None:
        return dds
    normalization = normalization or resolve_normalization(model)
    return DifferentiableDDS(
        model, denoiser, method, sigma, normalization=normalization, batch_size=batch_size,
        noise=noise,
    )  # fmt: skip


def smooth_pgd(
    model: nn.Module,
    denoiser: Callable | None,
    inputs: torch.Tensor,
    target: LabelType = None,
    eps: float = 8 / 255,
    sigma: float = 0.25,
    n_eot: int = 8,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    normalization: Normalization | None = None,
    seed: int | None = None,
    batch_size: int = 32,
    noise: str = "gaussian",
    dds: DifferentiableDDS | None = None,
    labels: LabelType = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """PGD on the smoothed (denoised) classifier, SmoothAdv-style, with chunked EOT gradients.

    Parameters
    ----------
    model : nn.Module
        ViT classifier; not modified.
    denoiser : callable or None
        The DDS denoiser (``None`` = identity: plain randomized smoothing). A
        :class:`~captum_fvit.denoise.DiffusionDenoiser` is differentiated through a twin with
        ``differentiable=True``; the caller's object is not changed.
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation (pixels in [0, 1]).
    target : Tensor, sequence of int or int, optional
        Classes whose smoothed probability is lowered (Captum's ``target``); default the
        smoothed classifier's majority class over ``n_eot`` samples of
        :data:`ADAPTIVE_LABEL_STREAM`.
    eps : float, default 8/255
        Radius of the ℓ∞ or ℓ2 ball in **[0, 1] pixel units** (0 returns the inputs).
    sigma : float, default 0.25
        Noise std of the smoothed classifier, **[0, 1] pixel units**.
    n_eot : int, default 8
        Noise samples per step (fresh at every step: EOT).
    norm : {"linf", "l2"}, default "linf"
    steps : int, default 10
    step_size : float, optional
        Pixel units; default ``eps / 5`` (as the transfer PGD). ℓ∞: ``α·sign(g)``;
        ℓ2: ``α·g/‖g‖₂``.
    random_start : bool, default True
        Start uniformly in the ball.
    normalization : Normalization, optional
        The model's normalisation.
    seed : int, optional
        Seed of the random start and of every noise draw.
    batch_size : int, default 32
        Images per chunk through denoiser and ViT (memory bound; the result does not depend
        on it).
    noise : {"gaussian", "laplace", "uniform"}
        Noise distribution (std σ).
    dds : DifferentiableDDS, optional
        A configured engine to reuse (its model, denoiser, σ, normalisation and batch size
        win).
    labels : Tensor or sequence of int, optional
        Deprecated name of ``target``.
    chunk_size : int, optional
        Deprecated name of ``batch_size``.

    Returns
    -------
    Tensor
        ``N×C×H×W`` adversarial inputs in the model's normalisation.

    Notes
    -----
    The loss is SmoothAdv's ``−log p̄_y``; its gradient is ``−∇p̄_y / p̄_y``, a positive
    per-image multiple of ``−∇p̄_y``. Signed (ℓ∞) and normalised (ℓ2) steps do not depend on
    that multiple, so each step needs only the one-pass EOT estimate of ``∇p̄_y``.
    """
    target = renamed_argument(target, labels, "target", "labels", None, "smooth_pgd")
    batch_size = renamed_argument(batch_size, chunk_size, "batch_size", "chunk_size", 32, "smooth_pgd")
    a = check_eot_pgd_arguments(inputs, norm, eps, steps, n_eot, step_size, seed)
    dds = _engine(dds, model, denoiser, "raw", sigma, normalization, batch_size, noise)
    pixels = clean_pixels(a.images, dds.normalization)
    adversarial = eot_pgd(
        dds, pixels, target, a.eps, a.n_eot, norm=a.norm, steps=a.steps, alpha=a.alpha,
        seed=a.seed, random_start=random_start, streams=ADAPTIVE_STREAMS, label_rule="vote",
    )  # fmt: skip
    return dds.normalization.from_pixels(adversarial).to(a.images.dtype).detach()


@dataclass
class AdaptiveTopKResult:
    """Outcome of :func:`adaptive_topk`.

    Attributes
    ----------
    adversarial : Tensor
        ``N×C×H×W`` attacked inputs (model normalisation).
    target : Tensor
        ``N`` smoothed-classifier labels the attack keeps (``labels``: deprecated alias).
    topk_index : Tensor
        ``N×k`` the clean DDS top-k tokens ``T_k``.
    clean_map : Tensor
        ``N×P`` DDS map of the clean inputs (``n_clean`` samples, stream 0).
    mass_clean, mass_adversarial : Tensor
        ``N`` estimates of the smoothed mass on ``T_k``: on the clean input (the ``n_clean``
        samples) and at the returned point (the ``n_eot`` samples of its step).
    label_kept : Tensor
        ``N`` bool: the EOT estimate of the smoothed label at the returned point is ``target``.
    accepted_steps : Tensor
        ``N`` steps that kept the label.
    """

    adversarial: torch.Tensor
    target: torch.Tensor
    topk_index: torch.Tensor
    clean_map: torch.Tensor
    mass_clean: torch.Tensor
    mass_adversarial: torch.Tensor
    label_kept: torch.Tensor
    accepted_steps: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        """Deprecated name of :attr:`target`."""
        return deprecated_alias(self.target, "AdaptiveTopKResult.labels", "target")


def adaptive_topk(
    model: nn.Module,
    denoiser: Callable | None,
    inputs: torch.Tensor,
    k: int,
    eps: float = 8 / 255,
    sigma: float = 0.25,
    method: str | TokenMapMethod = "rollout",
    n_eot: int = 8,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    n_clean: int = 32,
    target: LabelType = None,
    topk_index: torch.Tensor | None = None,
    keep_label: bool = True,
    normalization: Normalization | None = None,
    seed: int | None = None,
    batch_size: int = 32,
    noise: str = "gaussian",
    dds: DifferentiableDDS | None = None,
    labels: LabelType = None,
    chunk_size: int | None = None,
) -> AdaptiveTopKResult:
    """Label-preserving top-k attack on the DDS map itself (EOT through the denoiser).

    Ascends ``J(x') = −Σ_{i∈T_k} g_i(x')`` (``g`` the DDS mean map, a probability vector over
    the patch tokens) with ℓ∞ signed or ℓ2 normalised steps; a step after which the EOT
    estimate of the smoothed label differs from ``target`` is rejected for that image and its
    step size halved (Ghorbani et al. 2019). The last accepted iterate is returned.

    Parameters
    ----------
    model, denoiser, inputs, eps, sigma, n_eot, norm, steps, step_size, random_start, normalization, seed, batch_size, noise, dds, labels, chunk_size
        As in :func:`smooth_pgd` (ε, σ in **[0, 1] pixel units**).
    k : int
        Size of the top-k set.
    method : str or TokenMapMethod, default "rollout"
        Explanation method of the DDS map (``"raw"``, ``"rollout"``, ``"grad_rollout"``, ...).
    n_clean : int, default 32
        Samples (stream 0) of the clean DDS map that defines ``T_k`` and the default target.
    target : Tensor, sequence of int or int, optional
        Labels to keep (and the class explained by class-specific methods: Captum's
        ``target``); default the smoothed classifier's majority class on the ``n_clean``
        samples.
    topk_index : Tensor, optional
        ``N×k`` target set; default the top-k of the clean DDS map.
    keep_label : bool, default True
        Reject label-changing steps (``False``: an unconstrained attack on the map, used by the
        certificate check whose claim does not depend on the label).

    Returns
    -------
    AdaptiveTopKResult
    """
    target = renamed_argument(target, labels, "target", "labels", None, "adaptive_topk")
    batch_size = renamed_argument(batch_size, chunk_size, "batch_size", "chunk_size", 32, "adaptive_topk")
    images = check_image_batch(inputs)
    norm = check_norm(norm)
    eps = check_eps(eps)
    steps = check_count(steps, "steps")
    n_eot = check_count(n_eot, "n_eot")
    n_clean = check_count(n_clean, "n_clean")
    seed = check_seed(seed)
    seed = random_seed() if seed is None else seed
    alpha = resolve_step(step_size, eps)
    dds = _engine(dds, model, denoiser, method, sigma, normalization, batch_size, noise)
    name = next(iter(dds.methods))
    pixels = clean_pixels(images, dds.normalization)
    n = pixels.shape[0]
    target = None if target is None else resolve_labels(target, n, pixels.device)
    clean = dds.estimate(pixels, n_clean, seed, target=target)
    clean_map = clean.maps[name]
    target = clean.predicted if target is None else target
    k = check_k(k, clean_map.shape[1], what="patch tokens")
    index = topk_indices(clean_map, k) if topk_index is None else topk_index.to(pixels.device)
    evaluate = _map_probe(dds, name, index, clean_map.shape[1], clean_map.dtype, target, n_eot, seed)
    start = seeded_start(pixels, eps, norm, seed) if random_start and eps > 0 else None
    ascent = label_preserving_ascent(
        evaluate, pixels, eps, norm, steps, alpha, start=start, keep_label=keep_label
    )
    return AdaptiveTopKResult(
        adversarial=dds.normalization.from_pixels(ascent.pixels).to(images.dtype).detach(),
        target=target,
        topk_index=index,
        clean_map=clean_map,
        mass_clean=clean_map.gather(1, index).sum(dim=1),
        mass_adversarial=-ascent.probe.value,
        label_kept=ascent.probe.ok,
        accepted_steps=ascent.accepted,
    )


def _map_probe(
    dds: DifferentiableDDS,
    name: str,
    index: torch.Tensor,
    tokens: int,
    dtype: torch.dtype,
    target: torch.Tensor,
    n_eot: int,
    seed: int,
) -> Callable[[torch.Tensor, int], Probe]:
    """The adaptive top-k probe: ``D = −`` the EOT mass of the DDS map on ``index``, its EOT
    gradient, and whether the EOT smoothed label is ``target`` (all from step ``s``'s
    samples ``s·m … (s+1)·m − 1`` of :data:`ADAPTIVE_STREAM`)."""
    weights = torch.zeros(index.shape[0], tokens, dtype=dtype, device=index.device)
    weights.scatter_(1, index, -1.0)
    explained = target if dds.class_specific else None

    def evaluate(x: torch.Tensor, step: int) -> Probe:
        estimate = dds.gradient(
            x, n_eot, seed, map_weights={name: weights}, target=explained,
            stream=ADAPTIVE_STREAM, start=step * n_eot,
        )  # fmt: skip
        mass = estimate.maps[name].gather(1, index).sum(dim=1)
        return Probe(-mass, estimate.grad, estimate.mean_softmax.argmax(dim=1) == target)

    return evaluate
