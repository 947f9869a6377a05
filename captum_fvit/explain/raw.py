"""Raw attention: the explained row of one layer's attention over the patches.

``map = fuse_h q A_l`` with ``q`` the explained row — the class token's row, or for pooled
models the mean query ``(1/P) Σ_{i ∈ patches} A_l[i, :]`` (the attention each token
receives on average) — and ``fuse`` the mean, max or min over heads (THEORY §3; the heads
are fused after taking the row). For a Swin layer in stage ``s`` the map lives on the
stage-``s`` grid and comes down to the first grid by the children rule
(:mod:`~captum_fvit.explain.stages`). Only the chosen layer is unfused; a class-token model
keeps only that row.
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
    check_head_fusion,
    fuse_heads,
    register_method,
    resolve_layer,
    run_on_maps,
)
from .stages import query_rows, to_first_grid
from .windowed import window_mean_query

__all__ = ["RawAttention", "raw_attention"]


class _RawAccumulator(TokenMapAccumulator):
    accepts_windows = True  # Swin layers arrive in window form (explain.windowed)

    def __init__(
        self,
        num_layers: int,
        cls_index: int | None,
        layer: int,
        head_fusion: str,
        layer_stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__(num_layers, cls_index, layer_stages)
        self.layer = layer
        self.head_fusion = head_fusion
        self.kept: torch.Tensor | None = None

    def on_attention(self, layer: int, probs: torch.Tensor | WindowedAttention) -> None:
        if layer != self.layer:
            return
        if isinstance(probs, WindowedAttention):
            if self.cls_index is None:  # the mean query row per head, N×heads×T
                windows = WindowedAttention(at_least_float32(probs.windows), probs.geometry)
                self.kept = window_mean_query(windows)
                return
            probs = probs.dense()
        probs = at_least_float32(probs)
        if self.cls_index is not None and self.stage_of(layer) == 0:
            self.kept = probs[:, :, self.cls_index, :]  # the row is all we need
        else:
            self.kept = probs  # the mean query needs the layout's patch rows

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if self.kept is None:
            raise RuntimeError(f"layer {self.layer} was not recorded")
        stage = self.stage_of(self.layer)
        rows = self.kept if self.kept.dim() == 3 else query_rows(
            self.kept, self.cls_index, layout, stage
        )
        fused = fuse_heads(rows, self.head_fusion)
        return to_first_grid(fused[:, layout.stage_patch_slice(stage)], layout, stage)


@register_method
class RawAttention(TokenMapMethod):
    """Raw attention of the explained row (class token or mean query) in one layer.

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

    def accumulator(
        self,
        num_layers: int,
        cls_index: int | None,
        layer_stages: Sequence[int] | None = None,
    ) -> TokenMapAccumulator:
        layer = resolve_layer(self.layer, num_layers)
        return _RawAccumulator(num_layers, cls_index, layer, self.head_fusion, layer_stages)

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

