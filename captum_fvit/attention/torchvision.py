"""Adapter for torchvision's ``VisionTransformer``.

Each encoder block calls ``nn.MultiheadAttention(x, x, x, need_weights=False)``. A forward
pre-hook rewrites that call's keyword arguments to ``need_weights=True,
average_attn_weights=False`` so the module returns its per-head probabilities; a forward
hook reads them. Nothing is left behind once the hooks are removed.

The weights ``nn.MultiheadAttention`` returns are a *view* of the probabilities it used, not
the tensor itself, so autograd cannot differentiate with respect to them. The gradient with
respect to the probabilities follows exactly from the module's linearity in them instead:
with output ``o = W_out·concat_h(A_h v_h) + b``, ``∂y/∂A_h = (g W_out)_h v_hᵀ`` where ``g`` is
the gradient at the module's output and ``v_h`` the head's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import AttentionAdapter, AttentionEmit

__all__ = ["TorchvisionViTAdapter"]


def _value_projection(mha: nn.MultiheadAttention, value: torch.Tensor) -> torch.Tensor:
    """The values ``v = value·W_vᵀ + b_v`` of a batch-first ``nn.MultiheadAttention``."""
    dim = mha.embed_dim
    if mha._qkv_same_embed_dim:
        weight = mha.in_proj_weight[2 * dim :]
    else:
        weight = mha.v_proj_weight
    bias = mha.in_proj_bias[2 * dim :] if mha.in_proj_bias is not None else None
    return F.linear(value, weight, bias)


def _probs_gradient(
    mha: nn.MultiheadAttention, value: torch.Tensor, output_grad: torch.Tensor
) -> torch.Tensor:
    """``∂y/∂A`` (``N×heads×T×T``) from the gradient at the attention module's output."""
    n, tokens, dim = output_grad.shape
    heads = mha.num_heads
    head_dim = dim // heads
    # Gradient at the concatenated head outputs, before the output projection.
    concat_grad = output_grad @ mha.out_proj.weight
    concat_grad = concat_grad.view(n, tokens, heads, head_dim).transpose(1, 2)
    values = _value_projection(mha, value.detach()).view(n, -1, heads, head_dim).transpose(1, 2)
    return concat_grad @ values.transpose(-2, -1)


class TorchvisionViTAdapter(AttentionAdapter):
    """``torchvision.models.VisionTransformer`` (vit_b_16, vit_l_32, ...)."""

    family = "torchvision VisionTransformer"

    def matches(self, model: nn.Module) -> bool:
        try:
            from torchvision.models import VisionTransformer
        except ImportError:  # pragma: no cover - torchvision is a dependency
            return False
        return isinstance(model, VisionTransformer)

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.encoder.layers.modules() if isinstance(m, nn.MultiheadAttention)]

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        return int(model.patch_size), int(model.patch_size)

    def num_prefix_tokens(self, model: nn.Module) -> int | None:
        return 1

    def attach(
        self,
        model: nn.Module,
        layers: Sequence[int],
        emit: AttentionEmit,
        stack: ExitStack,
    ) -> None:
        modules = self.attention_modules(model)
        for layer in layers:
            mha = modules[layer]
            if not mha.batch_first:
                raise TypeError(
                    "torchvision adapter expects batch_first nn.MultiheadAttention; register a "
                    "custom adapter for this model"
                )

            def ask_for_weights(_m: nn.Module, args: tuple, kwargs: dict):
                return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

            def read_weights(
                m: nn.Module, args: tuple, kwargs: dict, output, layer: int = layer
            ) -> None:
                attn_output, probs = output
                value = args[2] if len(args) > 2 else kwargs["value"]
                emit(layer, probs, attn_output, lambda g, m=m, v=value: _probs_gradient(m, v, g))

            pre = mha.register_forward_pre_hook(ask_for_weights, with_kwargs=True)
            stack.callback(pre.remove)
            post = mha.register_forward_hook(read_weights, with_kwargs=True)
            stack.callback(post.remove)
