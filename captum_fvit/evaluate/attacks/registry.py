"""The one registry of attacks: :data:`ATTACKS`, :func:`register_attack`, :func:`get_attack`.

Every attack, transfer and adaptive, has one signature (:class:`Attack`,
``attack(context, pixels, target, eps, *, norm, steps, seed) -> adversarial pixels``) and sees
the pipeline under attack through one :class:`AttackContext`. Each :class:`AttackSpec` says
its ``threat`` (``"transfer"``: gradients of the plain model or a surrogate; ``"adaptive"``:
gradients through the defence), which every robustness figure reports. Registered here:
``pgd`` and ``eot_pgd`` (:mod:`~captum_fvit.evaluate.attacks.prediction`), ``smooth_pgd``
(:mod:`~captum_fvit.evaluate.attacks.adaptive`), ``topk`` (transfer,
:mod:`~captum_fvit.evaluate.attacks.explanation_attack`) and ``adaptive_topk``.

Perturbations are bounded in **[0, 1] pixel units**; the attacked pixels stay in ``[0, 1]``.
A new attack is one function with this signature and one :func:`register_attack` call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ...differentiable import DifferentiableDDS
from ...noise import EOT_LABEL_STREAM, EOT_STREAM
from ...space import Normalization
from ...validation import NORMS, check_choice
from .adaptive import adaptive_topk
from .eot_pgd import ADAPTIVE_STREAMS, EOT_STREAMS, eot_pgd
from .explanation_attack import ExplanationAttackResult, topk_explanation_attack
from .pixels import resolve_step
from .prediction import eot_pgd_attack, pgd_attack
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
