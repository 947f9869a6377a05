"""Differentiable token maps: the gradient source of the transfer top-k attack.

:class:`~captum_fvit.AttentionMap` and DDS return detached maps (they are built for
inference). :class:`AttentionSurrogate` runs the *same* explanation method of
:mod:`captum_fvit.explain` — any of them: raw, rollout, grad_rollout, attn_gradcam, or one
added with :func:`~captum_fvit.explain.register_method` — inside
:func:`~captum_fvit.explain.base.keep_graph`, so the methods do not detach what they record
and the map is a differentiable function of the input. Gradient methods get ``∂y_t/∂A``
with ``create_graph=True`` (second-order gradients), so their maps are differentiable too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...attention import AttentionAdapter, AttentionRecorder, find_adapter
from ...attention.windows import WindowedAttention
from ...explain.base import TokenMapAccumulator, TokenMapMethod, keep_graph, make_method
from ...explain.targets import TargetType, logits_of, resolve_target

__all__ = ["AttentionSurrogate", "explained_method", "surrogate_like"]


def _anchor(probs: torch.Tensor | WindowedAttention) -> torch.Tensor:
    return probs.windows if isinstance(probs, WindowedAttention) else probs


class _GraphListener:
    """Feeds the method's accumulator and keeps what it recorded, graph included, so that
    :meth:`backward` can hand gradient methods ``∂score/∂A`` with its own graph."""

    def __init__(self, accumulator: TokenMapAccumulator) -> None:
        self.accumulator = accumulator
        self.accepts_windows = getattr(accumulator, "accepts_windows", False)
        self.recorded: dict[int, torch.Tensor | WindowedAttention] = {}

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        self.recorded[layer] = probs
        self.accumulator.on_attention(layer, probs)

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:  # pragma: no cover
        self.accumulator.on_gradient(layer, grad)

    def backward(self, score: torch.Tensor, model: nn.Module) -> None:
        layers = sorted(self.recorded)
        try:
            grads = torch.autograd.grad(
                score, [_anchor(self.recorded[i]) for i in layers], create_graph=True
            )
        except RuntimeError as err:
            raise RuntimeError(
                f"cannot differentiate the logit with respect to the recorded attention of "
                f"this {type(model).__name__} ({err}); a gradient-method surrogate needs an "
                "adapter whose recorded probabilities lie on the forward path (timm, Hugging "
                "Face, timm Swin); use a 'raw' or 'rollout' surrogate for this model"
            ) from None
        for layer, grad in reversed(list(zip(layers, grads, strict=True))):
            probs = self.recorded[layer]
            if isinstance(probs, WindowedAttention):
                grad = WindowedAttention(grad, probs.geometry)
            self.accumulator.on_gradient(layer, grad)


class AttentionSurrogate:
    """An explanation method of :mod:`captum_fvit.explain` as a differentiable function.

    Parameters
    ----------
    model : nn.Module
        A supported ViT classifier (timm, torchvision, Hugging Face, Swin); left unchanged
        (gradients are taken with ``torch.autograd.grad``, never into ``.grad``).
    method : str or TokenMapMethod, default "rollout"
        Any method of :data:`captum_fvit.explain.METHODS` by name, or a configured instance.
    adapter : AttentionAdapter, optional
        Force an adapter instead of looking one up.
    **options
        The method's options (``start_layer``, ``layer``, ``head_fusion``, ``residual``, ...).

    Notes
    -----
    ``surrogate(x)`` returns the ``N×P`` map — the values of :class:`~captum_fvit.AttentionMap`
    with the same method and options — with its graph; :meth:`map_and_logits` also returns
    the logits of that pass. Class-specific methods explain ``target`` (default: each
    image's predicted class, as AttentionMap).
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | TokenMapMethod = "rollout",
        *,
        adapter: AttentionAdapter | None = None,
        **options: Any,
    ) -> None:
        self.model = model
        self.explain_method = make_method(method, **options)
        #: Name of the method (``"raw"``, ``"rollout"``, ...).
        self.method = self.explain_method.name
        self.adapter = adapter if adapter is not None else find_adapter(model)
        reason = self.adapter.unsupported_reason(model)
        if reason is not None:
            raise ValueError(reason)
        self.num_layers = len(self.adapter.attention_modules(model))
        self.cls_index = self.adapter.cls_index(model)
        stages = tuple(self.adapter.layer_stages(model))
        self.layer_stages = stages if any(stages) else None
        self.layers = self.explain_method.layers(self.num_layers)  # validates layer indices

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.explain_method.options().items())
        return f"AttentionSurrogate(method={self.method!r}, {options})"

    def map_and_logits(
        self, inputs: torch.Tensor, target: TargetType = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``N×P`` map and ``N×K`` logits of one forward pass, both with their graph."""
        method = self.explain_method
        accumulator = method.accumulator(self.num_layers, self.cls_index, self.layer_stages)
        listener = _GraphListener(accumulator)
        if method.needs_gradients and not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)  # the logit needs a graph to A
        recorder = AttentionRecorder(self.model, listener, layers=self.layers, adapter=self.adapter)
        with keep_graph(), torch.enable_grad(), recorder:
            logits = logits_of(self.model(inputs))
            if not listener.recorded:
                raise RuntimeError("no attention was recorded; is the model a supported ViT?")
            if method.needs_gradients:
                explained = resolve_target(target, logits)
                listener.backward(logits.gather(1, explained[:, None]).sum(), self.model)
            maps = accumulator.result(recorder.layout(inputs.shape[-2:]))
        return maps, logits

    def __call__(self, inputs: torch.Tensor, target: TargetType = None) -> torch.Tensor:
        """The ``N×P`` map of ``inputs`` (model normalisation), differentiable in ``inputs``."""
        return self.map_and_logits(inputs, target)[0]


def explained_method(map_fn: Callable[..., Any] | None) -> TokenMapMethod | None:
    """The configured method behind ``map_fn`` when it is a bound method of an explainer
    (``AttentionMap(...).token_map``, ``DDSAttention(...).token_map``), else ``None``."""
    method = getattr(getattr(map_fn, "__self__", None), "method", None)
    return method if isinstance(method, TokenMapMethod) else None


def surrogate_like(map_fn: Callable[..., Any] | None, model: nn.Module) -> AttentionSurrogate:
    """A surrogate with ``map_fn``'s method and options when ``map_fn`` is a bound
    ``token_map`` of an explainer (e.g. ``AttentionMap(model, "grad_rollout").token_map`` or
    ``DDSAttention(model, den, "rollout", start_layer=1).token_map``); plain rollout for
    anything else (a lambda, a plain function, ``None``)."""
    method = explained_method(map_fn)
    return AttentionSurrogate(model, method if method is not None else "rollout")
