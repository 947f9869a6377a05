"""Ghorbani et al. (2019)'s label-preserving top-k attack on an explanation (THEORY §4).

Goal: find ``x'`` in the ℓ∞ ball of radius ε (pixel units) around ``x`` that keeps the
model's predicted label but moves the explanation's mass away from the ``k`` tokens the
clean explanation ranks highest, ``T_k = T_k(a(x))``. The attack ascends

    ``D(x') = −Σ_{i ∈ T_k} s_i(x')``,  ``s = s⁺/Σ s⁺`` a sum-normalised token map,

with signed-gradient steps ``x' ← Proj(x' + α·sign ∇D)``; a step that changes an image's
predicted label is rejected for that image (and its step size halved, so a rejected image
does not repeat the same step forever), and each image returns its best label-preserving
iterate by ``D``.

What is differentiated, and what is transferred
-----------------------------------------------
The explanation under attack, ``map_fn``, is often *not* differentiable in the input: DDS
denoises under ``torch.no_grad`` and averages over random samples, and the explain methods
detach what they record. The gradient therefore comes from a differentiable
``surrogate_map_fn`` ``s`` — by default an
:class:`~captum_fvit.evaluate.attacks.surrogate.AttentionSurrogate`: the explain method itself run on
the plain model with the graph kept, mirroring ``map_fn``'s method and options when
``map_fn`` is a bound ``token_map`` of an ``AttentionMap``/``DDSAttention`` (every method,
grad_rollout and attn_gradcam included). Only two things come from ``map_fn``: the target
set ``T_k`` (top-k of ``map_fn(x)`` on the clean input) and the final score (``map_fn(x')``'s
top-k overlap with ``T_k``). The attack on DDS is thus a *transfer* attack from the plain
model's explanation to the smoothed one; the *adaptive* attack through the denoiser is
:func:`~captum_fvit.evaluate.attacks.adaptive.adaptive_topk`, which runs the same ascent
(:func:`~captum_fvit.evaluate.attacks.topk_ascent.label_preserving_ascent`) on EOT gradients of the
DDS map. The result reports both the surrogate's objective and ``map_fn``'s overlap, so
the transfer gap is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...explain.targets import logits_of
from ...space import Normalization, resolve_normalization
from ...validation import check_eps, check_image_batch, check_k, check_seed, check_steps
from ..metrics.maps import as_map_batch
from ..metrics.similarity import topk_indices, topk_mass, topk_overlap
from .labels import deprecated_alias
from .pixels import clean_pixels, resolve_step, seeded_start
from .surrogate import surrogate_like
from .topk_ascent import Probe, label_preserving_ascent

__all__ = ["ExplanationAttackResult", "topk_explanation_attack"]

MapFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ExplanationAttackResult:
    """Outcome of :func:`topk_explanation_attack`.

    Attributes
    ----------
    adversarial : Tensor
        ``N×C×H×W`` attacked inputs in the model's normalisation.
    target : Tensor
        ``N`` predicted labels of the clean inputs (kept by the attack; ``labels``: deprecated
        alias).
    label_kept : Tensor
        ``N`` bool: the model still predicts ``target`` on ``adversarial``.
    topk_index : Tensor
        ``N×k`` the target set ``T_k`` (top-k tokens of ``map_fn`` on the clean inputs).
    clean_map, adversarial_map : Tensor
        ``N×P`` ``map_fn`` on the clean and the attacked inputs.
    overlap : Tensor
        ``N`` top-k overlap ``V_k`` of ``map_fn``'s maps, clean vs attacked (lower = attack
        more successful).
    surrogate_mass_clean, surrogate_mass_adversarial : Tensor
        ``N`` share of the normalised surrogate map on ``T_k`` before and after (``−D``).
    accepted_steps : Tensor
        ``N`` steps that kept the label.
    surrogate : str
        Description of the surrogate that gave the gradients.
    """

    adversarial: torch.Tensor
    target: torch.Tensor
    label_kept: torch.Tensor
    topk_index: torch.Tensor
    clean_map: torch.Tensor
    adversarial_map: torch.Tensor
    overlap: torch.Tensor
    surrogate_mass_clean: torch.Tensor
    surrogate_mass_adversarial: torch.Tensor
    accepted_steps: torch.Tensor
    surrogate: str

    @property
    def labels(self) -> torch.Tensor:
        """Deprecated name of :attr:`target`."""
        return deprecated_alias(self.target, "ExplanationAttackResult.labels", "target")


def topk_explanation_attack(
    map_fn: MapFn | None,
    model: nn.Module,
    inputs: torch.Tensor,
    k: int,
    eps: float = 8 / 255,
    *,
    steps: int = 20,
    step_size: float | None = None,
    surrogate_map_fn: MapFn | None = None,
    random_start: bool = False,
    normalization: Normalization | None = None,
    seed: int | None = None,
) -> ExplanationAttackResult:
    """Label-preserving top-k attack on an explanation (Ghorbani et al. 2019), ℓ∞ in pixels.

    Parameters
    ----------
    map_fn : callable or None
        ``map_fn(x_model_space) -> N×P`` token map under attack, e.g.
        ``lambda x: dds.token_map(x, seed=0)``; need not be differentiable. ``None`` attacks
        the surrogate itself.
    model : nn.Module
        The classifier whose predicted label must be kept; not modified.
    inputs : Tensor
        ``N×C×H×W`` images in the model's normalisation (pixels in [0, 1]).
    k : int
        Size of the top-k set, ``1 ≤ k < P`` (with ``k = P`` the overlap is 1 whatever the
        attack does).
    eps : float, default 8/255
        ℓ∞ radius in **[0, 1] pixel units**.
    steps : int, default 20
        Signed-gradient steps.
    step_size : float, optional
        Initial step in pixel units, default ``eps / 5``; halved for an image each time its
        step is rejected.
    surrogate_map_fn : callable, optional
        Differentiable ``x_model_space -> N×P`` map giving the gradients; default
        :func:`~captum_fvit.evaluate.attacks.surrogate.surrogate_like` ``(map_fn, model)`` (the
        method and options of ``map_fn``'s explainer, any method; else plain rollout).
    random_start : bool, default False
        Start from a uniformly random point of the ball (per image, only if it keeps the
        label); Ghorbani et al. start at ``x``.
    normalization : Normalization, optional
        The model's normalisation (default :func:`~captum_fvit.space.resolve_normalization`).
    seed : int, optional
        Seed of the random start.

    Returns
    -------
    ExplanationAttackResult
        Attacked inputs, ``map_fn``'s overlap before/after, the surrogate's top-k mass
        before/after (never higher after: each image keeps its best iterate, which may be
        the clean input itself).
    """
    images = check_image_batch(inputs)
    eps = check_eps(eps)
    steps = check_steps(steps)
    alpha = resolve_step(step_size, eps)
    seed = check_seed(seed)
    normalization = normalization if normalization is not None else resolve_normalization(model)
    pixels = clean_pixels(images, normalization)
    if surrogate_map_fn is None:
        surrogate_map_fn = surrogate_like(map_fn, model)
    explain = _explainer(map_fn if map_fn is not None else surrogate_map_fn, images.shape[0])
    clean_map = explain(images)
    k = check_k(k, clean_map.shape[1], what="patch tokens")  # k = P: overlap 1 whatever
    index = topk_indices(clean_map, k)
    target = _predict(model, normalization, pixels)
    objective = _surrogate_objective(surrogate_map_fn, normalization, index, clean_map.shape)

    def evaluate(x: torch.Tensor, _step: int) -> Probe:
        value, grad = objective(x)
        return Probe(value, grad, _predict(model, normalization, x) == target)

    clean = evaluate(pixels, 0)
    start = seeded_start(pixels, eps, "linf", seed) if random_start and eps > 0 else None
    ascent = label_preserving_ascent(
        evaluate, pixels, eps, "linf", steps, alpha, start=start, clean=clean, keep_best=True
    )
    adversarial = normalization.from_pixels(ascent.pixels).to(images.dtype).detach()
    adversarial_map = explain(adversarial)
    with torch.no_grad():
        label_kept = logits_of(model(adversarial)).argmax(dim=1) == target
    return ExplanationAttackResult(
        adversarial=adversarial,
        target=target,
        label_kept=label_kept,
        topk_index=index,
        clean_map=clean_map,
        adversarial_map=adversarial_map,
        overlap=topk_overlap(clean_map, adversarial_map, k),
        surrogate_mass_clean=-clean.value,
        surrogate_mass_adversarial=-ascent.probe.value,
        accepted_steps=ascent.accepted,
        surrogate=repr(surrogate_map_fn),
    )


def _predict(model: nn.Module, normalization: Normalization, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(model(normalization.from_pixels(pixels))).argmax(dim=1)


def _explainer(map_fn: MapFn, n: int) -> MapFn:
    """``map_fn`` checked to give detached ``N×P`` token maps."""

    def explain(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = as_map_batch(map_fn(x), "map_fn(inputs)")
        if maps.dim() != 2 or maps.shape[0] != n:
            raise ValueError(
                f"map_fn must return an N×P token map for N = {n} inputs, got shape "
                f"{tuple(maps.shape)}"
            )
        return maps.detach()

    return explain


def _surrogate_objective(
    surrogate_map_fn: MapFn, normalization: Normalization, index: torch.Tensor, shape: torch.Size
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``x_pixels -> (D(x), ∇D(x))`` with ``D = −`` the surrogate's normalised mass on ``index``."""

    def objective(x_pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x_pixels.detach().requires_grad_(True)
        with torch.enable_grad():
            maps = surrogate_map_fn(normalization.from_pixels(x))
            if maps.shape != shape:
                raise ValueError(
                    f"the surrogate map has shape {tuple(maps.shape)} but map_fn's has "
                    f"{tuple(shape)}; both must be N×P token maps of the same model"
                )
            if not maps.requires_grad:
                raise RuntimeError(
                    "surrogate_map_fn returned a map without gradient (AttentionMap and "
                    "DDSAttention detach their maps); use the default AttentionSurrogate or a "
                    "differentiable function of the input"
                )
            value = -topk_mass(maps, index)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad

    return objective
