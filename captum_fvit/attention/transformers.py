"""Adapter for Hugging Face transformers vision models (ViT, DeiT; transformers ≥ 5).

transformers ≥ 5 runs attention through SDPA by default, which returns no weights. The
adapter switches ``model.config._attn_implementation`` to ``"eager"`` for the duration (the
attention modules read the flag at every call) and restores it. The attention classes are
found the way transformers itself records attentions, from the model's
``_can_record_outputs["attentions"]`` entry, so module renames between versions do not
matter. Their forward returns ``(output, probs)``; ``probs`` is the very tensor multiplied
with the values in eval mode, so autograd differentiates with respect to it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

from torch import nn

from .adapter import AttentionAdapter, AttentionEmit

__all__ = ["TransformersViTAdapter"]


#: Hierarchical models whose ``_can_record_outputs["attentions"]`` names whole stages, not
#: attention modules; :class:`~captum_fvit.attention.swin_transformers.TransformersSwinAdapter`
#: handles ``"swin"``.
_WINDOWED_MODEL_TYPES = frozenset({"swin", "swinv2", "donut-swin", "maskformer-swin"})


def _attention_classes(model: nn.Module) -> tuple[type, ...]:
    record = getattr(model, "_can_record_outputs", None) or {}
    entry = record.get("attentions")
    if entry is None:
        return ()
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    classes = []
    for item in entries:
        cls = item if isinstance(item, type) else getattr(item, "target_class", None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def _configs(config) -> list:
    """``config`` and its sub-configs, recursively (the eager switch reaches all of them)."""
    found = [config]
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if sub is not None:
            found.extend(_configs(sub))
    return found


class TransformersViTAdapter(AttentionAdapter):
    """HF ``ViTModel``/``ViTForImageClassification``, DeiT (with teacher) and kin."""

    family = "Hugging Face transformers ViT/DeiT"

    def matches(self, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return (
            config is not None
            and getattr(config, "model_type", None) not in _WINDOWED_MODEL_TYPES
            and hasattr(config, "patch_size")
            and hasattr(type(config), "_attn_implementation")
            and bool(self.attention_modules(model))
        )

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        classes = _attention_classes(model)
        if not classes:
            return []
        return [m for m in model.modules() if isinstance(m, classes)]

    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        size = model.config.patch_size
        if isinstance(size, int):
            return size, size
        return int(size[0]), int(size[1])

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

        modules = self.attention_modules(model)
        for layer in layers:

            def hook(_m: nn.Module, _args: tuple, output, layer: int = layer) -> None:
                probs = output[1]
                emit(layer, probs, probs, None)

            stack.callback(modules[layer].register_forward_hook(hook).remove)
