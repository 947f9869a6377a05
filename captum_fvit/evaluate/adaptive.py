"""Adaptive attacks on DDS: the attacker knows the defence and differentiates through it.

Both attacks follow the gradient of the *smoothed* quantity itself — noise → denoiser → ViT
→ explanation method — estimated with ``n_eot`` fresh noise samples per step (expectation
over transformation, Athalye et al. 2018) by :class:`~captum_fvit.evaluate.differentiable.
DifferentiableDDS`; nothing is transferred from the plain model (compare the *transfer*
attacks :func:`~captum_fvit.evaluate.attacks.pgd_attack` and
:func:`~captum_fvit.evaluate.explanation_attack.topk_explanation_attack`, which differentiate
the plain ViT only).

* :func:`smooth_pgd` — PGD on the smoothed classifier (SmoothAdv, Salman et al. 2019): ascend
  the cross-entropy ``−log p̄_y(x')`` of the softmax averaged over denoised samples.
* :func:`adaptive_topk` — the label-preserving top-k explanation attack (Ghorbani et al. 2019)
  on the DDS map: ascend ``−Σ_{i∈T_k} g_i(x')``, the smoothed mass on the clean top-k tokens
  ``T_k = T_k(g(x))``, rejecting steps that change the smoothed classifier's label.

Threat models ℓ∞ and ℓ2, radius ε in **[0, 1] pixel units**, random start, the attacked pixels
kept in [0, 1]. Inputs and outputs are in the model's normalisation. Step ``s`` uses noise
samples ``s·m … (s+1)·m − 1`` of stream :data:`ADAPTIVE_STREAM` (seeded by ``seed``), never the
stream 0 that DDS uses to explain, so the attack does not overfit the evaluation's noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..explain.base import TokenMapMethod
from ..explain.targets import logits_of
from ..noise import random_seed
from ..space import Normalization, resolve_normalization
from ..validation import check_count, check_image_batch, check_positive, check_seed
from ..validation import check_eps, check_norm
from ._pixels import ascent_step, clean_pixels, make_generator, project
from ._pixels import random_start as random_delta
from .differentiable import DifferentiableDDS
from .metrics import topk_indices

__all__ = [
    "ADAPTIVE_STREAM",
    "ADAPTIVE_LABEL_STREAM",
    "AdaptiveTopKResult",
    "adaptive_topk",
    "smooth_pgd",
]

#: Noise stream of the attack steps' EOT samples.
ADAPTIVE_STREAM = 11
#: Noise stream of the samples that fix the attacked label (smooth_pgd without labels).
ADAPTIVE_LABEL_STREAM = 12


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _labels(labels, n: int, device) -> torch.Tensor:
    tensor = torch.as_tensor(labels, device=device)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long().reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(n)
    if tensor.numel() != n:
        raise ValueError(f"labels has {tensor.numel()} entries for {n} inputs")
    return tensor


def smooth_pgd(
    model: nn.Module,
    denoiser: Callable | None,
    inputs: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
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
    chunk_size: int = 32,
    noise: str = "gaussian",
    dds: DifferentiableDDS | None = None,
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
    labels : Tensor or sequence of int, optional
        Classes whose smoothed probability is lowered; default the smoothed classifier's
        majority class over ``n_eot`` samples of :data:`ADAPTIVE_LABEL_STREAM`.
    eps : float, default 8/255
        Radius of the ℓ∞ or ℓ2 ball in **[0, 1] pixel units** (0 returns the inputs).
    sigma : float, default 0.25
        Noise std of the smoothed classifier, **[0, 1] pixel units**.
    n_eot : int, default 8
        Fresh noise samples per step.
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
    chunk_size : int, default 32
        Images per chunk through denoiser and ViT (memory bound).
    noise : {"gaussian", "laplace", "uniform"}
        Noise distribution (std σ).
    dds : DifferentiableDDS, optional
        A configured engine to reuse (its model, denoiser, σ and normalisation win).

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
    images = check_image_batch(inputs)
    norm = check_norm(norm)
    eps = check_eps(eps)
    steps = check_count(steps, "steps")
    n_eot = check_count(n_eot, "n_eot")
    seed = check_seed(seed)
    seed = random_seed() if seed is None else seed
    alpha = eps / 5 if step_size is None else check_positive(step_size, "step_size", " (pixel units)")
    if dds is None:
        normalization = normalization or resolve_normalization(model)
        dds = DifferentiableDDS(
            model, denoiser, "raw", sigma, normalization=normalization,
            chunk_size=chunk_size, noise=noise,
        )
    normalization = dds.normalization
    pixels = clean_pixels(images, normalization)
    n = pixels.shape[0]
    if labels is None:
        labels = dds.estimate(pixels, n_eot, seed, stream=ADAPTIVE_LABEL_STREAM).predicted
    labels = _labels(labels, n, pixels.device)
    if eps == 0:
        return images.detach().clone()
    generator = make_generator(seed, pixels.device)
    delta = random_delta(pixels, eps, norm, generator) if random_start else torch.zeros_like(pixels)
    with torch.no_grad():
        classes = logits_of(dds.model(images[:1].detach())).shape[1]
    weights = -torch.nn.functional.one_hot(labels, classes).to(pixels.dtype)
    for step in range(steps):
        estimate = dds.gradient(
            pixels + delta, n_eot, seed, prob_weights=weights,
            stream=ADAPTIVE_STREAM, start=step * n_eot,
        )
        delta = project(delta + ascent_step(estimate.grad, alpha, norm), pixels, eps, norm)
    return normalization.from_pixels(pixels + delta).to(images.dtype).detach()


@dataclass
class AdaptiveTopKResult:
    """Outcome of :func:`adaptive_topk`.

    Attributes
    ----------
    adversarial : Tensor
        ``N×C×H×W`` attacked inputs (model normalisation).
    labels : Tensor
        ``N`` smoothed-classifier labels the attack keeps.
    topk_index : Tensor
        ``N×k`` the clean DDS top-k tokens ``T_k``.
    clean_map : Tensor
        ``N×P`` DDS map of the clean inputs (``n_clean`` samples, stream 0).
    mass_clean, mass_adversarial : Tensor
        ``N`` estimates of the smoothed mass on ``T_k``: on the clean input (the ``n_clean``
        samples) and at the returned point (the ``n_eot`` samples of its step).
    label_kept : Tensor
        ``N`` bool: the EOT estimate of the smoothed label at the returned point is ``labels``.
    accepted_steps : Tensor
        ``N`` steps that kept the label.
    """

    adversarial: torch.Tensor
    labels: torch.Tensor
    topk_index: torch.Tensor
    clean_map: torch.Tensor
    mass_clean: torch.Tensor
    mass_adversarial: torch.Tensor
    label_kept: torch.Tensor
    accepted_steps: torch.Tensor


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
    labels: torch.Tensor | Sequence[int] | None = None,
    topk_index: torch.Tensor | None = None,
    keep_label: bool = True,
    normalization: Normalization | None = None,
    seed: int | None = None,
    chunk_size: int = 32,
    noise: str = "gaussian",
    dds: DifferentiableDDS | None = None,
) -> AdaptiveTopKResult:
    """Label-preserving top-k attack on the DDS map itself (EOT through the denoiser).

    Ascends ``J(x') = −Σ_{i∈T_k} g_i(x')`` (``g`` the DDS mean map, a probability vector over
    the patch tokens) with ℓ∞ signed or ℓ2 normalised steps; a step after which the EOT
    estimate of the smoothed label differs from ``labels`` is rejected for that image and its
    step size halved (Ghorbani et al. 2019). The last accepted iterate is returned.

    Parameters
    ----------
    model, denoiser, inputs, eps, sigma, n_eot, norm, steps, step_size, random_start, normalization, seed, chunk_size, noise, dds
        As in :func:`smooth_pgd` (ε, σ in **[0, 1] pixel units**).
    k : int
        Size of the top-k set.
    method : str or TokenMapMethod, default "rollout"
        Explanation method of the DDS map (``"raw"``, ``"rollout"``, ``"grad_rollout"``, ...).
    n_clean : int, default 32
        Samples (stream 0) of the clean DDS map that defines ``T_k`` and the default labels.
    labels : Tensor, optional
        Labels to keep (and to explain for class-specific methods); default the smoothed
        classifier's majority class on the ``n_clean`` samples.
    topk_index : Tensor, optional
        ``N×k`` target set; default the top-k of the clean DDS map.
    keep_label : bool, default True
        Reject label-changing steps (``False``: an unconstrained attack on the map, used by the
        certificate check whose claim does not depend on the label).

    Returns
    -------
    AdaptiveTopKResult
    """
    images = check_image_batch(inputs)
    norm = check_norm(norm)
    eps = check_eps(eps)
    steps = check_count(steps, "steps")
    n_eot = check_count(n_eot, "n_eot")
    n_clean = check_count(n_clean, "n_clean")
    seed = check_seed(seed)
    seed = random_seed() if seed is None else seed
    alpha0 = eps / 5 if step_size is None else check_positive(step_size, "step_size", " (pixel units)")
    if dds is None:
        normalization = normalization or resolve_normalization(model)
        dds = DifferentiableDDS(
            model, denoiser, method, sigma, normalization=normalization,
            chunk_size=chunk_size, noise=noise,
        )
    name = next(iter(dds.methods))
    normalization = dds.normalization
    pixels = clean_pixels(images, normalization)
    n = pixels.shape[0]
    target = None if labels is None else _labels(labels, n, pixels.device)
    clean = dds.estimate(pixels, n_clean, seed, target=target)
    clean_map = clean.maps[name]
    labels = clean.predicted if target is None else target
    tokens = clean_map.shape[1]
    k = check_count(k, "k")
    if k >= tokens:
        raise ValueError(f"k={k} must be smaller than the number of patch tokens ({tokens})")
    index = topk_indices(clean_map, k) if topk_index is None else topk_index.to(pixels.device)
    weights = torch.zeros_like(clean_map).scatter_(1, index, -1.0)
    explained = labels if dds.class_specific else None

    def evaluate(x: torch.Tensor, step: int):
        est = dds.gradient(
            x, n_eot, seed, map_weights={name: weights}, target=explained,
            stream=ADAPTIVE_STREAM, start=step * n_eot,
        )
        mass = est.maps[name].gather(1, index).sum(dim=1)
        ok = est.mean_softmax.argmax(dim=1) == labels
        return est.grad, mass, ok

    x = pixels
    if random_start and eps > 0:
        x = pixels + random_delta(pixels, eps, norm, make_generator(seed, pixels.device))
    grad, mass, ok = evaluate(x, 0)
    if keep_label and random_start and eps > 0:
        # A random start that changes the label is replaced by the clean image.
        wide = _expand(ok, pixels)
        if not bool(ok.all()):
            grad_c, mass_c, ok_c = evaluate(pixels, 0)
            x = torch.where(wide, x, pixels)
            grad = torch.where(wide, grad, grad_c)
            mass = torch.where(ok, mass, mass_c)
            ok = torch.where(ok, ok, ok_c)
    mass_clean = clean_map.gather(1, index).sum(dim=1)
    label_kept = ok.clone()
    alpha = torch.full((n,), alpha0, dtype=pixels.dtype, device=pixels.device)
    accepted = torch.zeros(n, dtype=torch.long, device=pixels.device)
    if eps > 0:
        for step in range(1, steps + 1):
            delta = project(x - pixels + ascent_step(grad, alpha, norm), pixels, eps, norm)
            candidate = pixels + delta
            cand_grad, cand_mass, cand_ok = evaluate(candidate, step)
            take = cand_ok if keep_label else torch.ones_like(cand_ok)
            wide = _expand(take, pixels)
            x = torch.where(wide, candidate, x)
            grad = torch.where(wide, cand_grad, grad)
            mass = torch.where(take, cand_mass, mass)
            label_kept = torch.where(take, cand_ok, label_kept)
            alpha = torch.where(take, alpha, alpha / 2)
            accepted += take.long()
    adversarial = normalization.from_pixels(x).to(images.dtype).detach()
    return AdaptiveTopKResult(
        adversarial=adversarial,
        labels=labels,
        topk_index=index,
        clean_map=clean_map,
        mass_clean=mass_clean,
        mass_adversarial=mass,
        label_kept=label_kept,
        accepted_steps=accepted,
    )
