"""The adapter protocol: how to find and hook the attention of one model family.

An adapter knows, for one family of models, where the attention layers are, how to make
them expose their attention probabilities (switching fused kernels off, asking for weights)
and how the tokens are laid out. :class:`~captum_fvit.attention.AttentionRecorder` picks the
first registered adapter that matches a model. Register your own with
:func:`register_adapter` to support a new family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack

import torch
from torch import nn

from .layout import TokenLayout, infer_grid

__all__ = [
    "AttentionAdapter",
    "AttentionEmit",
    "register_adapter",
    "registered_adapters",
    "find_adapter",
]

#: Signature of the callback an adapter calls once per attention layer and forward pass:
#: ``emit(layer, probs, anchor, anchor_grad_to_probs_grad)``.
#:
#: * ``probs``: the attention probabilities ``N×heads×T×T`` that the layer multiplies with
#:   its values (after softmax and dropout);
#: * ``anchor``: a tensor of the autograd graph whose gradient determines ``d y / d probs``;
#:   usually ``probs`` itself;
#: * ``anchor_grad_to_probs_grad``: ``None`` when ``anchor is probs``, else a function that
#:   turns the anchor's gradient into the gradient with respect to ``probs``.
AttentionEmit = Callable[
    [int, torch.Tensor, torch.Tensor, "Callable[[torch.Tensor], torch.Tensor] | None"], None
]


class AttentionAdapter(ABC):
    """Hooks the attention of one family of Vision Transformers without rewriting it.

    Subclasses implement :meth:`matches`, :meth:`attention_modules`, :meth:`patch_size` and
    :meth:`attach`; the token layout is inferred from the observed sequence length, the
    image size and :meth:`patch_size` (and :meth:`num_prefix_tokens` when known).
    Hierarchical families (Swin) also override :meth:`layer_stages` and :meth:`layout`.
    """

    #: Human-readable family name, used in error messages.
    family: str = "custom"

    @abstractmethod
    def matches(self, model: nn.Module) -> bool:
        """Whether this adapter knows how to hook ``model``."""

    @abstractmethod
    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        """The attention modules in forward order (layer 0 first)."""

    @abstractmethod
    def patch_size(self, model: nn.Module) -> tuple[int, int]:
        """Patch height and width in pixels."""

    def num_prefix_tokens(self, model: nn.Module) -> int | None:
        """Tokens before the patches (class, distillation, registers); ``None`` = infer."""
        return None

    def cls_index(self, model: nn.Module) -> int | None:
        """Index of the class token whose row explains the prediction, or ``None`` when the
        model averages its patch tokens (the explained row is then the mean query)."""
        return 0

    def unsupported_reason(self, model: nn.Module) -> str | None:
        """Why the explanation methods cannot explain ``model`` (e.g. a max-pooling head), or
        ``None``. Recording works regardless."""
        return None

    def layer_stages(self, model: nn.Module) -> tuple[int, ...]:
        """Stage of each attention layer; all 0 for a plain ViT."""
        return (0,) * len(self.attention_modules(model))

    def token_grid(self, model: nn.Module, image_size: Sequence[int]) -> tuple[int, int]:
        """Grid ``(h, w)`` of the (first-stage) patch tokens for an ``(H, W)`` image, without
        running the model. Default: ``(H // ph, W // pw)`` (patch embedding without padding).
        """
        ph, pw = self.patch_size(model)
        return int(image_size[-2]) // ph, int(image_size[-1]) // pw

    def layout(
        self,
        model: nn.Module,
        image_size: Sequence[int],
        tokens_by_layer: Mapping[int, int],
    ) -> TokenLayout:
        """The token layout of a forward pass on an ``(H, W)`` image.

        Parameters
        ----------
        model : nn.Module
            The model.
        image_size : sequence of int
            ``(H, W)`` (or a shape ending in them) in pixels.
        tokens_by_layer : mapping of int to int
            Observed sequence length of each recorded layer.
        """
        if not tokens_by_layer:
            raise RuntimeError("no attention was recorded yet: run the model first")
        counts = set(tokens_by_layer.values())
        if len(counts) != 1:
            raise ValueError(
                f"the recorded layers saw different sequence lengths {sorted(counts)}; a "
                "hierarchical model needs an adapter that overrides `layout` and `layer_stages`"
            )
        patch = self.patch_size(model)
        height, width = int(image_size[-2]), int(image_size[-1])
        grid, prefix = infer_grid(
            counts.pop(), (height, width), patch, self.num_prefix_tokens(model)
        )
        return TokenLayout(
            num_prefix_tokens=prefix, grid=grid, patch_size=patch, cls_index=self.cls_index(model)
        )

    @abstractmethod
    def attach(
        self,
        model: nn.Module,
        layers: Sequence[int],
        emit: AttentionEmit,
        stack: ExitStack,
    ) -> None:
        """Make ``layers`` report their attention through ``emit``.

        Every change to the model (hooks, flags, configuration) must register its undo on
        ``stack``; the recorder closes the stack on exit and on exceptions, which has to leave
        the model exactly as it was.
        """


_ADAPTERS: list[AttentionAdapter] = []


def register_adapter(adapter: AttentionAdapter, *, first: bool = True) -> AttentionAdapter:
    """Register an adapter for a model family.

    Parameters
    ----------
    adapter : AttentionAdapter
        The adapter instance.
    first : bool, default True
        Try it before the built-in adapters (so it can override them).

    Returns
    -------
    AttentionAdapter
        ``adapter``, so the call can be used as a one-liner.
    """
    if not isinstance(adapter, AttentionAdapter):
        raise TypeError(
            f"expected an AttentionAdapter instance, got {type(adapter).__name__}; subclass "
            "captum_fvit.attention.AttentionAdapter and pass an instance"
        )
    if first:
        _ADAPTERS.insert(0, adapter)
    else:
        _ADAPTERS.append(adapter)
    return adapter


def registered_adapters() -> tuple[AttentionAdapter, ...]:
    """The adapters in the order they are tried."""
    return tuple(_ADAPTERS)


def find_adapter(model: nn.Module) -> AttentionAdapter:
    """Return the first registered adapter that matches ``model``.

    Raises
    ------
    TypeError
        If no adapter matches, naming the supported families and how to add one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for adapter in _ADAPTERS:
        if adapter.matches(model):
            return adapter
    families = ", ".join(dict.fromkeys(a.family for a in _ADAPTERS))
    raise TypeError(
        f"{type(model).__name__} is not a supported Vision Transformer: no attention layers "
        f"were recognised. Supported families: {families}. For another model, subclass "
        "captum_fvit.attention.AttentionAdapter and register it with "
        "captum_fvit.attention.register_adapter(MyAdapter())."
    )
