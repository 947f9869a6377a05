"""``AttentionMap``: an attention explanation of a ViT as a Captum ``Attribution``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.log import log_usage
from torch import nn

from ..concurrency import model_lock
from ..errors import FiniteGuard
from ..explain import TokenMapExplainer, TokenMapMethod
from ..explain.explainer import TokenMaps
from ..model_io import InputType, TargetType, forward_args_tuple
from ..space import UPSAMPLE_MODES, tokens_to_pixels
from ..validation import check_choice
from .base import ViTAttribution, prepare_inputs, token_grid

__all__ = ["AttentionMap"]


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
    same forward pass). ``"raw"`` and ``"rollout"`` do not depend on ``target`` (it is still
    validated).

    The object holds configuration only; every result carries its own token layout
    (:meth:`explain`). Several threads may share it and the model: calls on one model run
    one at a time (:mod:`captum_fvit.concurrency`). NaN or infinite logits or token maps raise
    :class:`~captum_fvit.errors.NonFiniteError` naming the stage and the input.

    Examples
    --------
    >>> import timm, torch
    >>> from captum_fvit import AttentionMap
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8).eval()
    >>> explainer = AttentionMap(vit, method="grad_rollout")
    >>> x = torch.randn(2, 3, 32, 32)
    >>> explainer.attribute(x, target=3).shape
    torch.Size([2, 3, 32, 32])
    >>> explainer.token_map(x, target=3).shape, explainer.token_grid(x.shape[-2:])
    (torch.Size([2, 16]), (4, 4))
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | TokenMapMethod = "rollout",
        *,
        upsample: str = "bilinear",
        adapter: Any = None,
        **method_options: Any,
    ) -> None:
        super().__init__(model)
        self.upsample = check_choice(upsample, "upsample", UPSAMPLE_MODES)
        self.model = model
        self.explainer = TokenMapExplainer(model, method, adapter=adapter, **method_options)
        self.method = self.explainer.method

    def token_grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """Patch grid ``(h, w)`` the model uses for an ``(H, W)`` image, without running it."""
        return token_grid(self.explainer, image_size)

    def explain(
        self,
        inputs: InputType,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> TokenMaps:
        """Token maps with their layout, logits and explained classes.

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
        TokenMaps
            ``maps`` (``N×P``, row-major over ``layout.grid``), ``logits``, ``target`` and the
            token ``layout`` of this input size.

        Raises
        ------
        NonFiniteError
            When the logits or the token maps are NaN or infinite.
        """
        images = prepare_inputs(inputs, self.model).images
        return self._explain(images, target, additional_forward_args)

    def _explain(
        self, images: torch.Tensor, target: TargetType, additional_forward_args: Any
    ) -> TokenMaps:
        """:meth:`explain` of inputs already prepared by the public entry point."""
        with model_lock(self.model):
            result = self.explainer(images, target, forward_args_tuple(additional_forward_args))
        guard = FiniteGuard(torch.arange(images.shape[0], device=images.device))
        guard.watch("model", result.logits)
        guard.watch("method", result.maps)
        guard.check()
        return result

    def token_map(
        self,
        inputs: InputType,
        target: TargetType = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """The ``N×P`` relevance of the patch tokens, row-major over
        :meth:`token_grid` ``(inputs.shape[-2:])`` (see :meth:`explain` for the layout)."""
        return self.explain(inputs, target, additional_forward_args).maps

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
        prepared = prepare_inputs(inputs, self.model)
        images = prepared.images
        result = self._explain(images, target, additional_forward_args)
        pixels = tokens_to_pixels(
            result.maps, result.layout, images.shape[-2:], images.shape[1], self.upsample
        )
        return prepared.wrap(pixels)
