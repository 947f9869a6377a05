"""Differentiable attention maps: the gradient source of the top-k explanation attack.

The explanation methods of :mod:`captum_fvit.explain` detach what they record (they are
built for inference), and DDS runs its denoiser under ``torch.no_grad``; neither can be
differentiated with respect to the input. :class:`AttentionSurrogate` computes raw attention
or attention rollout from the same stock model *keeping the autograd graph*: it records the
attention with :class:`~captum_fvit.attention.AttentionRecorder` (which unfuses the hooked
layers and restores them on exit) through a listener that keeps the probabilities as they
are, graph included, and applies the same formulas as the explain methods (THEORY §3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..attention import AttentionAdapter, AttentionRecorder, find_adapter
from ..explain.base import check_head_fusion, fuse_heads, resolve_layer
from ..explain.rollout import residual_attention
from ..explain.stages import combine_stage_products, query_rows, to_first_grid
from ..explain.targets import logits_of

__all__ = ["SURROGATE_METHODS", "AttentionSurrogate", "surrogate_like"]

#: Methods a surrogate can differentiate (gradient methods would need double backprop).
SURROGATE_METHODS = ("raw", "rollout")


class _GraphListener:
    """Keeps what the method needs, with the autograd graph (nothing is detached).

    Raw attention keeps its layer's fused probabilities; rollout keeps one running product
    per stage (one stage for plain ViTs; Swin's stages are joined afterwards by the
    2×2-children rule, :func:`captum_fvit.explain.stages.combine_stage_products`).
    """

    def __init__(
        self,
        method: str,
        start: int,
        layer: int,
        head_fusion: str,
        residual: bool,
        layer_stages: tuple[int, ...],
    ):
        self.method = method
        self.start = start
        self.layer = layer
        self.head_fusion = head_fusion
        self.residual = residual
        self.layer_stages = layer_stages
        self.value: torch.Tensor | None = None
        self.products: dict[int, torch.Tensor] = {}

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        if probs.dtype in (torch.float16, torch.bfloat16):
            probs = probs.float()
        if self.method == "raw":
            if layer == self.layer:
                self.value = probs  # heads fused after the explained row is taken
            return
        if layer < self.start:
            return
        step = residual_attention(fuse_heads(probs, self.head_fusion), self.residual)
        stage = self.layer_stages[layer]
        previous = self.products.get(stage)
        self.products[stage] = step if previous is None else step @ previous

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:  # pragma: no cover
        pass


class AttentionSurrogate:
    """Raw attention or rollout of a ViT as a differentiable function of its input.

    Parameters
    ----------
    model : nn.Module
        A supported ViT classifier (timm, torchvision, Hugging Face); left unchanged.
    method : {"raw", "rollout"}, default "rollout"
        The attention map to compute.
    start_layer : int, default 0
        First layer of the rollout product.
    layer : int, default -1
        Layer read by raw attention.
    head_fusion : {"mean", "max", "min"}, default "mean"
        How heads are fused.
    residual : bool, default True
        Rollout's ``(A + I)/2`` skip-connection model.
    adapter : AttentionAdapter, optional
        Force an adapter instead of looking one up.

    Notes
    -----
    Calling the surrogate runs the model once with the graph kept; ``surrogate(x)`` returns
    the ``N×P`` map (the same values as :class:`~captum_fvit.AttentionMap` with the same
    method and options), :meth:`map_and_logits` also returns the logits of that pass.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "rollout",
        *,
        start_layer: int = 0,
        layer: int = -1,
        head_fusion: str = "mean",
        residual: bool = True,
        adapter: AttentionAdapter | None = None,
    ) -> None:
        if method not in SURROGATE_METHODS:
            raise ValueError(
                f"a differentiable surrogate supports the methods {SURROGATE_METHODS}, got "
                f"{method!r}; gradient-based maps would need second-order gradients — use "
                "'rollout' as the surrogate of 'grad_rollout'"
            )
        self.model = model
        self.method = method
        self.adapter = adapter if adapter is not None else find_adapter(model)
        self.num_layers = len(self.adapter.attention_modules(model))
        self.start_layer = resolve_layer(int(start_layer), self.num_layers, "start_layer")
        self.layer = resolve_layer(int(layer), self.num_layers)
        self.head_fusion = check_head_fusion(head_fusion)
        self.residual = bool(residual)
        reason = self.adapter.unsupported_reason(model)
        if reason is not None:
            raise ValueError(reason)
        self.layer_stages = tuple(self.adapter.layer_stages(model))

    def __repr__(self) -> str:
        options = (
            f"layer={self.layer}"
            if self.method == "raw"
            else f"start_layer={self.start_layer}, residual={self.residual}"
        )
        return (
            f"AttentionSurrogate(method={self.method!r}, {options}, "
            f"head_fusion={self.head_fusion!r})"
        )

    def map_and_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``N×P`` map and ``N×K`` logits of one forward pass, both with their graph."""
        layers = (
            [self.layer] if self.method == "raw" else list(range(self.start_layer, self.num_layers))
        )
        listener = _GraphListener(
            self.method,
            self.start_layer,
            self.layer,
            self.head_fusion,
            self.residual,
            self.layer_stages,
        )
        with AttentionRecorder(self.model, listener, layers=layers, adapter=self.adapter) as rec:
            logits = logits_of(self.model(inputs))
            layout = rec.layout(inputs.shape[-2:])
        if listener.value is None and not listener.products:
            raise RuntimeError("no attention was recorded; is the model a supported ViT?")
        cls = layout.cls_index  # None: the explained row is the mean query (pooled, Swin)
        if self.method == "raw":
            stage = layout.stage_of(self.layer)
            rows = fuse_heads(query_rows(listener.value, cls, layout, stage), self.head_fusion)
            return to_first_grid(rows[:, layout.stage_patch_slice(stage)], layout, stage), logits
        return combine_stage_products(listener.products, cls, layout), logits

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ``N×P`` map of ``inputs`` (model normalisation), differentiable in ``inputs``."""
        return self.map_and_logits(inputs)[0]


def surrogate_like(map_fn: Callable[..., Any], model: nn.Module) -> AttentionSurrogate:
    """A surrogate mirroring ``map_fn`` when it is a bound method of an explainer.

    If ``map_fn`` is e.g. ``AttentionMap(model, "raw", layer=-2).token_map`` or
    ``DDSAttention(model, den, "rollout", start_layer=1).token_map``, the surrogate uses the
    same method and options (raw or rollout; ``grad_rollout`` and ``attn_gradcam`` map to
    rollout with their head fusion and start layer where they have them). Anything else —
    a lambda, a plain function — gets plain rollout.
    """
    owner = getattr(map_fn, "__self__", None)
    method = getattr(owner, "method", None)
    name = getattr(method, "name", None)
    options = method.options() if hasattr(method, "options") else {}
    if name == "raw":
        return AttentionSurrogate(
            model,
            "raw",
            layer=options.get("layer", -1),
            head_fusion=options.get("head_fusion", "mean"),
        )
    if name == "rollout":
        return AttentionSurrogate(
            model,
            "rollout",
            start_layer=options.get("start_layer", 0),
            head_fusion=options.get("head_fusion", "mean"),
            residual=options.get("residual", True),
        )
    if name == "grad_rollout":
        return AttentionSurrogate(model, "rollout", start_layer=options.get("start_layer", 0))
    return AttentionSurrogate(model, "rollout")
