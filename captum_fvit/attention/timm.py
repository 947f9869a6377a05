"""Adapter for timm Vision Transformers (ViT, DeiT incl. distilled, register tokens, BEiT, EVA).

timm's attention modules share one structure: a ``fused_attn`` flag choosing
``F.scaled_dot_product_attention`` (no probability tensor ever exists) and, when the flag is
off, an explicit ``softmax`` followed by ``self.attn_drop``; the output of ``attn_drop`` is the
probability tensor multiplied with the values. The adapter turns ``fused_attn`` off on the
hooked instances only (``timm.layers.set_fused_attn`` affects new models, not existing ones),
hooks ``attn_drop`` and restores both on exit.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

from torch import nn

from .adapter import AttentionAdapter, AttentionEmit

__all__ = ["TimmViTAdapter", "unfuse"]


def _is_timm_attention(module: nn.Module) -> bool:
    return (
        hasattr(module, "fused_attn")
        and isinstance(getattr(module, "attn_drop", None), nn.Module)
        and hasattr(module, "num_heads")
    )


def unfuse(module: nn.Module, stack: ExitStack) -> None:
    """Switch ``module.fused_attn`` off for the ``with`` block of ``stack`` (the undo is
    registered first, so a failure afterwards still restores the flag)."""
    stack.callback(setattr, module, "fused_attn", module.fused_attn)
    module.fused_attn = False


class TimmViTAdapter(AttentionAdapter):
    """timm models with ``blocks``, ``patch_embed`` and ``num_prefix_tokens``.

    Covers ``VisionTransformer`` (plain, register-token and pooled variants),
    ``VisionTransformerDistilled`` (DeiT with a distillation token), ``Beit`` and ``Eva``.
    The explained row follows the head: the class token's row for ``global_pool="token"``,
    the mean query over the patch tokens for ``global_pool="avg"`` (timm averages the tokens
    after the prefix).
    """

    family = "timm VisionTransformer/DeiT/BEiT/EVA"

    def matches(self, model: nn.Module) -> bool:
        return (
            isinstance(getattr(model, "blocks", None), nn.Module)
            and hasattr(getattr(model, "patch_embed", None), "patch_size")
            and isinstance(getattr(model, "num_prefix_tokens", None), int)
            and bool(self.attention_modules(model))
        )

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.blocks.modules() if _is_timm_attention(m)]

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        size = model.patch_embed.patch_size
        if isinstance(size, int):
            return size, size
        return int(size[0]), int(size[1])

    def num_prefix_tokens(self, model: nn.Module) -> int | None:
        return int(model.num_prefix_tokens)

    def cls_index(self, model: nn.Module) -> int | None:
        """0 when the head reads the class token; ``None`` (mean query) when it averages the
        patch tokens (``global_pool="avg"``, e.g. ``class_token=False`` models, BEiT, EVA)."""
        pool = getattr(model, "global_pool", "token")
        if pool == "avg" or getattr(model, "cls_token", None) is None:
            return None
        return 0

    def unsupported_reason(self, model: nn.Module) -> str | None:
        pool = getattr(model, "global_pool", "token")
        if getattr(model, "attn_pool", None) is not None or pool not in ("token", "avg"):
            return (
                f"this {type(model).__name__} pools its tokens with global_pool={pool!r}; the "
                "methods explain the class-token row (global_pool='token') or the mean query "
                "of average-pooled models (global_pool='avg')"
            )
        return None

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
            unfuse(module, stack)

            def hook(_drop: nn.Module, _args: tuple, probs, layer: int = layer) -> None:
                emit(layer, probs, probs, None)

            stack.callback(module.attn_drop.register_forward_hook(hook).remove)
