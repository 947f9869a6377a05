"""Adapter for torchvision's Swin Transformers (``swin_t``, ``swin_s``, ``swin_b``, ``swin_v2_*``).

torchvision computes window attention in the module-level function
``shifted_window_attention``, which ``ShiftedWindowAttention.forward`` calls; the
probabilities are a local variable of that function (``F.softmax`` followed by
``F.dropout``), so no module hook can see them. The adapter does not edit torchvision:
for each recorded layer it puts a wrapper in the attention module's instance ``forward``
(undone on exit — the instance attribute is deleted, or a previous one restored) that runs
the original forward inside a :class:`torch.overrides.TorchFunctionMode`. The mode passes
every call through unchanged and keeps a reference to the output of ``F.softmax`` and of
the ``F.dropout`` applied to it — the very tensor multiplied with the values. The mode is
thread-local and only active during that one call, so other models and threads are not
affected. torchvision pads the grid before the cyclic shift and drops the shift along a
side the window covers (``WindowGeometry(pad_first=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .adapter import AttentionEmit
from .swin_base import SwinAdapterBase, emit_windows
from .windows import WindowGeometry

__all__ = ["TorchvisionSwinAdapter"]


class _ProbabilityCapture(TorchFunctionMode):
    """Passes every torch call through; remembers the attention softmax and its dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.softmax: torch.Tensor | None = None
        self.probs: torch.Tensor | None = None
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.softmax:
            self.softmax, self.probs = out, None
            self.calls += 1
        elif func is F.dropout and self.softmax is not None and args and args[0] is self.softmax:
            self.probs = out
        return out


def _geometry(module: nn.Module, x: torch.Tensor) -> WindowGeometry:
    """The windows of ``shifted_window_attention`` for input ``x`` (``N×H×W×C``)."""
    height, width = int(x.shape[1]), int(x.shape[2])
    window = (int(module.window_size[0]), int(module.window_size[1]))
    shift = [int(module.shift_size[0]), int(module.shift_size[1])]
    padded = (-(-height // window[0]) * window[0], -(-width // window[1]) * window[1])
    # torchvision: no shift along a side the window covers entirely.
    for axis in range(2):
        if window[axis] >= padded[axis]:
            shift[axis] = 0
    return WindowGeometry(height, width, window, (shift[0], shift[1]), True)


class TorchvisionSwinAdapter(SwinAdapterBase):
    """``torchvision.models.SwinTransformer`` (v1 and v2)."""

    family = "torchvision SwinTransformer"

    def matches(self, model: nn.Module) -> bool:
        try:
            from torchvision.models import SwinTransformer
        except ImportError:  # pragma: no cover - torchvision is a dependency
            return False
        return isinstance(model, SwinTransformer)

    def blocks_by_stage(self, model: nn.Module) -> list[list[nn.Module]]:
        from torchvision.models.swin_transformer import ShiftedWindowAttention

        stages = []
        for child in model.features:
            blocks = [
                block
                for block in child.children()
                if isinstance(getattr(block, "attn", None), ShiftedWindowAttention)
            ]
            if blocks:
                stages.append(blocks)
        return stages

    def attention_of(self, block: nn.Module) -> nn.Module:
        return block.attn

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        conv = next(m for m in model.features[0].modules() if isinstance(m, nn.Conv2d))
        return int(conv.stride[0]), int(conv.stride[1])

    def attach(
        self,
        model: nn.Module,
        layers: Sequence[int],
        emit: AttentionEmit,
        stack: ExitStack,
    ) -> None:
        modules = self.attention_modules(model)
        for layer in layers:
            module = modules[layer]
            had_own = "forward" in module.__dict__
            previous = module.__dict__.get("forward")
            original = module.forward

            def restore(module=module, had_own=had_own, previous=previous) -> None:
                if had_own:
                    module.forward = previous
                else:
                    module.__dict__.pop("forward", None)

            def forward(x, *args, layer=layer, module=module, original=original, **kwargs):
                capture = _ProbabilityCapture()
                with capture:
                    out = original(x, *args, **kwargs)
                if capture.calls != 1:
                    raise RuntimeError(
                        f"torchvision's window attention of layer {layer} called softmax "
                        f"{capture.calls} times (expected once); this torchvision version needs "
                        "an updated adapter"
                    )
                probs = capture.probs if capture.probs is not None else capture.softmax
                emit_windows(emit, layer, probs, _geometry(module, x))
                return out

            # Register the undo first so that a failure below still restores the module.
            stack.callback(restore)
            module.forward = forward
