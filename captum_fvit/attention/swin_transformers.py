"""Adapter for Hugging Face Swin (``SwinForImageClassification``, ``SwinModel``).

As for HF ViTs, the adapter switches ``config._attn_implementation`` to ``"eager"`` for the
duration (restoring every sub-configuration's setting on exit); ``SwinAttention`` then
returns ``(output, probs)`` where ``probs`` are the window probabilities after the softmax
over ``q·kᵀ·scale + relative-position bias + shift mask`` and after dropout — the tensor
multiplied with the values. A forward pre-hook on each ``SwinLayer`` reads the grid
(``input_dimensions``); window and shift sizes are read from the layer when its attention
runs, after it clipped them to the grid. Hugging Face pads the grid before the cyclic
shift (``WindowGeometry(pad_first=True)``), and its patch embedding pads the image to a
multiple of the patch size, so the first grid is ``(⌈H/ph⌉, ⌈W/pw⌉)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

from torch import nn

from .adapter import AttentionEmit
from .swin_base import SwinAdapterBase, emit_windows
from .transformers import _configs
from .windows import WindowGeometry

__all__ = ["TransformersSwinAdapter"]


def _swin_model(model: nn.Module) -> nn.Module | None:
    try:
        from transformers.models.swin.modeling_swin import SwinModel
    except ImportError:  # pragma: no cover - transformers is optional
        return None
    if isinstance(model, SwinModel):
        return model
    inner = getattr(model, "swin", None)
    return inner if isinstance(inner, SwinModel) else None


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


class TransformersSwinAdapter(SwinAdapterBase):
    """Hugging Face ``SwinForImageClassification`` / ``SwinModel`` (transformers ≥ 5)."""

    family = "Hugging Face transformers Swin"

    def matches(self, model: nn.Module) -> bool:
        return _swin_model(model) is not None

    def blocks_by_stage(self, model: nn.Module) -> list[list[nn.Module]]:
        return [list(stage.blocks) for stage in _swin_model(model).encoder.layers]

    def attention_of(self, block: nn.Module) -> nn.Module:
        return block.attention

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        return _pair(model.config.patch_size)

    def token_grid(self, model: nn.Module, image_size: Sequence[int]) -> tuple[int, int]:
        ph, pw = self.patch_size(model)
        return -(-int(image_size[-2]) // ph), -(-int(image_size[-1]) // pw)

    def attach(
        self,
        model: nn.Module,
        layers: Sequence[int],
        emit: AttentionEmit,
        stack: ExitStack,
    ) -> None:
        for config in _configs(model.config):
            previous = config.__dict__.get("_attn_implementation_internal")
            stack.callback(setattr, config, "_attn_implementation_internal", previous)
        model.config._attn_implementation = "eager"

        blocks = self.blocks(model)
        for layer in layers:
            block = blocks[layer]
            grid: dict[str, tuple[int, int]] = {}

            def read_grid(_block: nn.Module, args: tuple, kwargs: dict, grid=grid) -> None:
                dims = args[1] if len(args) > 1 else kwargs["input_dimensions"]
                grid["hw"] = (int(dims[0]), int(dims[1]))

            def read_probs(
                _attn: nn.Module, _args: tuple, output, layer=layer, block=block, grid=grid
            ) -> None:
                probs = output[1]
                if probs is None or "hw" not in grid:
                    raise RuntimeError(
                        f"the Swin attention of layer {layer} returned no probabilities or ran "
                        "outside its SwinLayer; run the whole model inside the recorder"
                    )
                height, width = grid.pop("hw")
                window, shift = int(block.window_size), int(block.shift_size)
                geometry = WindowGeometry(height, width, (window, window), (shift, shift), True)
                emit_windows(emit, layer, probs, geometry)

            pre = block.register_forward_pre_hook(read_grid, with_kwargs=True)
            stack.callback(pre.remove)
            stack.callback(block.attention.register_forward_hook(read_probs).remove)
