"""Attacks on the prediction (THEORY §4), the two entry points of the prediction attacks.

* :func:`pgd_attack` — PGD on the prediction of the plain model (Madry et al. 2018), the
  paper's non-adaptive protocol: ℓ∞ (or ℓ2) ball of radius ε in pixel units, step ε/5,
  10 steps, random start, untargeted cross-entropy on the given ``target`` classes (default:
  the predicted ones). Transfer: it never sees the defence.
* :func:`eot_pgd_attack` — the adaptive attack on the *smoothed* classifier (Salman et al.
  2019, SmoothAdv): each step maximises the cross-entropy of the softmax averaged over
  ``n_eot`` noise + denoise samples (expectation over transformation), the one EOT-PGD of
  :mod:`captum_fvit.evaluate.attacks.eot_pgd` (as :func:`~captum_fvit.evaluate.attacks.adaptive.smooth_pgd`).

Inputs and outputs are in the model's normalisation; ``δ`` is bounded in **[0, 1] pixel
units** and the attacked pixels stay in ``[0, 1]``. Gradients are taken with respect to ``δ``
only; the model is never modified. Randomness comes from ``seed`` through the streams of
:mod:`captum_fvit.noise`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...differentiable import DifferentiableDDS
from ...explain.targets import logits_of
from ...space import Normalization, resolve_normalization
from ...validation import (
    check_eps,
    check_image_batch,
    check_norm,
    check_seed,
    check_sigma,
    check_steps,
    renamed_argument,
)
from .eot_pgd import EOT_STREAMS, check_eot_pgd_arguments, eot_pgd
from .labels import LabelType, resolve_labels
from .pixels import clean_pixels, projected_ascent, resolve_step, seeded_start

__all__ = ["eot_pgd_attack", "pgd_attack"]


def pgd_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    target: LabelType = None,
    eps: float = 8 / 255,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    normalization: Normalization | None = None,
    seed: int | None = None,
    labels: LabelType = None,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy of ``model``'s prediction.

    Parameters
    ----------
    model : nn.Module
        Classifier returning ``N×K`` logits (or ``.logits``); not modified.
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation (their pixels must lie in [0, 1]).
    target : Tensor, sequence of int or int, optional
        ``N`` classes (or one for all) whose cross-entropy is maximised — Captum's ``target``
        (as ``captum.robust.PGD.perturb``); default the model's predictions.
    eps : float, default 8/255
        Radius of the ℓ∞ or ℓ2 ball in **[0, 1] pixel units** (≥ 0; 0 returns the inputs).
    norm : {"linf", "l2"}, default "linf"
        Threat model.
    steps : int, default 10
        Gradient steps.
    step_size : float, optional
        Step in pixel units; default ``eps / 5`` (the paper's published code). ℓ∞ steps are
        ``α·sign(g)``, ℓ2 steps ``α·g/‖g‖₂``.
    random_start : bool, default True
        Start from a uniformly random point of the ball instead of the input.
    normalization : Normalization, optional
        The model's normalisation (default :func:`~captum_fvit.space.resolve_normalization`).
    seed : int, optional
        Seed of the random start (a fresh one from torch's global generator when ``None``).
    labels : Tensor or sequence of int, optional
        Deprecated name of ``target``.

    Returns
    -------
    Tensor
        ``N×C×H×W`` adversarial inputs in the model's normalisation, with
        ``‖pixels(x_adv) − pixels(x)‖ ≤ eps`` and ``pixels(x_adv) ∈ [0, 1]``.

    Examples
    --------
    >>> x_adv = pgd_attack(vit, x, eps=8 / 255, seed=0)  # doctest: +SKIP
    """
    target = renamed_argument(target, labels, "target", "labels", None, "pgd_attack")
    images = check_image_batch(inputs)
    norm = check_norm(norm)
    eps = check_eps(eps)
    steps = check_steps(steps)
    alpha = resolve_step(step_size, eps)
    seed = check_seed(seed)
    normalization = normalization if normalization is not None else resolve_normalization(model)
    pixels = clean_pixels(images, normalization)
    target = resolve_labels(
        target, images.shape[0], images.device,
        lambda: logits_of(model(images.detach())).argmax(dim=1),
    )  # fmt: skip

    def gradient(x: torch.Tensor, _step: int) -> torch.Tensor:
        x = x.requires_grad_(True)
        with torch.enable_grad():
            logits = logits_of(model(normalization.from_pixels(x)))
            loss = F.cross_entropy(logits, target, reduction="sum")
            return torch.autograd.grad(loss, x)[0]

    start = seeded_start(pixels, eps, norm, seed) if random_start and eps > 0 else None
    adversarial = projected_ascent(gradient, pixels, eps, norm, steps, alpha, start)
    return normalization.from_pixels(adversarial).to(images.dtype)


