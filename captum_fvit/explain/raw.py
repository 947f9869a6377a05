"""Raw attention: the class token's attention to the patches in one layer.

``map = fuse_h A_l[cls, patches]`` with ``fuse`` the mean, max or min over heads (THEORY §3).
Only the class-token row of the chosen layer is kept, and only that layer is unfused.
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

__all__ = ["RawAttention", "raw_attention"]


class _RawAccumulator(TokenMapAccumulator):
    def __init__(self, num_layers: int, cls_index: int, layer: int, head_fusion: str) -> None:
        super().__init__(num_layers, cls_index)
        self.layer = layer
        self.head_fusion = head_fusion
        self.row: torch.Tensor | None = None

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if layer == self.layer:
            self.row = fuse_heads(at_least_float32(probs[:, :, self.cls_index, :]), self.head_fusion)

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if self.row is None:
            raise RuntimeError(f"layer {self.layer} was not recorded")
        return self.row[:, layout.patch_slice]


@register_method
class RawAttention(TokenMapMethod):
    """Raw attention of the class token in one layer.

    Parameters
    ----------
    layer : int, default -1
        Attention layer to read (negative counts from the last).
    head_fusion : {"mean", "max", "min"}, default "mean"
        How to fuse the heads.
    """

    name = "raw"

    def __init__(self, layer: int = -1, head_fusion: str = "mean") -> None:
        self.layer = int(layer)
        self.head_fusion = check_head_fusion(head_fusion)

    def layers(self, num_layers: int) -> list[int]:
        return [resolve_layer(self.layer, num_layers)]

    def accumulator(self, num_layers: int, cls_index: int) -> TokenMapAccumulator:
        layer = resolve_layer(self.layer, num_layers)
        return _RawAccumulator(num_layers, cls_index, layer, self.head_fusion)

    def options(self) -> dict:
        return {"layer": self.layer, "head_fusion": self.head_fusion}


def raw_attention(
    attentions: list[torch.Tensor],
    layout: TokenLayout,
    layer: int = -1,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Raw attention from a list of recorded maps (one ``N×heads×T×T`` per layer)."""
    return run_on_maps(RawAttention(layer, head_fusion), attentions, layout)

