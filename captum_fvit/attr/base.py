"""What every captum-fvit attribution shares: Captum protocol defaults and input preparation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import Attribution

from ..attention import infer_grid
from ..model_io import InputType, model_dtype, unpack_inputs
from ..space import Normalization
from ..validation import check_pixel_range, warn_if_training

__all__ = ["ViTAttribution", "PreparedInputs", "prepare_inputs", "token_grid"]


class ViTAttribution(Attribution):
    """Captum protocol defaults for explanations that are not gradients times inputs.

    ``get_name`` returns the class name (Captum's default would turn ``DDSAttention`` into
    ``"D D S Attention"``); attributions are not multiplied by the inputs and have no
    convergence delta. Subclasses hold configuration only — never the state of a call — so
    one object can serve several threads (calls on one model are serialised by
    :func:`captum_fvit.concurrency.model_lock`).
    """

    @classmethod
    def get_name(cls) -> str:
        return cls.__name__

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False


class PreparedInputs:
    """A validated image batch.

    Attributes
    ----------
    images : Tensor
        ``N×C×H×W`` in the model's normalisation and the model's floating dtype.
    as_tuple : bool
        Whether the user passed a tuple (Captum's convention: answer with a tuple).
    dtype : torch.dtype
        The dtype the user passed; results are returned in it.
    """

    __slots__ = ("images", "as_tuple", "dtype")

    def __init__(self, images: torch.Tensor, as_tuple: bool, dtype: torch.dtype) -> None:
        self.images = images
        self.as_tuple = as_tuple
        self.dtype = dtype

    def wrap(self, result: torch.Tensor) -> InputType:
        """``result`` in the user's dtype, as a tuple if the inputs were one."""
        result = result.to(self.dtype)
        return (result,) if self.as_tuple else result


def prepare_inputs(
    inputs: InputType, model: Callable, normalization: Normalization | None = None
) -> PreparedInputs:
    """Validate Captum-style ``inputs`` for ``model`` (one place for every attribution).

    * shape, dtype and finiteness (:func:`captum_fvit.validation.check_image_batch`);
    * floating inputs of another precision than the model's (float64 or float16 images for a
      float32 model) are cast to the model's dtype; results come back in the input's dtype;
    * a model in training mode, or pixels far outside [0, 1] after undoing
      ``normalization``, are warned about once per model.
    """
    images, as_tuple = unpack_inputs(inputs)
    dtype = images.dtype
    target_dtype = model_dtype(model)
    if target_dtype is not None and images.dtype != target_dtype:
        images = images.to(target_dtype)
    warn_if_training(model)
    if normalization is not None:
        check_pixel_range(normalization.to_pixels(images), model)
    return PreparedInputs(images, as_tuple, dtype)


def token_grid(explainer: Any, image_size: Sequence[int]) -> tuple[int, int]:
    """Patch grid ``(h, w)`` of the token maps ``explainer`` gives for an ``(H, W)`` image,
    computed from the configuration alone (without running the model)."""
    adapter, model = explainer.adapter, explainer.model
    custom = getattr(adapter, "token_grid", None)
    if callable(custom):
        return tuple(custom(model, image_size))
    patch = adapter.patch_size(model)
    height, width = int(image_size[-2]), int(image_size[-1])
    prefix = adapter.num_prefix_tokens(model) or 0
    grid, _ = infer_grid(
        prefix + (height // patch[0]) * (width // patch[1]), (height, width), patch, prefix
    )
    return grid
