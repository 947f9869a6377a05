"""Attention rollout (Abnar & Zuidema, 2020).

Each layer's heads are fused, the residual connection is modelled by adding the identity,
rows are renormalised, and the layers are multiplied:
``Â_l = rownorm((fuse_h A_l + I) / 2)``, ``R = Â_L ⋯ Â_s`` (``s`` the start layer); the map
is the explained row of ``R`` (class-token row, or the mean query of pooled models) over the
patch tokens (THEORY §3).

Swin: the product runs inside each stage, ``R_s = ∏ Â_l`` over the stage's layers, and
across a patch merging by the children rule, ``R = R_S M_{S-1} R_{S-1} ⋯ M_0 R_0``
(:mod:`~captum_fvit.explain.stages`); the map is the mean row of ``R``, on the first grid.

For a plain ViT the product is accumulated while the model runs (``R ← Â_l R``), so memory
holds one ``N×T×T`` matrix whatever the depth. For a hierarchical model each layer's
``N×T_s×T_s`` step is kept instead and the explained row is pushed through them at the end
(row × matrix, ``O(T_s²)`` per layer): a product would cost ``O(T_s³)`` per layer, which
dominates for Swin's first stage (``T_0 = 3136`` at 224 px), whose two layers cost at most
twice the memory of one product.
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
from .stages import combine_stage_factors
from .windowed import window_rollout_step

__all__ = ["AttentionRollout", "attention_rollout"]


def residual_attention(fused: torch.Tensor, residual: bool) -> torch.Tensor:
    """``rownorm((A + I)/2)`` (or ``rownorm(A)`` without the residual) for ``N×T×T`` maps."""
    if residual:
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = (fused + eye) / 2
    return fused / fused.sum(dim=-1, keepdim=True)


class _RolloutAccumulator(TokenMapAccumulator):
    accepts_windows = True  # Swin layers arrive in window form (explain.windowed)

    def __init__(
        self,
        num_layers: int,
        cls_index: int | None,
        start: int,
        head_fusion: str,
        residual: bool,
        layer_stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__(num_layers, cls_index, layer_stages)
        self.start = start
        self.head_fusion = head_fusion
        self.residual = residual
        self.hierarchical = len(set(self.layer_stages)) > 1
        #: stage → factors of R_s, left to right (one running product for a plain ViT)
        self.factors: dict[int, list[torch.Tensor]] = {}
        self.last_layer = -1

    def on_attention(self, layer: int, probs: torch.Tensor | WindowedAttention) -> None:
        if layer < self.start:
            return
        if layer <= self.last_layer:
            raise RuntimeError("rollout received layers out of order; record each layer once")
        self.last_layer = layer
        if isinstance(probs, WindowedAttention):
            if self.hierarchical:  # Swin: stay in window form, O(T·A) per layer
                windows = WindowedAttention(at_least_float32(probs.windows), probs.geometry)
                step = window_rollout_step(windows, self.head_fusion, self.residual)
                self.factors.setdefault(self.stage_of(layer), []).insert(0, step)
                return
            probs = probs.dense()
        step = residual_attention(
            fuse_heads(at_least_float32(probs), self.head_fusion), self.residual
        )
        factors = self.factors.setdefault(self.stage_of(layer), [])
        if self.hierarchical:
            factors.insert(0, step)  # later layers multiply from the left
        elif factors:
            factors[0] = step @ factors[0]
        else:
            factors.append(step)

    def result(self, layout: TokenLayout) -> torch.Tensor:
        if not self.factors:
            raise RuntimeError("no attention layer was recorded for rollout")
        return combine_stage_factors(self.factors, self.cls_index, layout)


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

    def accumulator(
        self,
        num_layers: int,
        cls_index: int | None,
        layer_stages: Sequence[int] | None = None,
    ) -> TokenMapAccumulator:
        start = resolve_layer(self.start_layer, num_layers, "start_layer")
        return _RolloutAccumulator(
            num_layers, cls_index, start, self.head_fusion, self.residual, layer_stages
        )

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
