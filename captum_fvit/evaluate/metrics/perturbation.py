"""The perturbation test (Chefer et al. 2021): remove pixels in the order a map ranks them.

For each fraction ``p`` of a grid (default ``0, 0.1, …, 0.9``) the ``⌊p·H·W⌋`` pixel positions
that the map ranks highest (``"positive"``: most relevant first) or lowest (``"negative"``:
least relevant first) are *removed*, i.e. set to a baseline value in **[0, 1] pixel space**
(default 0 = black, as in Chefer et al.'s code, which zeroes the unnormalised image and then
normalises it). All channels of a pixel go together. The model classifies every masked
image; the accuracy at each ``p`` and the area under the accuracy curve (trapezoid rule over
``p`` in *fraction units*, so the AUC lies in ``[0, 0.9]`` for the default grid; multiply by
100 for the percentages papers report) summarise it. Lower AUC is better for
``"positive"``, higher for ``"negative"``.

The map and the masked image are separate arguments: the map may come from another image —
e.g. the map of an attacked image ranking the pixels of the clean image it was made from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...explain.targets import logits_of
from ...space import Normalization, resolve_normalization
from ...validation import check_choice, check_count, check_image_batch
from .maps import as_map_batch, to_pixel_grid

__all__ = ["PERTURBATION_MODES", "DEFAULT_FRACTIONS", "PerturbationResult", "perturbation_test"]

#: Which end of the ranking is removed first.
PERTURBATION_MODES = ("positive", "negative")

#: Fractions of pixels removed, as in Chefer et al. (2021).
DEFAULT_FRACTIONS = tuple(i / 10 for i in range(10))


@dataclass
class PerturbationResult:
    """Outcome of a perturbation test.

    Attributes
    ----------
    fractions : Tensor
        ``F`` fractions of pixels removed (fraction units, ``0..1``).
    accuracy : Tensor
        ``F`` share of images whose prediction equals the label at each fraction.
    auc : float
        ``∫ accuracy dp`` by the trapezoid rule, ``p`` in fraction units.
    correct : Tensor
        ``F×N`` bool, per image and fraction (for confidence intervals).
    removed : Tensor
        ``F`` number of pixel positions removed at each fraction.
    mode : str
        ``"positive"`` or ``"negative"``.
    """

    fractions: torch.Tensor
    accuracy: torch.Tensor
    auc: float
    correct: torch.Tensor
    removed: torch.Tensor
    mode: str


def _baseline_pixels(
    baseline: float | Sequence[float] | torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """The baseline as a tensor broadcastable to ``M×C×H×W`` pixels."""
    value = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    channels = images.shape[1]
    if value.dim() == 0:
        return value
    if value.dim() == 1:
        if value.numel() != channels:
            raise ValueError(
                f"baseline has {value.numel()} values but the images have {channels} channels; "
                "give one value per channel (in [0, 1] pixel units) or a single float"
            )
        return value.view(1, channels, 1, 1)
    if value.shape != images.shape[1:]:
        raise ValueError(
            f"a baseline image must have shape C×H×W = {tuple(images.shape[1:])}, got "
            f"{tuple(value.shape)}"
        )
    return value.unsqueeze(0)


def _check_fractions(fractions: Sequence[float]) -> torch.Tensor:
    """``fractions`` as float64: a strictly increasing sequence of numbers in [0, 1].

    A non-sequence or non-numbers is a ``TypeError``, wrong values a ``ValueError`` (as in
    :mod:`captum_fvit.validation`).
    """
    try:
        if isinstance(fractions, (str, bytes)):
            raise TypeError
        values = torch.as_tensor(list(fractions), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"fractions must be a sequence of numbers in [0, 1] (fraction units), e.g. "
            f"(0, 0.1, ..., 0.9); got {fractions!r}"
        ) from None
    if values.dim() != 1:
        raise ValueError(f"fractions must be a flat sequence of numbers, got shape {tuple(values.shape)}")
    if values.numel() == 0:
        raise ValueError("fractions is empty; give e.g. (0, 0.1, ..., 0.9)")
    if not torch.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"fractions must lie in [0, 1] (fraction units), got {values.tolist()}")
    if values.numel() > 1 and (values[1:] <= values[:-1]).any():
        raise ValueError(f"fractions must be strictly increasing, got {values.tolist()}")
    return values


def perturbation_test(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    mode: str = "positive",
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    baseline: float | Sequence[float] | torch.Tensor = 0.0,
    grid: Sequence[int] | None = None,
    normalization: Normalization | None = None,
    batch_size: int = 64,
) -> PerturbationResult:
    """Accuracy of ``model`` as the pixels ``maps`` rank highest (or lowest) are removed.

    Parameters
    ----------
    model : nn.Module
        Classifier returning ``N×K`` logits (or an object with ``.logits``); run under
        ``torch.no_grad`` in whatever mode it is in (use ``eval()``).
    inputs : Tensor
        ``N×C×H×W`` images **that are masked**, in the model's normalisation. They need not
        be the images the maps were computed on (e.g. the clean images, ranked by the maps
        of their attacked versions).
    maps : Tensor
        Relevance deciding the order, one per image: ``N×P`` token maps (laid on ``grid``),
        ``N×h×w`` or ``N×C×h×w`` maps (channels averaged); coarser maps are upsampled
        bilinearly to ``H×W``. Ties are removed lower pixel index first.
    labels : Tensor or sequence of int, optional
        ``N`` classes counted as correct; default the model's predictions on the unmasked
        ``inputs`` (the test then measures agreement with the original prediction).
    mode : {"positive", "negative"}, default "positive"
        Remove the most relevant pixels first ("positive") or the least relevant
        ("negative").
    fractions : sequence of float, default (0, 0.1, …, 0.9)
        Strictly increasing fractions in ``[0, 1]``; ``⌊p·H·W⌋`` pixels are removed at ``p``.
    baseline : float, sequence of float or Tensor, default 0.0
        Value of a removed pixel in **[0, 1] pixel units**: a float (0 = black), one value per
        channel (e.g. the dataset mean) or a ``C×H×W`` image (e.g. a blurred copy).
    grid : tuple of int, optional
        Patch grid ``(h, w)`` of token maps (default square).
    normalization : Normalization, optional
        The model's input normalisation (default :func:`~captum_fvit.space.resolve_normalization`).
    batch_size : int, default 64
        Masked images per forward pass (all fractions and images are batched together).

    Returns
    -------
    PerturbationResult
    """
    check_choice(mode, "mode", PERTURBATION_MODES)
    batch_size = check_count(batch_size, "batch_size")
    images = check_image_batch(inputs)
    maps = as_map_batch(maps, "maps")
    n, _, height, width = images.shape
    if maps.shape[0] != n:
        raise ValueError(f"maps hold {maps.shape[0]} images but inputs hold {n}; one map per image")
    if maps.dim() >= 3 and tuple(maps.shape[-2:]) != (height, width):
        if maps.shape[-2] > height or maps.shape[-1] > width:
            raise ValueError(
                f"the maps are {maps.shape[-2]}x{maps.shape[-1]} pixels but the images are "
                f"{height}x{width}; compute the maps on images of the same size"
            )
    fraction_values = _check_fractions(fractions)
    norm = normalization if normalization is not None else resolve_normalization(model)
    pixels = norm.to_pixels(images.detach())
    fill = _baseline_pixels(baseline, pixels)

    relevance = to_pixel_grid(maps.to(images.device), (height, width), grid=grid)
    relevance = relevance.reshape(n, -1)
    order = torch.sort(relevance, dim=1, descending=mode == "positive", stable=True).indices
    position = torch.arange(height * width, device=images.device).expand(n, -1)
    rank = torch.empty_like(order).scatter_(1, order, position)  # 0 = removed first
    removed = torch.tensor(
        [math.floor(float(p) * height * width + 1e-9) for p in fraction_values],
        device=images.device,
    )

    with torch.no_grad():
        if labels is None:
            labels = _predict(model, images, batch_size)
        labels = torch.as_tensor(labels, device=images.device).long().reshape(-1)
        if labels.numel() != n:
            raise ValueError(f"labels has {labels.numel()} entries for {n} images")
        total = removed.numel() * n
        predictions = torch.empty(total, dtype=torch.long, device=images.device)
        for start in range(0, total, int(batch_size)):
            flat = torch.arange(start, min(start + int(batch_size), total), device=images.device)
            which_fraction, which_image = flat // n, flat % n
            mask = rank[which_image] < removed[which_fraction][:, None]
            mask = mask.view(-1, 1, height, width)
            masked = torch.where(mask, fill, pixels[which_image])
            logits = logits_of(model(norm.from_pixels(masked)))
            predictions[start : start + flat.numel()] = logits.argmax(dim=1)
    correct = (predictions.view(-1, n) == labels[None]).cpu()
    accuracy = correct.double().mean(dim=1)
    auc = float(torch.trapezoid(accuracy, fraction_values)) if accuracy.numel() > 1 else 0.0
    return PerturbationResult(
        fractions=fraction_values,
        accuracy=accuracy,
        auc=auc,
        correct=correct,
        removed=removed.cpu(),
        mode=mode,
    )


def _predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [
            logits_of(model(images[i : i + batch_size])).argmax(dim=1)
            for i in range(0, images.shape[0], batch_size)
        ]
    )
