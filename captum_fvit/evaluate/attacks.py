"""Adversarial attacks in [0, 1] pixel space (THEORY §4).

* :func:`pgd_attack` — PGD on the prediction of the plain model (Madry et al. 2018), the
  paper's non-adaptive protocol: ℓ∞ (or ℓ2) ball of radius ε in pixel units, step ε/5,
  10 steps, random start, untargeted cross-entropy on the given (default: predicted) labels.
* :func:`eot_pgd_attack` — the adaptive attack on the *smoothed* classifier (Salman et al.
  2019, SmoothAdv): each step maximises the cross-entropy of the softmax averaged over
  ``n_eot`` noise + denoise samples (expectation over transformation).
* :func:`~captum_fvit.evaluate.explanation_attack.topk_explanation_attack` — Ghorbani et
  al. (2019)'s label-preserving top-k attack on the explanation (re-exported here).

Every attack takes inputs in the model's normalisation and returns the adversarial inputs in
the same normalisation. The perturbation ``δ`` is bounded in **[0, 1] pixel units** and the
attacked pixels stay in ``[0, 1]``. Gradients are taken with ``torch.autograd.grad`` with
respect to ``δ`` only: the model's parameters, their ``.grad`` fields, its mode and its hooks
are never touched. Randomness (random start, noise, the denoiser's generator) comes from
``seed``: the same seed gives the same result bit for bit on the same device.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..denoise.base import check_sigma
from ..explain.targets import logits_of
from ..noise import NOISE_KINDS, block_seed, draw_noise, random_seed
from ..space import Normalization, resolve_normalization
from ..validation import check_image_batch, check_positive
from ..validation import NORMS, check_eps, check_norm, check_steps
from ._pixels import ascent_step, clean_pixels, make_generator, project, random_start
from .explanation_attack import ExplanationAttackResult, topk_explanation_attack

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackContext",
    "AttackSpec",
    "register_attack",
    "ExplanationAttackResult",
    "eot_pgd_attack",
    "get_attack",
    "pgd_attack",
    "topk_explanation_attack",
]

#: Noise streams of EOT-PGD (independent of DDS's streams 0 and 1).
EOT_STREAM = 7
EOT_LABEL_STREAM = 8

LabelType = torch.Tensor | Sequence[int] | None


def _resolve_labels(
    labels: LabelType, n: int, predict: Callable[[], torch.Tensor], device
) -> torch.Tensor:
    if labels is None:
        with torch.no_grad():
            return predict().argmax(dim=1)
    tensor = torch.as_tensor(labels, device=device)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long().reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(n)
    if tensor.numel() != n:
        raise ValueError(f"labels has {tensor.numel()} entries for {n} inputs")
    return tensor


def _step_size(step_size: float | None, eps: float) -> float:
    if step_size is None:
        return eps / 5
    return check_positive(step_size, "step_size", " (pixel units)")


def _run_pgd(
    loss_fn: Callable[[torch.Tensor, int], torch.Tensor],
    pixels: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    step_size: float,
    start: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_fn(x_pixels, step)`` (a sum over the batch)."""
    if eps == 0:
        return pixels.clone()
    delta = random_start(pixels, eps, norm, generator) if start else torch.zeros_like(pixels)
    for step in range(steps):
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(pixels + delta, step)
            (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + ascent_step(grad, step_size, norm), pixels, eps, norm)
    return (pixels + delta).detach()


