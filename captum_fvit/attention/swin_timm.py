"""Adapter for timm Swin Transformers (``swin_tiny_patch4_window7_224`` and kin).

timm's ``WindowAttention`` has the same ``fused_attn`` switch as its ViT attention: with the
flag off it computes ``softmax(q·kᵀ·scale + relative-position bias + shift mask)`` and passes
it through ``attn_drop`` before multiplying with the values. The adapter turns the flag off
on the recorded instances (registering the undo first), reads each block's grid from a
forward pre-hook on the block (``x`` is ``N×H×W×C``), and hooks ``attn_drop`` to receive the
window probabilities, which it reports as the stage's full matrix. timm rolls the grid and
then pads it (``WindowGeometry(pad_first=False)``); window and shift sizes are read from the
block at run time, after timm has clipped them to the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

from torch import nn

from .adapter import AttentionEmit
from .swin_base import SwinAdapterBase, emit_windows
from .timm import unfuse
from .windows import WindowGeometry

__all__ = ["TimmSwinAdapter"]


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


class TimmSwinAdapter(SwinAdapterBase):
    """timm ``SwinTransformer`` (``swin_*`` models)."""

    family = "timm SwinTransformer"

    def matches(self, model: nn.Module) -> bool:
        try:
            from timm.models.swin_transformer import SwinTransformer
        except ImportError:  # pragma: no cover - timm is a dependency
            return False
        return isinstance(model, SwinTransformer)

    def blocks_by_stage(self, model: nn.Module) -> list[list[nn.Module]]:
        return [list(stage.blocks) for stage in model.layers]

    def attention_of(self, block: nn.Module) -> nn.Module:
        return block.attn

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        return _pair(model.patch_embed.patch_size)

    def token_grid(self, model: nn.Module, image_size: Sequence[int]) -> tuple[int, int]:
        ph, pw = self.patch_size(model)
        height, width = int(image_size[-2]), int(image_size[-1])
        if getattr(model.patch_embed, "dynamic_img_pad", False):
            return -(-height // ph), -(-width // pw)
        return height // ph, width // pw

    def unsupported_reason(self, model: nn.Module) -> str | None:
        pool = getattr(model, "global_pool", "avg")
        if pool != "avg":
            return (
                f"this SwinTransformer pools its tokens with global_pool={pool!r}; the methods "
                "explain the mean query of average-pooled models (global_pool='avg')"
            )
        return None

    def attach(
        self,
        model: nn.Module,
        layers: Sequence[int],
        emit: AttentionEmit,
        stack: ExitStack,
    ) -> None:
        blocks = self.blocks(model)
        for layer in layers:
            block = blocks[layer]
            attn = block.attn
            grid: dict[str, tuple[int, int]] = {}

            def read_grid(_block: nn.Module, args: tuple, grid=grid) -> None:
                grid["hw"] = (int(args[0].shape[1]), int(args[0].shape[2]))

            def read_probs(
                _drop: nn.Module, _args: tuple, probs, layer=layer, block=block, grid=grid
            ) -> None:
                if "hw" not in grid:
                    raise RuntimeError(
                        f"the window attention of layer {layer} ran outside its Swin block; "
                        "run the whole model inside the recorder"
                    )
                height, width = grid.pop("hw")
                geometry = WindowGeometry(
                    height, width, _pair(block.window_size), _pair(block.shift_size), False
                )
                emit_windows(emit, layer, probs, geometry)

            unfuse(attn, stack)
            stack.callback(block.register_forward_pre_hook(read_grid).remove)
            stack.callback(attn.attn_drop.register_forward_hook(read_probs).remove)
