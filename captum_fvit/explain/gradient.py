"""Gradient-weighted attention methods (class specific).

* ``"grad_rollout"`` — Chefer, Gur & Wolf (2021b), "Generic Attention-model
  Explainability": ``R = I``; for each layer ``Ā_l = mean_h((∇_A y_t ⊙ A_l)⁺)`` and
  ``R ← R + Ā_l R``; the map is the explained row of ``R`` (class-token row, or the mean
  query of pooled models) over the patches. Swin: ``R_s = ∏ (I + Ā_l)`` inside each
  stage, joined across patch merging by the children rule
  (:mod:`~captum_fvit.explain.stages`).
* ``"attn_gradcam"`` — the attention Grad-CAM baseline of Chefer et al. (2021): one layer
  (the last by default), each head's explained row weighted by the mean of the explained
  row of its gradient over the patch entries, averaged over heads, clamped at 0; a Swin
  layer's map comes down to the first grid by the children rule.

``y_t`` is the logit of the explained class (not its softmax), as in Chefer's code, for
class-token and pooled models alike. For Swin, ``∇_A y_t`` is 0 for token pairs that do not
share a window (their probability is structurally 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..attention.layout import TokenLayout
from ..attention.windows import WindowedAttention
from .base import (
    TokenMapAccumulator,
    TokenMapMethod,
    at_least_float32,
    register_method,
    resolve_layer,
    run_on_maps,
)
from .stages import combine_stage_factors, query_rows, to_first_grid
from .windowed import window_cam, window_mean_query

__all__ = [
    "GradientRollout",
    "AttentionGradCAM",
    "gradient_rollout",
    "attention_gradcam",
]


def _float_windows(attention: WindowedAttention) -> WindowedAttention:
    return WindowedAttention(at_least_float32(attention.windows), attention.geometry)


class _GradRolloutAccumulator(TokenMapAccumulator):
    accepts_windows = True  # Swin layers arrive in window form (explain.windowed)

    def __init__(
        self,
        num_layers: int,
        cls_index: int | None,
        start: int,
        layer_stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__(num_layers, cls_index, layer_stages)
        self.start = start
        self.probs: dict[int, torch.Tensor] = {}
        self.hierarchical = len(set(self.layer_stages)) > 1
        #: stage → factors of R_s, left to right (one running product for a plain ViT)
        self.factors: dict[int, list[torch.Tensor]] = {}

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if layer >= self.start:
            # A reference only: autograd keeps this tensor alive for the backward pass anyway.
            self.probs[layer] = probs

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        probs = self.probs.pop(layer, None)
        if probs is None:
            return
        if isinstance(probs, WindowedAttention) and isinstance(grad, WindowedAttention):
            if self.hierarchical:  # Swin: stay in window form, O(T·A) per layer
                factor = window_cam(_float_windows(probs), _float_windows(grad))
                self.factors.setdefault(self.stage_of(layer), []).append(factor)
                return
            probs, grad = probs.dense(), grad.dense()
        cam = (at_least_float32(grad) * at_least_float32(probs)).clamp(min=0).mean(1)
        # Gradients arrive last layer first, so R_s = (I + Ā_L)⋯(I + Ā_l) grows on the right:
        # a running product for a plain ViT; for a hierarchical model the factors are kept
        # and the explained row is pushed through them (O(T²) each instead of O(T³)).
        factors = self.factors.setdefault(self.stage_of(layer), [])
        if factors and not self.hierarchical:
            factors[0] = factors[0] + factors[0] @ cam
        else:
            eye = torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device)
            factors.append(eye + cam)

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if not self.factors:
            raise RuntimeError("grad_rollout needs gradients: call the recorder's backward()")
        return combine_stage_factors(self.factors, self.cls_index, layout)


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

    def accumulator(
        self,
        num_layers: int,
        cls_index: int | None,
        layer_stages: Sequence[int] | None = None,
    ) -> TokenMapAccumulator:
        start = resolve_layer(self.start_layer, num_layers, "start_layer")
        return _GradRolloutAccumulator(num_layers, cls_index, start, layer_stages)

    def options(self) -> dict:
        return {"start_layer": self.start_layer}


class _GradCAMAccumulator(TokenMapAccumulator):
    accepts_windows = True  # Swin layers arrive in window form (explain.windowed)

    def __init__(
        self,
        num_layers: int,
        cls_index: int | None,
        layer: int,
        layer_stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__(num_layers, cls_index, layer_stages)
        self.layer = layer
        self.probs: torch.Tensor | None = None
        self.grad: torch.Tensor | None = None

    def _keep(self, tensor: torch.Tensor | WindowedAttention) -> torch.Tensor:
        if isinstance(tensor, WindowedAttention):
            if self.cls_index is None:  # the mean query row per head, N×heads×T
                return window_mean_query(_float_windows(tensor))
            tensor = tensor.dense()
        tensor = at_least_float32(tensor)
        if self.cls_index is not None and self.stage_of(self.layer) == 0:
            return tensor[:, :, self.cls_index, :]  # the row is all we need
        return tensor  # the mean query needs the layout's patch rows

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if layer == self.layer:
            self.probs = self._keep(probs)

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        if layer == self.layer:
            self.grad = self._keep(grad)

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if self.probs is None or self.grad is None:
            raise RuntimeError("attn_gradcam needs gradients: call the recorder's backward()")
        stage = self.stage_of(self.layer)
        rows, grad_rows = self.probs, self.grad
        if rows.dim() == 4:
            rows = query_rows(rows, self.cls_index, layout, stage)
            grad_rows = query_rows(grad_rows, self.cls_index, layout, stage)
        patches = layout.stage_patch_slice(stage)
        weights = grad_rows[:, :, patches].mean(dim=-1, keepdim=True)
        cam = (weights * rows[:, :, patches]).mean(dim=1).clamp(min=0)
        return to_first_grid(cam, layout, stage)


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

    def accumulator(
        self,
        num_layers: int,
        cls_index: int | None,
        layer_stages: Sequence[int] | None = None,
    ) -> TokenMapAccumulator:
        return _GradCAMAccumulator(
            num_layers, cls_index, resolve_layer(self.layer, num_layers), layer_stages
        )

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