def eot_pgd_attack(
    model: nn.Module,
    denoiser: Callable,
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
    noise: str = "gaussian",
    normalization: Normalization | None = None,
    seed: int | None = None,
    batch_size: int = 32,
    labels: LabelType = None,
) -> torch.Tensor:
    """EOT-PGD against the denoised smoothed classifier (SmoothAdv, Salman et al. 2019).

    Each step draws ``n_eot`` fresh noise samples ``δ_s`` (std σ, pixel units,
    :func:`~captum_fvit.noise.draw_noise`), denoises ``x' + δ_s``, averages the model's
    softmax over the samples and ascends ``−log p̄_y(x')``, the cross-entropy of the average
    softmax (not the average cross-entropy).

    Parameters
    ----------
    model : nn.Module
        Classifier returning ``N×K`` logits; not modified.
    denoiser : callable
        ``denoiser(x_noisy_pixels, sigma, generator)`` in [0, 1] pixel units. It must let
        gradients through: :class:`~captum_fvit.denoise.IdentityDenoiser` does; build a
        :class:`~captum_fvit.denoise.DiffusionDenoiser` with ``differentiable=True`` (this
        entry point refuses one built without; :func:`~captum_fvit.evaluate.attacks.adaptive.
        smooth_pgd` differentiates a twin of it instead).
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation (pixels in [0, 1]).
    target : Tensor, sequence of int or int, optional
        ``N`` classes to attack (Captum's ``target``); default the smoothed classifier's
        soft prediction (argmax of the average softmax over ``n_eot`` denoised samples of
        the clean input, from a noise stream the attack steps do not use).
    eps : float, default 8/255
        Radius in **[0, 1] pixel units**.
    sigma : float, default 0.25
        Noise std in **[0, 1] pixel units** (that of the smoothed classifier under attack).
    n_eot : int, default 8
        Noise samples per step (EOT: fresh samples at every step).
    norm, steps, step_size, random_start, normalization, seed
        As in :func:`pgd_attack`.
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution (std σ).
    batch_size : int, default 32
        Images per chunk through denoiser and ViT (peak memory is one chunk's forward and
        backward; the result does not depend on it).
    labels : Tensor or sequence of int, optional
        Deprecated name of ``target``.

    Returns
    -------
    Tensor
        ``N×C×H×W`` adversarial inputs in the model's normalisation.

    Notes
    -----
    The same attack as :func:`~captum_fvit.evaluate.attacks.adaptive.smooth_pgd`
    (:func:`~captum_fvit.evaluate.attacks.eot_pgd.eot_pgd` on a
    :class:`~captum_fvit.differentiable.DifferentiableDDS`), with the noise streams
    :data:`~captum_fvit.noise.EOT_STREAM` / :data:`~captum_fvit.noise.EOT_LABEL_STREAM` and
    soft default labels.
    """
    target = renamed_argument(target, labels, "target", "labels", None, "eot_pgd_attack")
    if not callable(denoiser):
        raise TypeError(
            f"denoiser must be callable as denoiser(x_noisy, sigma, generator), got "
            f"{type(denoiser).__name__}"
        )
    a = check_eot_pgd_arguments(inputs, norm, eps, steps, n_eot, step_size, seed)
    sigma = check_sigma(sigma)
    normalization = normalization if normalization is not None else resolve_normalization(model)
    pixels = clean_pixels(a.images, normalization)
    dds = DifferentiableDDS(
        model, _GradientChecked(denoiser), "raw", sigma, normalization=normalization, noise=noise,
        batch_size=batch_size,
    )  # fmt: skip
    adversarial = eot_pgd(
        dds, pixels, target, a.eps, a.n_eot, norm=a.norm, steps=a.steps, alpha=a.alpha,
        seed=a.seed, random_start=random_start, streams=EOT_STREAMS, label_rule="softmax",
    )  # fmt: skip
    return normalization.from_pixels(adversarial).to(a.images.dtype)


_CUT_GRADIENT = (
    "the denoiser cut the gradient (its output does not require grad), so EOT-PGD cannot "
    "attack through it: build a DiffusionDenoiser with differentiable=True, or use a denoiser "
    "that runs with autograd"
)


class _GradientChecked:
    """:func:`eot_pgd_attack`'s denoiser contract: gradients must pass (no silent twin)."""

    def __init__(self, denoiser: Callable) -> None:
        if getattr(denoiser, "differentiable", True) is False:
            raise RuntimeError(_CUT_GRADIENT)
        self.denoiser = denoiser

    def __getattr__(self, name: str):  # accepts_sample_noise, ...: the denoiser's own
        return getattr(self.__dict__["denoiser"], name)

    def __call__(self, noisy: torch.Tensor, sigma: float, generator) -> torch.Tensor:
        denoised = self.denoiser(noisy, sigma, generator)
        if noisy.requires_grad and isinstance(denoised, torch.Tensor) and not denoised.requires_grad:
            raise RuntimeError(_CUT_GRADIENT)
        return denoised
