"""The one label-preserving ascent of the top-k explanation attacks (Ghorbani et al. 2019).

Both top-k attacks — the transfer attack
:func:`~captum_fvit.evaluate.attacks.explanation_attack.topk_explanation_attack` (gradients of a
differentiable surrogate of the plain ViT) and the adaptive attack
:func:`~captum_fvit.evaluate.attacks.adaptive.adaptive_topk` (EOT gradients of the DDS map) — ascend
``D(x') = −Σ_{i∈T_k} s_i(x')``, the (negated) mass of a map on the clean top-k tokens, with
ℓ∞ signed or ℓ2 normalised steps projected on the ε-ball and the pixel box. A step after
which an image's label changes is rejected for that image and its step size halved (so a
rejected image does not repeat the same step forever). They differ only in what
:class:`Probe` they see at a point, which the caller's ``evaluate`` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .pixels import ascent_step, project

__all__ = ["AscentResult", "Probe", "label_preserving_ascent"]


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class Probe:
    """What the attacker sees at one point ``x'`` of the batch.

    Attributes
    ----------
    value : Tensor
        ``N`` objective being ascended, ``D(x')``.
    grad : Tensor
        ``N×C×H×W`` its gradient (or an estimate of it) with respect to the pixels.
    ok : Tensor
        ``N`` bool: the label is kept at ``x'``.
    """

    value: torch.Tensor
    grad: torch.Tensor
    ok: torch.Tensor

    def where(self, take: torch.Tensor, other: Probe) -> Probe:
        """This probe for the images where ``take``, ``other`` elsewhere."""
        return Probe(
            torch.where(take, self.value, other.value),
            torch.where(_expand(take, self.grad), self.grad, other.grad),
            torch.where(take, self.ok, other.ok),
        )


@dataclass
class AscentResult:
    """Outcome of :func:`label_preserving_ascent`.

    Attributes
    ----------
    pixels : Tensor
        ``N×C×H×W`` returned point: the last accepted iterate, or with ``keep_best`` the
        accepted iterate (the clean image included) with the highest objective.
    probe : Probe
        The probe at ``pixels``.
    accepted : Tensor
        ``N`` steps accepted.
    """

    pixels: torch.Tensor
    probe: Probe
    accepted: torch.Tensor


def label_preserving_ascent(
    evaluate: Callable[[torch.Tensor, int], Probe],
    pixels: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    alpha: float,
    *,
    start: torch.Tensor | None = None,
    clean: Probe | None = None,
    keep_label: bool = True,
    keep_best: bool = False,
) -> AscentResult:
    """Ascend ``evaluate``'s objective, rejecting (and halving the step of) label changes.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(x_pixels, step) -> Probe``; ``step`` is 0 at the start point and
        ``1 .. steps`` at the candidates (EOT attacks use it to address fresh noise).
    pixels : Tensor
        ``N×C×H×W`` clean images in [0, 1].
    eps : float
        Radius in **[0, 1] pixel units** (0: no step is taken).
    norm : {"linf", "l2"}
        Threat model.
    steps : int
        Candidate steps.
    alpha : float
        Initial step size in pixel units (per image, halved at each rejection).
    start : Tensor, optional
        Random initial ``δ``; an image whose label it changes starts at the clean image
        instead (when ``keep_label``). Default: start at the clean image.
    clean : Probe, optional
        The probe at the clean image, if the caller has it (else evaluated when needed, at
        step 0).
    keep_label : bool, default True
        Reject label-changing steps (``False``: every step is taken).
    keep_best : bool, default False
        Return the best accepted iterate (the clean image is a candidate too) instead of
        the last one.
    """
    known = [clean]

    def clean_probe() -> Probe:  # evaluated once, and only when needed
        if known[0] is None:
            known[0] = evaluate(pixels, 0)
        return known[0]

    if start is None:
        x, probe = pixels, clean_probe()
    else:
        x = pixels + start
        probe = evaluate(x, 0)
        if keep_label and not bool(probe.ok.all()):
            x = torch.where(_expand(probe.ok, pixels), x, pixels)
            probe = probe.where(probe.ok, clean_probe())
    best_x, best = x, probe
    rate = torch.full((pixels.shape[0],), alpha, dtype=pixels.dtype, device=pixels.device)
    accepted = torch.zeros(pixels.shape[0], dtype=torch.long, device=pixels.device)
    for step in range(1, steps + 1 if eps > 0 else 1):
        candidate = pixels + project(x - pixels + ascent_step(probe.grad, rate, norm), pixels, eps, norm)
        proposal = evaluate(candidate, step)
        take = proposal.ok if keep_label else torch.ones_like(proposal.ok)
        x = torch.where(_expand(take, pixels), candidate, x)
        probe = proposal.where(take, probe)
        rate = torch.where(take, rate, rate / 2)
        accepted += take.long()
        if keep_best:
            better = take & (proposal.value > best.value)
            best_x = torch.where(_expand(better, pixels), candidate, best_x)
            best = proposal.where(better, best)
    if not keep_best:
        return AscentResult(x, probe, accepted)
    origin = clean_probe()
    back = origin.value >= best.value
    best_x = torch.where(_expand(back, pixels), pixels, best_x)
    return AscentResult(best_x, origin.where(back, best), accepted)
