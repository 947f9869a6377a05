"""What goes into a model and what comes out: Captum-style inputs, targets and logits.

Shared by every attribution (``AttentionMap``, ``DDSAttention``, ``DDS``, ``FaithfulRegion``),
the smoothing engine, the explanation methods and the evaluation code, so that each of them
reads inputs and logits the same way:

* :func:`unpack_inputs` — Captum's tensor-or-tuple ``inputs`` → the image batch;
* :func:`forward_args_tuple` — Captum's ``additional_forward_args`` → positional arguments;
* :func:`logits_of` — the ``N×K`` logits of any classifier output (timm/torchvision tensors,
  Hugging Face ``ImageClassifierOutput``, tuples);
* :class:`LogitsModel` — a model wrapped so that it returns logits (for Captum methods,
  which expect a tensor from ``forward_func``);
* :func:`resolve_target` — one class index per input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .validation import check_image_batch

__all__ = [
    "InputType",
    "TargetType",
    "LogitsModel",
    "forward_args_tuple",
    "index_batch_args",
    "logits_of",
    "model_dtype",
    "resolve_target",
    "unpack_inputs",
]

#: Captum's ``inputs``: a tensor, or a tuple of tensors (a ViT takes exactly one).
InputType = torch.Tensor | tuple[torch.Tensor, ...]
#: Class(es) to explain: one int for all inputs, one per input, or ``None``.
TargetType = int | Sequence[int] | torch.Tensor | None


def unpack_inputs(inputs: InputType) -> tuple[torch.Tensor, bool]:
    """The image batch of Captum-style ``inputs`` and whether they came as a tuple."""
    if isinstance(inputs, tuple):
        if len(inputs) != 1:
            raise ValueError(
                f"a ViT takes one image tensor, got a tuple of {len(inputs)} inputs; pass other "
                "model arguments through `additional_forward_args`"
            )
        return check_image_batch(inputs[0]), True
    return check_image_batch(inputs), False


def forward_args_tuple(additional_forward_args: Any) -> tuple:
    """Captum's ``additional_forward_args`` as a tuple of positional arguments."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def index_batch_args(value: Any, n_inputs: int, index: torch.Tensor) -> Any:
    """Select the rows of per-input tensors (first dimension ``N``) for a chunk of samples.

    Tensors whose first dimension is the batch size ``N`` are per-input (Captum's convention
    for ``additional_forward_args`` and baselines, which its ``NoiseTunnel`` expands the same
    way); tuples and lists are handled element-wise; everything else passes through.
    """
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n_inputs:
        return value[index.to(value.device)]
    if isinstance(value, tuple):
        return tuple(index_batch_args(v, n_inputs, index) for v in value)
    if isinstance(value, list):
        return [index_batch_args(v, n_inputs, index) for v in value]
    return value


def model_dtype(model: Callable) -> torch.dtype | None:
    """The floating dtype of ``model``'s first floating parameter (``None`` if it has none)."""
    if not isinstance(model, nn.Module):
        return None
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


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


class LogitsModel(nn.Module):
    """``model`` wrapped so that calling it returns the ``N×K`` logits (:func:`logits_of`).

    Captum's methods call ``forward_func(inputs, *additional_forward_args)`` and expect a
    tensor; Hugging Face models return an ``ImageClassifierOutput``. The wrapper holds the
    model as a submodule, so hooks registered on the model's layers still fire.
    """

    def __init__(self, model: Callable) -> None:
        super().__init__()
        if isinstance(model, nn.Module):
            self.model = model
            self.training = model.training  # mirror the model's mode (eval stays eval)
        else:
            self._function = model
            self.training = False

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        model = self.model if "model" in self._modules else self._function
        return logits_of(model(*args, **kwargs))


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
    if isinstance(target, bool):
        raise TypeError("target must be a class index (int), not a bool")
    if isinstance(target, float):
        raise TypeError(f"target must be an integer class index, got the float {target!r}")
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
