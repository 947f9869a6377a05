"""What the Swin adapters (timm, torchvision, Hugging Face) share: stages and layout.

A Swin model has no class token; its head averages the tokens of the last stage, so the
explained row is the mean query. Stage ``s + 1`` starts with a patch merging that turns each
2×2 block of stage-``s`` tokens (odd sides zero-padded) into one token, so the grids are
``g_0 = token_grid(image)`` and ``g_{s+1} = (⌈h_s/2⌉, ⌈w_s/2⌉)``. Each block's window
attention is reported as the stage's full ``N×heads×T_s×T_s`` matrix
(:func:`~captum_fvit.attention.windows.assemble_windows`; listeners that accept it get the
compact :class:`~captum_fvit.attention.WindowedAttention` instead), with the window
probabilities as the autograd anchor.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .adapter import AttentionAdapter, AttentionEmit
from .layout import TokenLayout, merged_grid
from .windows import WindowedAttention, WindowGeometry

__all__ = ["SwinAdapterBase", "emit_windows"]


def emit_windows(
    emit: AttentionEmit, layer: int, windows: torch.Tensor, geometry: WindowGeometry
) -> None:
    """Report one block's window probabilities as the stage's full matrix.

    They are handed over as a :class:`~captum_fvit.attention.WindowedAttention`; the
    recorder gives listeners the full ``N×heads×T×T`` matrix
    (:func:`~captum_fvit.attention.assemble_windows`) unless they accept the window form.
    ``windows`` is the tensor the block multiplied with its values, so it is the autograd
    anchor; its gradient is delivered in the same form.
    """
    emit(
        layer,
        WindowedAttention(windows, geometry),
        windows,
        lambda grad: WindowedAttention(grad, geometry),
    )


class SwinAdapterBase(AttentionAdapter):
    """Stage structure and layout of Swin-style hierarchical models.

    Subclasses implement :meth:`matches`, :meth:`blocks_by_stage` (each stage's blocks, in
    forward order), :meth:`attention_of` (the attention module of a block),
    :meth:`patch_size` and :meth:`attach`.
    """

    @abstractmethod
    def blocks_by_stage(self, model: nn.Module) -> list[list[nn.Module]]:
        """The Swin blocks of every stage, in forward order."""

    @abstractmethod
    def attention_of(self, block: nn.Module) -> nn.Module:
        """The window-attention module of ``block``."""

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """All Swin blocks in forward order (one attention layer each)."""
        return [block for stage in self.blocks_by_stage(model) for block in stage]

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [self.attention_of(block) for block in self.blocks(model)]

    def layer_stages(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(
            stage for stage, blocks in enumerate(self.blocks_by_stage(model)) for _ in blocks
        )

    def num_prefix_tokens(self, model: nn.Module) -> int | None:
        return 0

    def cls_index(self, model: nn.Module) -> int | None:
        return None

    def stage_grids(
        self, model: nn.Module, image_size: Sequence[int]
    ) -> tuple[tuple[int, int], ...]:
        """The token grid of every stage for an ``(H, W)`` image."""
        grids = [tuple(self.token_grid(model, image_size))]
        for _ in range(len(self.blocks_by_stage(model)) - 1):
            grids.append(merged_grid(grids[-1]))
        return tuple(grids)

    def layout(
        self,
        model: nn.Module,
        image_size: Sequence[int],
        tokens_by_layer: Mapping[int, int],
    ) -> TokenLayout:
        if not tokens_by_layer:
            raise RuntimeError("no attention was recorded yet: run the model first")
        grids = self.stage_grids(model, image_size)
        stages = self.layer_stages(model)
        for layer, tokens in tokens_by_layer.items():
            h, w = grids[stages[layer]]
            if tokens != h * w:
                raise ValueError(
                    f"cannot match {tokens} tokens of layer {layer} (stage {stages[layer]}) to "
                    f"the {h}x{w} grid expected for a {int(image_size[-2])}x"
                    f"{int(image_size[-1])} image with {self.patch_size(model)} patches; if the "
                    "model resizes or crops internally, register a custom adapter that reports "
                    "its layout"
                )
        return TokenLayout(
            num_prefix_tokens=0,
            grid=grids[0],
            patch_size=self.patch_size(model),
            cls_index=None,
            stages=grids,
            layer_stages=stages,
        )
