"""Which class a smoothed explanation explains and a certificate certifies.

One routine, shared by :class:`~captum_fvit.DDS`, :class:`~captum_fvit.DDSAttention` and
:class:`~captum_fvit.FaithfulRegion`, so that with the same ``seed`` and ``n_select`` they
always explain and certify the same class: the majority class of the model over
``n_select`` denoised noise samples drawn from their own noise stream
(:data:`~captum_fvit.noise.SELECTION_STREAM`), independent of the samples that estimate
the explanation and the prediction's probability (step 1 of Cohen et al.'s CERTIFY; ties go
to the lowest class index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..certify import select_class
from ..model_io import TargetType, index_batch_args, logits_of, resolve_target
from ..noise import SELECTION_STREAM
from ..smoothing import SmoothingEngine

__all__ = ["ClassSelection", "explained_classes", "select_classes"]


@dataclass(frozen=True)
class ClassSelection:
    """The selected classes.

    Attributes
    ----------
    counts : Tensor
        ``N×K`` int64 counts of each predicted class over the ``n_select`` selection samples.
    classes : Tensor
        ``N`` int64 majority classes (lowest index on ties).
    n_select : int
        Selection samples per input.
    """

    counts: torch.Tensor
    classes: torch.Tensor
    n_select: int


def select_classes(
    engine: SmoothingEngine,
    model: Callable,
    images: torch.Tensor,
    n_select: int,
    seed: int,
    forward_args: tuple = (),
    *,
    process_group=None,
    progress: bool = False,
) -> ClassSelection:
    """The smoothed classifier's majority class of each input over ``n_select`` samples."""
    counts = engine.class_counts(
        model,
        images,
        n_select,
        seed,
        SELECTION_STREAM,
        forward_args,
        process_group=process_group,
        progress=progress,
    )
    return ClassSelection(counts=counts, classes=select_class(counts), n_select=n_select)


def explained_classes(
    engine: SmoothingEngine,
    model: Callable,
    images: torch.Tensor,
    target: TargetType,
    n_select: int,
    seed: int,
    forward_args: tuple = (),
    *,
    process_group=None,
    progress: bool = False,
) -> torch.Tensor:
    """``N`` classes to explain: ``target`` when given (validated against the model's number
    of classes), else the smoothed majority class (:func:`select_classes`)."""
    if target is None:
        return select_classes(
            engine,
            model,
            images,
            n_select,
            seed,
            forward_args,
            process_group=process_group,
            progress=progress,
        ).classes
    first = index_batch_args(forward_args, images.shape[0], torch.zeros(1, dtype=torch.long))
    with torch.no_grad():
        logits = logits_of(model(images[:1], *first))
    return resolve_target(target, logits.expand(images.shape[0], -1))
