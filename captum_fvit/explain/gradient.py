"""Gradient-weighted attention methods (class specific).

* ``"grad_rollout"`` — Chefer, Gur & Wolf (2021b), "Generic Attention-model Explainability":
  ``R = I``; for each layer ``Ā_l = mean_h((∇_A y_t ⊙ A_l)⁺)`` and ``R ← R + Ā_l R``; the map
  is the class-token row of ``R`` over the patches.
* ``"attn_gradcam"`` — the attention Grad-CAM baseline of Chefer et al. (2021): last layer,
  each head's class-token row weighted by the mean of its gradient over the patch entries of
  that row, averaged over heads, clamped at 0.

``y_t`` is the logit of the explained class (not its softmax), as in Chefer's code.
"""

from __future__ import annotations

import torch

from ..attention.layout import TokenLayout
from .base import (
    TokenMapAccumulator,
    TokenMapMethod,
    at_least_float32,
    register_method,
    resolve_layer,
    run_on_maps,
)

__all__ = [
    "GradientRollout",
    "AttentionGradCAM",
    "gradient_rollout",
    "attention_gradcam",
]


class _GradRolloutAccumulator(TokenMapAccumulator):
    def __init__(self, num_layers: int, cls_index: int, start: int) -> None:
        super().__init__(num_layers, cls_index)
        self.start = start
        self.probs: dict[int, torch.Tensor] = {}
        self.cams: dict[int, torch.Tensor] = {}

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if layer >= self.start:
            # A reference only: autograd keeps this tensor alive for the backward pass anyway.
            self.probs[layer] = probs

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        probs = self.probs.pop(layer, None)
        if probs is None:
            return
        self.cams[layer] = (at_least_float32(grad) * at_least_float32(probs)).clamp(min=0).mean(1)

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if not self.cams:
            raise RuntimeError("grad_rollout needs gradients: call the recorder's backward()")
        relevance = None
        for layer in sorted(self.cams):
            cam = self.cams[layer]
            if relevance is None:
                eye = torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device)
                relevance = eye.expand_as(cam)
            relevance = relevance + cam @ relevance
        return relevance[:, self.cls_index, layout.patch_slice]


@register_method
class GradientRollout(TokenMapMethod):
    """Gradient-weighted attention rollout (Chefer et al., 2021b).

    Parameters
    ----------
    start_layer : int, default 0
        First layer included in the product (negative counts from the last).
    """

    name = "grad_rollout"
    needs_gradients = True

    def __init__(self, start_layer: int = 0) -> None:
        self.start_layer = int(start_layer)

    def layers(self, num_layers: int) -> list[int]:
        start = resolve_layer(self.start_layer, num_layers, "start_layer")
        return list(range(start, num_layers))

    def accumulator(self, num_layers: int, cls_index: int) -> TokenMapAccumulator:
        start = resolve_layer(self.start_layer, num_layers, "start_layer")
        return _GradRolloutAccumulator(num_layers, cls_index, start)

    def options(self) -> dict:
        return {"start_layer": self.start_layer}


class _GradCAMAccumulator(TokenMapAccumulator):
    def __init__(self, num_layers: int, cls_index: int, layer: int) -> None:
        super().__init__(num_layers, cls_index)
        self.layer = layer
        self.row: torch.Tensor | None = None
        self.grad_row: torch.Tensor | None = None

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if layer == self.layer:
            self.row = at_least_float32(probs[:, :, self.cls_index, :])

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        if layer == self.layer:
            self.grad_row = at_least_float32(grad[:, :, self.cls_index, :])

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if self.row is None or self.grad_row is None:
            raise RuntimeError("attn_gradcam needs gradients: call the recorder's backward()")
        patches = layout.patch_slice
        weights = self.grad_row[:, :, patches].mean(dim=-1, keepdim=True)
        return (weights * self.row[:, :, patches]).mean(dim=1).clamp(min=0)


@register_method
class AttentionGradCAM(TokenMapMethod):
    """Grad-CAM on the attention of one layer (Chefer et al.'s baseline).

    Parameters
    ----------
    layer : int, default -1
        Attention layer to read (negative counts from the last).
    """

    name = "attn_gradcam"
    needs_gradients = True

    def __init__(self, layer: int = -1) -> None:
        self.layer = int(layer)

    def layers(self, num_layers: int) -> list[int]:
        return [resolve_layer(self.layer, num_layers)]

    def accumulator(self, num_layers: int, cls_index: int) -> TokenMapAccumulator:
        return _GradCAMAccumulator(num_layers, cls_index, resolve_layer(self.layer, num_layers))

    def options(self) -> dict:
        return {"layer": self.layer}


def gradient_rollout(
    attentions: list[torch.Tensor],
    gradients: list[torch.Tensor],
    layout: TokenLayout,
    start_layer: int = 0,
) -> torch.Tensor:
    """Gradient rollout from recorded maps and their gradients (``N×heads×T×T`` each)."""
    return run_on_maps(GradientRollout(start_layer), attentions, layout, gradients)


def attention_gradcam(
    attentions: list[torch.Tensor],
    gradients: list[torch.Tensor],
    layout: TokenLayout,
    layer: int = -1,
) -> torch.Tensor:
    """Attention Grad-CAM from recorded maps and their gradients."""
    return run_on_maps(AttentionGradCAM(layer), attentions, layout, gradients)
