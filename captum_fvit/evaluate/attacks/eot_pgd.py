"""The one EOT-PGD: PGD on the smoothed (denoised) classifier, through the defence.

SmoothAdv (Salman et al. 2019) with expectation over transformation (Athalye et al. 2018):
each step ascends the cross-entropy ``−log p̄_y(x')`` of the softmax averaged over ``n_eot``
fresh noise + denoise samples, its gradient estimated by
:meth:`~captum_fvit.differentiable.DifferentiableDDS.gradient` (noise → denoiser →
ViT, chunked). :func:`~captum_fvit.evaluate.attacks.prediction.eot_pgd_attack` and
:func:`~captum_fvit.evaluate.attacks.adaptive.smooth_pgd` are entry points of this one attack; they
differ only in their noise streams and in how the default labels are read.

Step ``s`` uses noise samples ``s·m … (s+1)·m − 1`` of its attack stream (``m = n_eot``),
the default target the samples ``0 … m − 1`` of its label stream, the random start stream
:data:`~captum_fvit.noise.ATTACK_START_STREAM`: never the streams DDS explains and certifies
with, so the attack does not overfit the evaluation's noise. Pixels and ε are in **[0, 1]
pixel units**.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...differentiable import DifferentiableDDS
from ...explain.targets import logits_of
from ...noise import (
    ADAPTIVE_LABEL_STREAM,
    ADAPTIVE_STREAM,
    EOT_LABEL_STREAM,
    EOT_STREAM,
    random_seed,
)
from ...validation import (
    check_choice,
    check_eps,
    check_image_batch,
    check_norm,
    check_seed,
    check_steps,
)
from .labels import LabelType, resolve_labels
from .pixels import projected_ascent, resolve_step, seeded_start

__all__ = ["ADAPTIVE_STREAMS", "EOT_STREAMS", "EOTStreams", "LABEL_RULES", "eot_pgd"]

#: How default labels are read from the label samples: the argmax of the mean softmax (the
#: soft smoothed classifier) or the majority vote (the smoothed classifier DDS certifies).
LABEL_RULES = ("softmax", "vote")


@dataclass(frozen=True)
class EOTStreams:
    """The noise streams of one EOT-PGD flavour (numbers from :mod:`captum_fvit.noise`)."""

    #: EOT samples of the attack steps.
    attack: int
    #: Samples that fix the default labels.
    label: int


#: Streams of :func:`~captum_fvit.evaluate.attacks.prediction.eot_pgd_attack`.
EOT_STREAMS = EOTStreams(EOT_STREAM, EOT_LABEL_STREAM)
#: Streams of :func:`~captum_fvit.evaluate.attacks.adaptive.smooth_pgd` (the adaptive attacks).
ADAPTIVE_STREAMS = EOTStreams(ADAPTIVE_STREAM, ADAPTIVE_LABEL_STREAM)


class EotPgdArguments(NamedTuple):
    """The checked arguments shared by the two EOT-PGD entry points."""

    images: torch.Tensor
    norm: str
    eps: float
    steps: int
    n_eot: int
    alpha: float
    seed: int


def check_eot_pgd_arguments(
    inputs, norm, eps, steps, n_eot, step_size, seed
) -> EotPgdArguments:
    """Validate what :func:`~captum_fvit.evaluate.attacks.prediction.eot_pgd_attack` and
    :func:`~captum_fvit.evaluate.attacks.adaptive.smooth_pgd` share (once, at their entry):
    the image batch, the norm, ε in [0, 1] pixel units, the step counts, the step size
    (default ε/5) and the seed (a fresh one when ``None``)."""
    eps = check_eps(eps)
    seed = check_seed(seed)
    return EotPgdArguments(
        images=check_image_batch(inputs),
        norm=check_norm(norm),
        eps=eps,
        steps=check_steps(steps),
        n_eot=check_steps(n_eot, "n_eot"),
        alpha=resolve_step(step_size, eps),
        seed=random_seed() if seed is None else seed,
    )


def _num_classes(dds: DifferentiableDDS, pixels: torch.Tensor) -> int:
    with torch.no_grad():
        return logits_of(dds.model(dds.normalization.from_pixels(pixels[:1]))).shape[1]


def eot_pgd(
    dds: DifferentiableDDS,
    pixels: torch.Tensor,
    target: LabelType,
    eps: float,
    n_eot: int,
    *,
    norm: str,
    steps: int,
    alpha: float,
    seed: int,
    random_start: bool = True,
    streams: EOTStreams = ADAPTIVE_STREAMS,
    label_rule: str = "vote",
) -> torch.Tensor:
    """EOT-PGD on ``dds``'s smoothed classifier, in pixel space (arguments already valid).

    Parameters
    ----------
    dds : DifferentiableDDS
        The defence under attack (model, denoiser, σ, noise kind, chunking).
    pixels : Tensor
        ``N×C×H×W`` clean images in [0, 1].
    target : Tensor, sequence of int or None
        Classes whose smoothed probability is lowered (the attacks' ``target``); ``None``: the
        smoothed classifier's label on ``n_eot`` samples of ``streams.label``, read by
        ``label_rule``.
    eps : float
        Radius in **[0, 1] pixel units** (0 returns a copy of ``pixels``).
    n_eot : int
        Noise samples per step (fresh at every step).
    norm : {"linf", "l2"}
        Threat model: ``α·sign(g)`` or ``α·g/‖g‖₂`` steps.
    steps : int
        Gradient steps.
    alpha : float
        Step size in pixel units.
    seed : int
        Seed of the random start and of every noise draw.
    random_start : bool, default True
        Start uniformly in the ball (stream ``ATTACK_START_STREAM``).
    streams : EOTStreams, default ADAPTIVE_STREAMS
        Noise streams of the steps and of the default labels.
    label_rule : {"vote", "softmax"}, default "vote"
        How default labels are read (see :data:`LABEL_RULES`).

    Returns
    -------
    Tensor
        ``N×C×H×W`` adversarial pixels in [0, 1].

    Notes
    -----
    The loss is ``−log p̄_y``; its gradient ``−∇p̄_y / p̄_y`` is a positive per-image multiple
    of ``−∇p̄_y``, and signed (ℓ∞) or normalised (ℓ2) steps do not depend on that multiple,
    so each step needs only the one-pass EOT estimate of ``∇p̄_y``.
    """
    label_rule = check_choice(label_rule, "label_rule", LABEL_RULES)

    def smoothed_label() -> torch.Tensor:
        estimate = dds.estimate(pixels, n_eot, seed, stream=streams.label)
        return estimate.predicted if label_rule == "vote" else estimate.mean_softmax.argmax(1)

    classes = resolve_labels(target, pixels.shape[0], pixels.device, smoothed_label)
    weights = -F.one_hot(classes, _num_classes(dds, pixels)).to(pixels.dtype)

    def gradient(x: torch.Tensor, step: int) -> torch.Tensor:
        return dds.gradient(
            x, n_eot, seed, prob_weights=weights, stream=streams.attack, start=step * n_eot
        ).grad

    start = seeded_start(pixels, eps, norm, seed) if random_start and eps > 0 else None
    return projected_ascent(gradient, pixels, eps, norm, steps, alpha, start)
