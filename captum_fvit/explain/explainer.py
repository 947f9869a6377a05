"""``TokenMapExplainer``: run a model once and turn its attention into token maps.

This is the one place where a forward pass, the attention recorder, the target and the
explanation method meet. :class:`~captum_fvit.AttentionMap` calls it once per ``attribute``;
the smoothing engine calls it once per chunk of denoised samples (inside one
:meth:`TokenMapExplainer.recording` block, so hooks are installed once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attention import AttentionAdapter, AttentionRecorder, TokenLayout, find_adapter
from .base import TokenMapMethod, make_method
from .targets import TargetType, logits_of, resolve_target

__all__ = ["TokenMaps", "TokenMapExplainer"]


@dataclass
class TokenMaps:
    """Token maps of one batch.

    Attributes
    ----------
    maps : Tensor
        ``N×P`` relevance of each patch token (prefix tokens removed, row-major grid; the
        first stage's grid for hierarchical models).
    logits : Tensor
        ``N×K`` logits of the same forward pass (detached).
    target : Tensor or None
        ``N`` explained classes, or ``None`` when the method is not class specific and no
        target was given.
    layout : TokenLayout
        Prefix tokens and patch grid of this input size (and the stages of a Swin).
    """

    maps: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor | None
    layout: TokenLayout


class TokenMapExplainer:
    """Compute token maps of a ViT with an attention method.

    Parameters
    ----------
    model : nn.Module
        A supported Vision Transformer classifier (timm, torchvision, Hugging Face, or any
        family with a registered adapter). Put it in ``eval()`` mode: dropout in training
        mode makes attention random.
    method : str or TokenMapMethod, default "rollout"
        ``"raw"``, ``"rollout"``, ``"grad_rollout"`` or ``"attn_gradcam"``, or an instance.
    adapter : AttentionAdapter, optional
        Force an adapter instead of looking one up.
    **method_options
        Options of the named method (``head_fusion``, ``start_layer``, ``layer``, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | TokenMapMethod = "rollout",
        *,
        adapter: AttentionAdapter | None = None,
        **method_options: Any,
    ) -> None:
        self.model = model
        self.method = make_method(method, **method_options)
        self.adapter = adapter if adapter is not None else find_adapter(model)
        self.num_layers = len(self.adapter.attention_modules(model))
        reason = self.adapter.unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"cannot explain this model with {self.method.name!r}: {reason}")
        #: Class-token index, or ``None``: the explained row is the mean query (pooled models).
        self.cls_index = self.adapter.cls_index(model)
        #: Stage of each attention layer (all 0 except for hierarchical models such as Swin).
        self.layer_stages = tuple(self.adapter.layer_stages(model))
        self.layers = self.method.layers(self.num_layers)

    def token_grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """Grid ``(h, w)`` the token maps of an ``(H, W)`` image are given on (the first
        stage's for Swin), without running the model."""
        return tuple(self.adapter.token_grid(self.model, image_size))

    @contextmanager
    def recording(self) -> Iterator[Callable[..., TokenMaps]]:
        """Install the hooks once and yield ``run(inputs, target=None, forward_args=())``."""
        recorder = AttentionRecorder(
            self.model,
            layers=self.layers,
            gradients=self.method.needs_gradients,
            adapter=self.adapter,
        )
        with recorder:
            yield lambda inputs, target=None, forward_args=(): self._run(
                recorder, inputs, target, forward_args
            )

    def __call__(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        forward_args: tuple = (),
    ) -> TokenMaps:
        """Token maps of one batch (hooks installed and removed around the call)."""
        with self.recording() as run:
            return run(inputs, target, forward_args)

    def _run(
        self,
        recorder: AttentionRecorder,
        inputs: torch.Tensor,
        target: TargetType,
        forward_args: tuple,
    ) -> TokenMaps:
        stages = self.layer_stages if any(self.layer_stages) else None
        accumulator = self.method.accumulator(self.num_layers, self.cls_index, stages)
        recorder.listener = accumulator
        needs_grad = self.method.needs_gradients
        try:
            with torch.set_grad_enabled(needs_grad):
                x = inputs.detach().requires_grad_(True) if needs_grad else inputs
                logits = logits_of(self.model(x, *forward_args))
                explained = None
                if needs_grad or target is not None:
                    explained = resolve_target(target, logits)
                if needs_grad:
                    recorder.backward(logits.gather(1, explained[:, None]).sum())
            layout = recorder.layout(inputs.shape[-2:])
            maps = accumulator.result(layout)
        finally:
            recorder.reset()
        return TokenMaps(maps=maps, logits=logits.detach(), target=explained, layout=layout)
