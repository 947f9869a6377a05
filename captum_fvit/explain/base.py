"""What an attention explanation method is, and the registry of methods by name.

A method turns the attention a ViT computes during one forward pass (and, for gradient
methods, its gradient) into a *token map*: one relevance value per patch token, ``N×P`` for
a batch of ``N`` images with ``P = h·w`` patches. Methods are streaming: for each forward pass
the method creates an *accumulator* that receives each recorded layer as it is computed and
keeps only what it needs (a class-token row, a running product per stage), never every
layer's ``heads×T×T`` maps unless the method truly needs them.

The explained row is the class token's, or the mean query of pooled models; hierarchical
models (Swin) come down to the first stage's grid by the children rule
(:mod:`captum_fvit.explain.stages`).
"""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch

from ..attention.layout import TokenLayout

__all__ = [
    "TokenMapAccumulator",
    "TokenMapMethod",
    "METHODS",
    "make_method",
    "register_method",
    "fuse_heads",
    "HEAD_FUSIONS",
    "run_on_maps",
    "keep_graph",
    "graph_kept",
]

#: Ways to fuse the heads of an attention map: mean, max or min over heads.
HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(probs: torch.Tensor, fusion: str, dim: int = 1) -> torch.Tensor:
    """Fuse attention heads (``dim``) by ``"mean"``, ``"max"`` or ``"min"``."""
    if fusion == "mean":
        return probs.mean(dim=dim)
    if fusion == "max":
        return probs.amax(dim=dim)
    if fusion == "min":
        return probs.amin(dim=dim)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {fusion!r}")


#: Whether the methods keep the autograd graph of what they record (see :func:`keep_graph`).
_KEEP_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "captum_fvit_keep_graph", default=False
)


@contextmanager
def keep_graph() -> Iterator[None]:
    """Within this block the methods do not detach the attention (and gradients) they read,
    so a token map is a differentiable function of the input (used by the adaptive attacks of
    :mod:`captum_fvit.differentiable`). Context-local (threads, asyncio)."""
    token = _KEEP_GRAPH.set(True)
    try:
        yield
    finally:
        _KEEP_GRAPH.reset(token)


def graph_kept() -> bool:
    """Whether a :func:`keep_graph` block is active."""
    return _KEEP_GRAPH.get()


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Detach (unless :func:`keep_graph` is active) and upcast half-precision maps
    (autocast) so products accumulate in fp32+."""
    if not _KEEP_GRAPH.get():
        tensor = tensor.detach()
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def check_head_fusion(fusion: str) -> str:
    """Validate a head-fusion name early, with an error naming the choices."""
    if fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {fusion!r}")
    return fusion


class TokenMapAccumulator(ABC):
    """State of one method for one forward pass; an :class:`AttentionListener`.

    Parameters
    ----------
    num_layers : int
        Attention layers of the model.
    cls_index : int or None
        Index of the class token whose row is read, or ``None`` for the mean query
        (pooled models).
    layer_stages : sequence of int, optional
        Stage of each layer for hierarchical models (Swin); default all 0.
    """

    def __init__(
        self, num_layers: int, cls_index: int | None, layer_stages: Sequence[int] | None = None
    ) -> None:
        self.num_layers = num_layers
        self.cls_index = cls_index
        self.layer_stages = tuple(layer_stages) if layer_stages else (0,) * num_layers
        if len(self.layer_stages) != num_layers:
            raise ValueError(
                f"layer_stages has {len(self.layer_stages)} entries for {num_layers} layers"
            )

    def stage_of(self, layer: int) -> int:
        """Stage of ``layer``."""
        return self.layer_stages[layer]

    @abstractmethod
    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        """Receive layer ``layer``'s probabilities ``N×heads×T×T``."""

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        """Receive ``∂score/∂probs`` of layer ``layer`` (gradient methods only)."""

    @abstractmethod
    def result(self, layout: TokenLayout) -> torch.Tensor:
        """The token map ``N×P`` over the patch tokens."""


class TokenMapMethod(ABC):
    """An attention explanation method, configured once and run on many batches."""

    #: Name under which the method is selected everywhere (API and CLI).
    name: ClassVar[str]
    #: Whether the method needs ``∂score/∂attention`` (and so a target class).
    needs_gradients: ClassVar[bool] = False

    @property
    def class_specific(self) -> bool:
        """Whether the map depends on the explained class (``target``)."""
        return self.needs_gradients

    @abstractmethod
    def layers(self, num_layers: int) -> list[int]:
        """Indices of the attention layers the method reads (the others stay fused)."""

    @abstractmethod
    def accumulator(
        self,
        num_layers: int,
        cls_index: int | None,
        layer_stages: Sequence[int] | None = None,
    ) -> TokenMapAccumulator:
        """A fresh accumulator for one forward pass (``cls_index=None``: mean query;
        ``layer_stages``: stage of each layer of a hierarchical model)."""

    def options(self) -> dict[str, Any]:
        """The method's options, for reports and ``repr``."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def resolve_layer(layer: int, num_layers: int, what: str = "layer") -> int:
    """Turn a possibly negative layer index into ``0..num_layers-1``, or explain the range."""
    if not -num_layers <= layer < num_layers:
        raise ValueError(
            f"{what}={layer} is out of range for a model with {num_layers} attention layers"
        )
    return layer % num_layers


#: The explanation methods by name (``"raw"``, ``"rollout"``, ``"grad_rollout"``,
#: ``"attn_gradcam"``); :func:`register_method` adds one.
METHODS: dict[str, type[TokenMapMethod]] = {}


def register_method(cls: type[TokenMapMethod]) -> type[TokenMapMethod]:
    """Class decorator adding a method to :data:`METHODS` under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def make_method(method: str | TokenMapMethod, **options: Any) -> TokenMapMethod:
    """Build a method from its name (``"raw"``, ``"rollout"``, ``"grad_rollout"``,
    ``"attn_gradcam"``) and options, or pass an instance through.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones, or options the method does not take.
    """
    if isinstance(method, TokenMapMethod):
        if options:
            raise ValueError(
                f"options {sorted(options)} were given together with a configured method "
                f"instance {method!r}; configure the instance instead"
            )
        return method
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"unknown explanation method {method!r}; choose one of {sorted(METHODS)} or pass a "
            "TokenMapMethod instance"
        )
    try:
        return METHODS[method](**options)
    except TypeError as err:
        raise ValueError(f"bad options for method {method!r}: {err}") from None


def run_on_maps(
    method: TokenMapMethod,
    attentions: list[torch.Tensor],
    layout: TokenLayout,
    gradients: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Apply a streaming method to already recorded maps (and gradients), in layer order.

    ``attentions`` holds one ``N×heads×T_l×T_l`` map per layer; for a hierarchical model,
    ``layout.layer_stages`` gives each layer's stage.
    """
    num_layers = len(attentions)
    if layout.layer_stages and len(layout.layer_stages) != num_layers:
        raise ValueError(
            f"the layout describes {len(layout.layer_stages)} layers, got {num_layers} maps"
        )
    acc = method.accumulator(num_layers, layout.cls_index, layout.layer_stages or None)
    wanted = method.layers(num_layers)
    for layer in wanted:
        acc.on_attention(layer, attentions[layer])
    if method.needs_gradients:
        if gradients is None:
            raise ValueError(f"method {method.name!r} needs the attention gradients")
        for layer in reversed(wanted):
            acc.on_gradient(layer, gradients[layer])
    return acc.result(layout)