def pgd_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: LabelType = None,
    eps: float = 8 / 255,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    normalization: Normalization | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy of ``model``'s prediction.

    Parameters
    ----------
    model : nn.Module
        Classifier returning ``N×K`` logits (or ``.logits``); not modified.
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation (their pixels must lie in [0, 1]).
    labels : Tensor or sequence of int, optional
        ``N`` classes whose cross-entropy is maximised; default the model's predictions.
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

    Returns
    -------
    Tensor
        ``N×C×H×W`` adversarial inputs in the model's normalisation, with
        ``‖pixels(x_adv) − pixels(x)‖ ≤ eps`` and ``pixels(x_adv) ∈ [0, 1]``.

    Examples
    --------
    >>> x_adv = pgd_attack(vit, x, eps=8 / 255, seed=0)  # doctest: +SKIP
    """
    images = check_image_batch(inputs)
    norm = check_norm(norm)
    eps = check_eps(eps)
    steps = check_steps(steps)
    alpha = _step_size(step_size, eps)
    normalization = normalization if normalization is not None else resolve_normalization(model)
    pixels = clean_pixels(images, normalization)
    target = _resolve_labels(
        labels, images.shape[0], lambda: logits_of(model(images.detach())), images.device
    )

    def loss_fn(x: torch.Tensor, _step: int) -> torch.Tensor:
        logits = logits_of(model(normalization.from_pixels(x)))
        return F.cross_entropy(logits, target, reduction="sum")

    generator = make_generator(seed, images.device)
    adversarial = _run_pgd(loss_fn, pixels, eps, norm, steps, alpha, random_start, generator)
    return normalization.from_pixels(adversarial).to(images.dtype)


def smoothed_probabilities(
    model: nn.Module,
    denoiser: Callable,
    pixels: torch.Tensor,
    sigma: float,
    noise: torch.Tensor,
    generator: torch.Generator,
    normalization: Normalization,
) -> torch.Tensor:
    """``N×K`` softmax averaged over the noise samples ``noise`` (``S×C×H×W``, pixel units).

    Every image gets the same ``S`` noise draws; the result carries the autograd graph of
    ``pixels`` when the denoiser is differentiable.
    """
    n_samples, n = noise.shape[0], pixels.shape[0]
    noisy = (pixels.unsqueeze(0) + noise.unsqueeze(1)).reshape(n_samples * n, *pixels.shape[1:])
    denoised = denoiser(noisy, sigma, generator)
    if denoised.shape != noisy.shape:
        raise ValueError(
            f"the denoiser returned shape {tuple(denoised.shape)} for inputs of shape "
            f"{tuple(noisy.shape)}; a denoiser must return images of the input's size"
        )
    if torch.is_grad_enabled() and pixels.requires_grad and not denoised.requires_grad:
        raise RuntimeError(
            "the denoiser cut the gradient (its output does not require grad), so EOT-PGD "
            "cannot attack through it: build a DiffusionDenoiser with differentiable=True, "
            "or use a denoiser that runs with autograd"
        )
    logits = logits_of(model(normalization.from_pixels(denoised.to(pixels.dtype))))
    probs = (
        logits.float().softmax(dim=1)
        if logits.dtype in (torch.float16, torch.bfloat16)
        else logits.softmax(dim=1)
    )
    return probs.view(n_samples, n, -1).mean(dim=0)


def eot_pgd_attack(
    model: nn.Module,
    denoiser: Callable,
    inputs: torch.Tensor,
    labels: LabelType = None,
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
        :class:`~captum_fvit.denoise.DiffusionDenoiser` with ``differentiable=True``.
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation (pixels in [0, 1]).
    labels : Tensor or sequence of int, optional
        ``N`` classes to attack; default the smoothed classifier's soft prediction (argmax
        of the average softmax over ``n_eot`` denoised samples of the clean input, from a
        noise stream the attack steps do not use).
    eps : float, default 8/255
        Radius in **[0, 1] pixel units**.
    sigma : float, default 0.25
        Noise std in **[0, 1] pixel units** (that of the smoothed classifier under attack).
    n_eot : int, default 8
        Noise samples per step (all ``n_eot × N`` go through the denoiser in one batch).
    norm, steps, step_size, random_start, normalization, seed
        As in :func:`pgd_attack`.
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution (std σ).

    Returns
    -------
    Tensor
        ``N×C×H×W`` adversarial inputs in the model's normalisation.
    """
    if not callable(denoiser):
        raise TypeError(
            f"denoiser must be callable as denoiser(x_noisy, sigma, generator), got "
            f"{type(denoiser).__name__}"
        )
    images = check_image_batch(inputs)
    norm = check_norm(norm)
    eps = check_eps(eps)
    steps = check_steps(steps)
    n_eot = check_steps(n_eot, "n_eot")
    sigma = check_sigma(sigma)
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    alpha = _step_size(step_size, eps)
    normalization = normalization if normalization is not None else resolve_normalization(model)
    pixels = clean_pixels(images, normalization)
    seed = random_seed() if seed is None else int(seed)
    device = images.device
    shape = tuple(images.shape[1:])

    def samples(step: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        draws = draw_noise(
            seed,
            step * n_eot,
            (step + 1) * n_eot,
            shape,
            sigma,
            device=device,
            kind=noise,
            stream=stream,
        ).to(images.dtype)
        generator = torch.Generator(device=device)
        generator.manual_seed(block_seed(seed, step, stream=1_000 + stream))
        return draws, generator

    def predict() -> torch.Tensor:
        draws, generator = samples(0, EOT_LABEL_STREAM)
        return smoothed_probabilities(
            model, denoiser, pixels, sigma, draws, generator, normalization
        )

    target = _resolve_labels(labels, images.shape[0], predict, device)

    def loss_fn(x: torch.Tensor, step: int) -> torch.Tensor:
        draws, generator = samples(step, EOT_STREAM)
        probs = smoothed_probabilities(model, denoiser, x, sigma, draws, generator, normalization)
        return F.nll_loss(probs.clamp(min=1e-12).log(), target, reduction="sum")

    generator = make_generator(seed, device)
    adversarial = _run_pgd(loss_fn, pixels, eps, norm, steps, alpha, random_start, generator)
    return normalization.from_pixels(adversarial).to(images.dtype)


@dataclass(frozen=True)
class AttackContext:
    """What an attack of the registry sees of the pipeline under attack.

    Attributes
    ----------
    model : nn.Module
        The plain classifier (eval mode; never modified).
    normalization : Normalization
        The model's input normalisation.
    denoiser : callable, optional
        The DDS denoiser ``denoiser(x_noisy_pixels, sigma, generator)`` (``None`` = identity).
    sigma : float
        DDS noise std in **[0, 1] pixel units**.
    map_fn : callable, optional
        The explanation under attack, ``map_fn(x_model_space) -> N×P`` token maps (set by the
        runner for explanation attacks, one per method and variant).
    k : int
        Top-k size of explanation attacks.
    n_eot : int
        Noise samples per step of attacks on the smoothed classifier.
    """

    model: nn.Module
    normalization: Normalization
    denoiser: Callable | None = None
    sigma: float = 0.25
    map_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    k: int = 10
    n_eot: int = 8

    def model_fn(self, pixels: torch.Tensor) -> torch.Tensor:
        """``N×K`` logits of the plain model on ``pixels`` in [0, 1] (differentiable)."""
        return logits_of(self.model(self.normalization.from_pixels(pixels)))


class Attack(Protocol):
    """The one signature of every registered attack.

    ``attack(context, pixels, labels, eps, *, norm, steps, seed) -> adversarial pixels``:
    ``pixels`` are ``N×C×H×W`` in [0, 1], ``labels`` ``N`` classes, ``eps`` the radius in
    [0, 1] pixel units; the result is ``N×C×H×W`` in [0, 1] within ``eps`` of ``pixels``.
    """

    def __call__(
        self,
        context: AttackContext,
        pixels: torch.Tensor,
        labels: torch.Tensor,
        eps: float,
        *,
        norm: str,
        steps: int,
        seed: int,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its function, the norms it supports and what it attacks.

    Attributes
    ----------
    fn : Attack
        The attack, with the registry's one signature.
    norms : tuple of str
        Threat models it supports (validated before anything runs).
    explanation : bool
        ``True``: it attacks one explanation (``context.map_fn``), so the runner calls it once
        per method and variant; ``False``: it attacks the prediction, once per batch and ε.
    description : str
        One line for reports and ``--help``.
    """

    fn: Attack
    norms: tuple[str, ...]
    explanation: bool = False
    description: str = ""


def _pgd(context, pixels, labels, eps, *, norm, steps, seed):
    x = context.normalization.from_pixels(pixels)
    adversarial = pgd_attack(
        context.model, x, labels, eps, norm=norm, steps=steps,
        normalization=context.normalization, seed=seed,
    )  # fmt: skip
    return context.normalization.to_pixels(adversarial).clamp(0, 1)


def _eot_pgd(context, pixels, labels, eps, *, norm, steps, seed):
    from ..denoise import IdentityDenoiser

    denoiser = context.denoiser if context.denoiser is not None else IdentityDenoiser()
    x = context.normalization.from_pixels(pixels)
    adversarial = eot_pgd_attack(
        context.model, denoiser, x, labels, eps, context.sigma, context.n_eot, norm=norm,
        steps=steps, normalization=context.normalization, seed=seed,
    )  # fmt: skip
    return context.normalization.to_pixels(adversarial).clamp(0, 1)


def _topk(context, pixels, labels, eps, *, norm, steps, seed):
    if context.map_fn is None:
        raise ValueError("the top-k attack needs the explanation under attack (context.map_fn)")
    x = context.normalization.from_pixels(pixels)
    result = topk_explanation_attack(
        context.map_fn, context.model, x, context.k, eps, steps=steps,
        normalization=context.normalization, seed=seed,
    )  # fmt: skip
    return context.normalization.to_pixels(result.adversarial).clamp(0, 1)


#: Attacks by name (for configuration files and the command line), all with one signature.
ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str, fn: Attack, *, norms: Sequence[str], explanation: bool = False, description: str = ""
) -> AttackSpec:
    """Add an attack to :data:`ATTACKS` (it must have the :class:`Attack` signature).

    The signature is checked here, so a registered name cannot pass validation and then fail
    with a ``TypeError`` when called.
    """
    if not isinstance(name, str) or not name or name == "none":
        raise ValueError(f"attack name must be a non-empty string other than 'none', got {name!r}")
    if not callable(fn):
        raise TypeError(f"attack {name!r} must be callable, got {type(fn).__name__}")
    try:
        inspect.signature(fn).bind(None, None, None, 0.0, norm="linf", steps=1, seed=0)
    except TypeError as err:
        raise TypeError(
            f"attack {name!r} must accept (context, pixels, labels, eps, *, norm, steps, seed): {err}"
        ) from None
    bad = [n for n in norms if n not in NORMS]
    if bad or not norms:
        raise ValueError(f"norms of attack {name!r} must be a non-empty subset of {NORMS}, got {list(norms)}")
    spec = AttackSpec(fn, tuple(norms), bool(explanation), description)
    ATTACKS[name] = spec
    return spec


register_attack("pgd", _pgd, norms=NORMS, description="PGD on the plain ViT's prediction")
register_attack(
    "eot_pgd", _eot_pgd, norms=NORMS,
    description="EOT-PGD on the denoised smoothed classifier (adaptive)",
)  # fmt: skip
register_attack(
    "topk", _topk, norms=("linf",), explanation=True,
    description="Ghorbani et al.'s label-preserving top-k attack on each explanation",
)  # fmt: skip


def get_attack(name: str, norm: str | None = None) -> AttackSpec:
    """The registered attack ``name`` (checking ``norm`` when given), or a clear error."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {sorted(ATTACKS)} or 'none'")
    spec = ATTACKS[name]
    if norm is not None and norm not in spec.norms:
        raise ValueError(
            f"attack {name!r} supports norm {' or '.join(spec.norms)}, not {norm!r}; "
            f"choose --norm {spec.norms[0]}"
        )
    return spec
