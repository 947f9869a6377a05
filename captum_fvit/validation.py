"""Input checks shared by every public entry point, with errors that name the fix."""

from __future__ import annotations

import math

import torch

__all__ = ["check_image_batch", "check_positive"]


def check_image_batch(inputs: object, name: str = "inputs") -> torch.Tensor:
    """Check that ``inputs`` is a finite floating ``N×C×H×W`` tensor and return it.

    Raises
    ------
    TypeError
        If ``inputs`` is not a floating-point tensor.
    ValueError
        If it is not 4-D, is empty, or holds NaN/inf values.
    """
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape N×C×H×W, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (got {inputs.dtype}); convert images with "
            "`.float()` and normalise them the way the model expects"
        )
    if inputs.dim() != 4:
        hint = " (add a batch dimension with `x.unsqueeze(0)`)" if inputs.dim() == 3 else ""
        raise ValueError(
            f"{name} must be a 4-D batch N×C×H×W, got shape {tuple(inputs.shape)}{hint}"
        )
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if not torch.isfinite(inputs).all():
        raise ValueError(
            f"{name} contains NaN or infinite values; clean or re-normalise the images first"
        )
    return inputs


def check_positive(value: float, name: str, unit: str = "") -> float:
    """Check ``value`` is a finite number > 0 and return it as a float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{unit}, got {value}")
    return value
