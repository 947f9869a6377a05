"""Adversarial attacks in [0, 1] pixel space (THEORY §4).

* :func:`pgd_attack` — PGD on the prediction of the plain model (Madry et al. 2018), the
  paper's non-adaptive protocol: ℓ∞ (or ℓ2) ball of radius ε in pixel units, step ε/5,
  10 steps, random start, untargeted cross-entropy on the given ``target`` classes (default:
  the predicted ones).
* :func:`eot_pgd_attack` — the adaptive attack on the *smoothed* classifier (Salman et al.
  2019, SmoothAdv): each step maximises the cross-entropy of the softmax averaged over
  ``n_eot`` noise + denoise samples (expectation over transformation), the one EOT-PGD of
  :mod:`captum_fvit.evaluate.eot_pgd` (as :func:`~captum_fvit.evaluate.adaptive.smooth_pgd`).
* :func:`~captum_fvit.evaluate.explanation_attack.topk_explanation_attack` — Ghorbani et
  al. (2019)'s label-preserving top-k attack on the explanation (re-exported here).

All attacks, transfer and adaptive, are in one registry (:data:`ATTACKS`,
:func:`register_attack`, :func:`get_attack`) with one signature (:class:`Attack`); each
:class:`AttackSpec` says its ``threat`` (``"transfer"``: gradients of the plain model or a
surrogate; ``"adaptive"``: gradients through the defence), which every robustness figure
reports.

Every attack takes inputs in the model's normalisation and returns the adversarial inputs in
the same normalisation. The perturbation ``δ`` is bounded in **[0, 1] pixel units** and the
attacked pixels stay in ``[0, 1]``. Gradients are taken with ``torch.autograd.grad`` with
respect to ``δ`` only: the model's parameters, their ``.grad`` fields, its mode and its hooks
are never touched. Randomness (random start, noise, the denoiser's generator) comes from
``seed`` through the streams of :mod:`captum_fvit.noise`: the same seed gives the same result
bit for bit on the same device.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..explain.targets import logits_of
from ..noise import EOT_LABEL_STREAM, EOT_STREAM, random_seed
from ..space import Normalization, resolve_normalization
from ..validation import (
    NORMS,
    check_choice,
    check_eps,
    check_image_batch,
    check_norm,
    check_seed,
    check_sigma,
    check_steps,
    renamed_argument,
)
from ._pixels import clean_pixels, projected_ascent, resolve_step, seeded_start
from .adaptive import adaptive_topk
from .differentiable import DifferentiableDDS
from .eot_pgd import ADAPTIVE_STREAMS, EOT_STREAMS, eot_pgd
from .explanation_attack import ExplanationAttackResult, topk_explanation_attack
from .labels import LabelType, resolve_labels
from .surrogate import AttentionSurrogate, explained_method, surrogate_like

__all__ = [
    "ATTACKS",
    "THREATS",
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

#: Noise streams of EOT-PGD (re-exported from :mod:`captum_fvit.noise`).
__all__ += ["EOT_STREAM", "EOT_LABEL_STREAM"]

#: What an attack knows of the defence: ``"transfer"`` (gradients of the plain model or a
#: surrogate, transferred to the defended pipeline) or ``"adaptive"`` (gradients through it).
THREATS = ("transfer", "adaptive")


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
        entry point refuses one built without; :func:`~captum_fvit.evaluate.adaptive.
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
    The same attack as :func:`~captum_fvit.evaluate.adaptive.smooth_pgd`
    (:func:`~captum_fvit.evaluate.eot_pgd.eot_pgd` on a
    :class:`~captum_fvit.evaluate.differentiable.DifferentiableDDS`), with the noise streams
    :data:`~captum_fvit.noise.EOT_STREAM` / :data:`~captum_fvit.noise.EOT_LABEL_STREAM` and
    soft default labels.
    """
    target = renamed_argument(target, labels, "target", "labels", None, "eot_pgd_attack")
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
    alpha = resolve_step(step_size, eps)
    seed = check_seed(seed)
    seed = random_seed() if seed is None else seed
    normalization = normalization if normalization is not None else resolve_normalization(model)
    pixels = clean_pixels(images, normalization)
    dds = DifferentiableDDS(
        model, _GradientChecked(denoiser), "raw", sigma, normalization=normalization, noise=noise,
        batch_size=batch_size,
    )  # fmt: skip
    adversarial = eot_pgd(
        dds, pixels, target, eps, n_eot, norm=norm, steps=steps, alpha=alpha, seed=seed,
        random_start=random_start, streams=EOT_STREAMS, label_rule="softmax",
    )  # fmt: skip
    return normalization.from_pixels(adversarial).to(images.dtype)


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
        Adaptive attacks differentiate through it (a ``DiffusionDenoiser`` via a twin with
        ``differentiable=True``; the object itself is not changed).
    sigma : float
        DDS noise std in **[0, 1] pixel units**.
    map_fn : callable, optional
        The explanation under attack, ``map_fn(x_model_space) -> N×P`` token maps (set by the
        runner for explanation attacks: the method's plain ``AttentionMap(...).token_map``, so
        every variant is then explained on the same attacked image).
    k : int
        Top-k size of explanation attacks.
    n_eot : int
        Noise samples per step of attacks on the smoothed classifier (EOT).
    method : str, optional
        Name of the explanation method under attack (a key of
        :data:`captum_fvit.explain.METHODS`): the surrogate of the transfer top-k attack and
        the DDS map of the adaptive top-k attack. ``None``: the method of ``map_fn``'s
        explainer when it is a bound ``token_map``, else ``"rollout"``.
    batch_size : int
        Images per chunk through denoiser and ViT in the adaptive attacks' differentiable
        DDS (peak memory is one chunk's forward and backward; renamed from ``chunk_size``).
    noise : {"gaussian", "laplace", "uniform"}
        Noise distribution of the defence (std σ), used by the adaptive attacks.
    n_clean : int
        Noise samples of the clean DDS map that fixes the adaptive top-k target set ``T_k``
        (stream :data:`~captum_fvit.noise.ESTIMATION_STREAM`, as DDS explains).
    """

    model: nn.Module
    normalization: Normalization
    denoiser: Callable | None = None
    sigma: float = 0.25
    map_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    k: int = 10
    n_eot: int = 8
    method: str | None = None
    batch_size: int = 32
    noise: str = "gaussian"
    n_clean: int = 32

    def method_name(self) -> str:
        """The explanation method under attack (see :attr:`method`)."""
        if self.method is not None:
            return self.method
        method = explained_method(self.map_fn)
        return method.name if method is not None else "rollout"

    def differentiable_dds(self, method: str | None = None) -> DifferentiableDDS:
        """The defence as a :class:`DifferentiableDDS` (``method`` default :meth:`method_name`)."""
        return DifferentiableDDS(
            self.model, self.denoiser, method or self.method_name(), self.sigma,
            normalization=self.normalization, batch_size=self.batch_size, noise=self.noise,
        )  # fmt: skip


class Attack(Protocol):
    """The one signature of every registered attack.

    ``attack(context, pixels, target, eps, *, norm, steps, seed) -> adversarial pixels``:
    ``pixels`` are ``N×C×H×W`` in [0, 1], ``target`` ``N`` classes (the labels to change or
    keep, Captum's ``target``), ``eps`` the radius in [0, 1] pixel units; the result is
    ``N×C×H×W`` in [0, 1] within ``eps`` of ``pixels``. The registry passes the first four
    positionally, so an attack written with the old parameter name ``labels`` still works.
    """

    def __call__(
        self,
        context: AttackContext,
        pixels: torch.Tensor,
        target: torch.Tensor,
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
        ``True``: it attacks one explanation (``context.map_fn`` / ``context.method``), so the
        runner calls it once per method (every variant explains the attacked image); ``False``: it attacks the prediction,
        once per batch and ε.
    description : str
        One line for reports and ``--help``.
    threat : {"transfer", "adaptive"}
        What the attack knows of the defence (:data:`THREATS`); every robustness figure
        says which.
    """

    fn: Attack
    norms: tuple[str, ...]
    explanation: bool = False
    description: str = ""
    threat: str = "transfer"


def _model_space(context: AttackContext, attack: Callable[..., torch.Tensor], pixels, *args, **kw):
    """Run a model-space attack on ``pixels`` and return its result in [0, 1] pixels."""
    adversarial = attack(context.normalization.from_pixels(pixels), *args, **kw)
    return context.normalization.to_pixels(adversarial).clamp(0, 1)


def _pgd(context, pixels, target, eps, *, norm, steps, seed):
    return _model_space(
        context, lambda x: pgd_attack(
            context.model, x, target, eps, norm=norm, steps=steps,
            normalization=context.normalization, seed=seed,
        ), pixels,
    )  # fmt: skip


def _eot(streams, label_rule):
    def attack(context, pixels, target, eps, *, norm, steps, seed):
        return eot_pgd(
            context.differentiable_dds("raw"), pixels, target, eps, context.n_eot, norm=norm,
            steps=steps, alpha=resolve_step(None, eps), seed=seed, streams=streams, label_rule=label_rule,
        ).clamp(0, 1)  # fmt: skip

    return attack


def _topk(context, pixels, target, eps, *, norm, steps, seed):
    if context.map_fn is None:
        raise ValueError("the top-k attack needs the explanation under attack (context.map_fn)")
    surrogate = (
        surrogate_like(context.map_fn, context.model)
        if context.method is None
        else AttentionSurrogate(context.model, context.method)
    )
    return _model_space(
        context, lambda x: topk_explanation_attack(
            context.map_fn, context.model, x, context.k, eps, steps=steps,
            surrogate_map_fn=surrogate, normalization=context.normalization, seed=seed,
        ).adversarial, pixels,
    )  # fmt: skip


def _adaptive_topk(context, pixels, target, eps, *, norm, steps, seed):
    dds = context.differentiable_dds()
    return _model_space(
        context, lambda x: adaptive_topk(
            context.model, context.denoiser, x, context.k, eps, context.sigma,
            n_eot=context.n_eot, norm=norm, steps=steps, n_clean=context.n_clean,
            target=target, seed=seed, dds=dds,
        ).adversarial, pixels,
    )  # fmt: skip


#: Attacks by name (for configuration files and the command line), all with one signature.
ATTACKS: dict[str, AttackSpec] = {}


def register_attack(
    name: str,
    fn: Attack,
    *,
    norms: Sequence[str],
    explanation: bool = False,
    description: str = "",
    threat: str = "transfer",
) -> AttackSpec:
    """Add an attack to :data:`ATTACKS` (it must have the :class:`Attack` signature).

    The signature is checked here, so a registered name cannot pass validation and then fail
    with a ``TypeError`` when called. ``threat`` is ``"transfer"`` or ``"adaptive"``
    (:data:`THREATS`): whether the attack's gradients go through the defence.
    """
    if not isinstance(name, str) or not name or name == "none":
        raise ValueError(f"attack name must be a non-empty string other than 'none', got {name!r}")
    if not callable(fn):
        raise TypeError(f"attack {name!r} must be callable, got {type(fn).__name__}")
    try:
        inspect.signature(fn).bind(None, None, None, 0.0, norm="linf", steps=1, seed=0)
    except TypeError as err:
        raise TypeError(
            f"attack {name!r} must accept (context, pixels, target, eps, *, norm, steps, seed): {err}"
        ) from None
    bad = [n for n in norms if n not in NORMS]
    if bad or not norms:
        raise ValueError(f"norms of attack {name!r} must be a non-empty subset of {NORMS}, got {list(norms)}")
    threat = check_choice(threat, "threat", THREATS)
    spec = AttackSpec(fn, tuple(norms), bool(explanation), description, threat)
    ATTACKS[name] = spec
    return spec


register_attack("pgd", _pgd, norms=NORMS, description="PGD on the plain ViT's prediction")
register_attack(
    "eot_pgd", _eot(EOT_STREAMS, "softmax"), norms=NORMS, threat="adaptive",
    description="EOT-PGD on the denoised smoothed classifier",
)  # fmt: skip
register_attack(
    "smooth_pgd", _eot(ADAPTIVE_STREAMS, "vote"), norms=NORMS, threat="adaptive",
    description="EOT-PGD through DifferentiableDDS (eot_pgd on the adaptive noise streams)",
)  # fmt: skip
register_attack(
    "topk", _topk, norms=("linf",), explanation=True,
    description="Ghorbani et al.'s label-preserving top-k attack on each explanation (surrogate)",
)  # fmt: skip
register_attack(
    "adaptive_topk", _adaptive_topk, norms=NORMS, explanation=True, threat="adaptive",
    description="the label-preserving top-k attack on the DDS map, EOT through the denoiser",
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
