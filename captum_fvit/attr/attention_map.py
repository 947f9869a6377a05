"""``AttentionMap``: an attention explanation of a ViT as a Captum ``Attribution``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.log import log_usage
from torch import nn

from ..attention import AttentionAdapter, infer_grid
from ..explain import TokenMapExplainer, TokenMapMethod
from ..explain.targets import TargetType
from ..space import UPSAMPLE_MODES, tokens_to_pixels
from ..validation import check_image_batch
from .base import ViTAttribution

__all__ = ["AttentionMap"]

InputType = torch.Tensor | tuple[torch.Tensor, ...]


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


class AttentionMap(ViTAttribution):
    """Attention explanation of a Vision Transformer, as a Captum attribution.

    The model runs once with its attention recorded (fused kernels switched off for the
    layers the method reads, and restored afterwards); the method turns the attention into
    a relevance per patch token, which :meth:`attribute` spreads over the patch's pixels
    and channels so the result has exactly the input's shape.

    Parameters
    ----------
    model : nn.Module
        A timm, torchvision or Hugging Face ViT classifier in ``eval()`` mode, or a model a
        registered adapter supports. It is left exactly as it was after every call.
    method : str or TokenMapMethod, default "rollout"
        ``"raw"``, ``"rollout"``, ``"grad_rollout"`` or ``"attn_gradcam"`` (THEORY §3).
    upsample : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        How :meth:`attribute` spreads token values over pixels (``"nearest"`` keeps each
        patch constant).
    adapter : AttentionAdapter, optional
        Force an adapter instead of looking one up.
    **method_options
        Options of the method: ``head_fusion`` ("mean"/"max"/"min") and ``layer`` for
        ``"raw"``; ``start_layer``, ``head_fusion``, ``residual`` for ``"rollout"``;
        ``start_layer`` for ``"grad_rollout"``; ``layer`` for ``"attn_gradcam"``.

    Notes
    -----
    Class-specific methods (``"grad_rollout"``, ``"attn_gradcam"``) explain ``target``; when
    it is ``None`` they explain each input's predicted class (argmax of the logits of the
    same forward pass). ``"raw"`` and ``"rollout"`` ignore ``target``.

    Examples
    --------
    >>> import timm, torch
    >>> from captum_fvit import AttentionMap
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8).eval()
    >>> explainer = AttentionMap(vit, method="grad_rollout")
    >>> x = torch.randn(2, 3, 32, 32)
    >>> explainer.attribute(x, target=3).shape
    torch.Size([2, 3, 32, 32])
    >>> explainer.token_map(x, target=3).shape, explainer.grid
    (torch.Size([2, 16]), (4, 4))
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | TokenMapMethod = "rollout",
        *,
        upsample: str = "bilinear",
        adapter: AttentionAdapter | None = None,
        **method_options: Any,
    ) -> None:
        super().__init__(model)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.model = model
        self.explainer = TokenMapExplainer(model, method, adapter=adapter, **method_options)
        self.method = self.explainer.method
        self.upsample = upsample
        self._grid: tuple[int, int] | None = None

    @property
    def grid(self) -> tuple[int, int] | None:
        """Patch grid ``(h, w)`` of the last call (``None`` before the first)."""
        return self._grid

    def token_grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """Patch grid ``(h, w)`` the model uses for an ``(H, W)`` image, without running it."""
        adapter = self.explainer.adapter
        patch = adapter.patch_size(self.model)
        height, width = int(image_size[-2]), int(image_size[-1])
        prefix = adapter.num_prefix_tokens(self.model) or 0
        grid, _ = infer_grid(
            prefix + (height // patch[0]) * (width // patch[1]), (height, width), patch, prefix
        )
        return grid

    def token_map(
        self,
        inputs: InputType,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """The ``N×P`` relevance of the patch tokens (row-major ``h×w`` grid, see :attr:`grid`).

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's own normalisation.
        target : int, sequence of int or Tensor, optional
            Class to explain per input (class-specific methods); ``None`` = predicted class.
        additional_forward_args : Any, optional
            Extra positional arguments for the model.
        """
        images, _ = unpack_inputs(inputs)
        result = self.explainer(images, target, forward_args_tuple(additional_forward_args))
        self._grid = result.layout.grid
        return result.maps

    @log_usage()
    def attribute(
        self,
        inputs: InputType,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> InputType:
        """Attribution with exactly the shape of ``inputs``.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's own normalisation.
        target : int, sequence of int or Tensor, optional
            Class to explain per input (class-specific methods); ``None`` = predicted class.
        additional_forward_args : Any, optional
            Extra positional arguments for the model.

        Returns
        -------
        Tensor or tuple of one Tensor
            The token map spread over each patch's pixels and broadcast over channels; a
            tuple when ``inputs`` was a tuple (Captum's convention).
        """
        images, as_tuple = unpack_inputs(inputs)
        result = self.explainer(images, target, forward_args_tuple(additional_forward_args))
        self._grid = result.layout.grid
        pixels = tokens_to_pixels(
            result.maps, result.layout, images.shape[-2:], images.shape[1], self.upsample
        ).to(images.dtype)
        return (pixels,) if as_tuple else pixels
