"""Attention rollout (Abnar & Zuidema, 2020).

Each layer's heads are fused, the residual connection is modelled by adding the identity,
rows are renormalised, and the layers are multiplied:
``Â_l = rownorm((fuse_h A_l + I) / 2)``, ``R = Â_L ⋯ Â_s`` (``s`` the start layer); the map is
the class-token row of ``R`` over the patch tokens (THEORY §3).

The product is accumulated while the model runs (``R ← Â_l R``), so memory holds one
``N×T×T`` matrix whatever the depth.
"""

from __future__ import annotations

import torch

from ..attention.layout import TokenLayout
from .base import (
    TokenMapAccumulator,
    TokenMapMethod,
    at_least_float32,
    check_head_fusion,
    fuse_heads,
    register_method,
    resolve_layer,
    run_on_maps,
)

__all__ = ["AttentionRollout", "attention_rollout"]


def residual_attention(fused: torch.Tensor, residual: bool) -> torch.Tensor:
    """``rownorm((A + I)/2)`` (or ``rownorm(A)`` without the residual) for ``N×T×T`` maps."""
    if residual:
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = (fused + eye) / 2
    return fused / fused.sum(dim=-1, keepdim=True)


class _RolloutAccumulator(TokenMapAccumulator):
    def __init__(
        self, num_layers: int, cls_index: int, start: int, head_fusion: str, residual: bool
    ) -> None:
        super().__init__(num_layers, cls_index)
        self.start = start
        self.head_fusion = head_fusion
        self.residual = residual
        self.product: torch.Tensor | None = None
        self.last_layer = -1

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if layer < self.start:
            return
        if layer <= self.last_layer:
            raise RuntimeError("rollout received layers out of order; record each layer once")
        self.last_layer = layer
        step = residual_attention(
            fuse_heads(at_least_float32(probs), self.head_fusion), self.residual
        )
        self.product = step if self.product is None else step @ self.product

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if self.product is None:
            raise RuntimeError("no attention layer was recorded for rollout")
        return self.product[:, self.cls_index, layout.patch_slice]


@register_method
class AttentionRollout(TokenMapMethod):
    """Attention rollout.

    Parameters
    ----------
    start_layer : int, default 0
        First layer of the product (negative counts from the last).
    head_fusion : {"mean", "max", "min"}, default "mean"
        How to fuse the heads of each layer.
    residual : bool, default True
        Model the skip connection as ``(A + I)/2``.
    """

    name = "rollout"

    def __init__(self, start_layer: int = 0, head_fusion: str = "mean", residual: bool = True):
        self.start_layer = int(start_layer)
        self.head_fusion = check_head_fusion(head_fusion)
        self.residual = bool(residual)

    def layers(self, num_layers: int) -> list[int]:
        start = resolve_layer(self.start_layer, num_layers, "start_layer")
        return list(range(start, num_layers))

    def accumulator(self, num_layers: int, cls_index: int) -> TokenMapAccumulator:
        start = resolve_layer(self.start_layer, num_layers, "start_layer")
        return _RolloutAccumulator(num_layers, cls_index, start, self.head_fusion, self.residual)

    def options(self) -> dict:
        return {
            "start_layer": self.start_layer,
            "head_fusion": self.head_fusion,
            "residual": self.residual,
        }


def attention_rollout(
    attentions: list[torch.Tensor],
    layout: TokenLayout,
    start_layer: int = 0,
    head_fusion: str = "mean",
    residual: bool = True,
) -> torch.Tensor:
    """Rollout from a list of recorded maps (one ``N×heads×T×T`` per layer)."""
    return run_on_maps(AttentionRollout(start_layer, head_fusion, residual), attentions, layout)
