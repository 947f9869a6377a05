"""The one label helper of the attacks: the classes an attack must change (PGD) or keep
(top-k), one per image — the attacks' ``target`` (Captum's name; ``labels=`` is its deprecated
old name)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

__all__ = ["LabelType", "deprecated_alias", "resolve_labels"]

#: What the attacks accept as labels: one class per image, one class for all, or ``None``.
LabelType = torch.Tensor | Sequence[int] | int | None


def resolve_labels(
    labels: LabelType,
    n: int,
    device: torch.device | str,
    default: Callable[[], torch.Tensor] | None = None,
    *,
    name: str = "target",
) -> torch.Tensor:
    """``N`` int64 class indices on ``device``.

    Parameters
    ----------
    labels : Tensor, sequence of int, int or None
        One class per image, or one class for all images; ``None`` takes ``default()``.
    n : int
        Number of images.
    device : torch.device or str
        Where the labels go (the images' device).
    default : callable, optional
        ``default() -> N`` classes when ``labels`` is ``None`` (e.g. the model's prediction),
        run under ``torch.no_grad``; called only then.
    name : str, default "target"
        The caller's keyword, for the messages.

    Raises
    ------
    TypeError
        For float or bool labels (they are not class indices).
    ValueError
        For a number of classes other than 1 or ``n``, or ``labels=None`` without a default.
    """
    if labels is None:
        if default is None:
            raise ValueError(f"{name} is required here: pass one class index per image")
        with torch.no_grad():
            labels = default()
    tensor = torch.as_tensor(labels, device=device)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(
            f"{name} must be integer class indices, got dtype {tensor.dtype}; pass e.g. "
            "logits.argmax(dim=1)"
        )
    tensor = tensor.long().reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(n)
    if tensor.numel() != n:
        raise ValueError(f"{name} has {tensor.numel()} entries for {n} inputs; give 1 or {n}")
    return tensor


def deprecated_alias(value: object, old: str, new: str) -> object:
    """``value``, with a ``DeprecationWarning`` that attribute ``old`` is now ``new``."""
    warnings.warn(
        f"{old} is deprecated (removed in the next release); use .{new}",
        DeprecationWarning,
        stacklevel=3,
    )
    return value
