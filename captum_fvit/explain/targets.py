"""Reading logits from model outputs and resolving which class to explain."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["logits_of", "resolve_target"]

TargetType = int | Sequence[int] | torch.Tensor | None


def logits_of(output: object) -> torch.Tensor:
    """The ``N×K`` logits of a classifier output.

    Accepts a tensor (timm, torchvision), an object with ``.logits`` (Hugging Face) or a
    tuple whose first element is the logits.
    """
    if isinstance(output, torch.Tensor):
        logits = output
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    else:
        raise TypeError(
            f"cannot read logits from a model output of type {type(output).__name__}; the model "
            "must return an N×K tensor, an object with `.logits`, or a tuple starting with them"
        )
    if logits.dim() != 2:
        raise ValueError(
            f"expected classifier logits of shape N×K, got {tuple(logits.shape)}; explain a "
            "classification head (not a feature extractor)"
        )
    return logits


def resolve_target(target: TargetType, logits: torch.Tensor) -> torch.Tensor:
    """One class index per sample (``N`` int64 tensor on the logits' device).

    ``None`` explains each sample's predicted class (argmax of its logits); an int explains
    that class for all samples; a sequence or tensor gives one class per sample (or one for
    all).
    """
    n, num_classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if isinstance(target, tuple):
        raise TypeError(
            "tuple targets index multi-dimensional outputs; a ViT classifier needs one class "
            "index per sample (int, list or 1-D tensor)"
        )
    tensor = torch.as_tensor(target, device=logits.device)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long().reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(n)
    if tensor.numel() != n:
        raise ValueError(f"target has {tensor.numel()} entries for a batch of {n} inputs")
    if ((tensor < 0) | (tensor >= num_classes)).any():
        raise ValueError(f"target classes must lie in [0, {num_classes - 1}], got {target}")
    return tensor.contiguous()
