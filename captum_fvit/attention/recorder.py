"""``AttentionRecorder``: capture attention (and its gradient) from a stock model.

The recorder finds the adapter for the model, asks it to hook the requested layers and hands
every attention tensor to a *listener* as soon as the layer has computed it. Listeners keep
only what they need: an explanation method keeps a class-token row or a running product, the
default :class:`AttentionStore` keeps everything (useful for inspection, costly for large
batches). On exit — normal or by exception — every hook is removed and every flag restored.

Examples
--------
>>> import timm, torch
>>> from captum_fvit.attention import AttentionRecorder
>>> model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8).eval()
>>> with AttentionRecorder(model) as recorder:
...     logits = model(torch.rand(2, 3, 32, 32))
>>> [a.shape for a in recorder.store.attentions.values()][0]
torch.Size([2, 3, 17, 17])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..concurrency import model_lock
from .adapter import AttentionAdapter, find_adapter
from .layout import TokenLayout
from .windows import WindowedAttention

__all__ = ["AttentionListener", "AttentionStore", "AttentionRecorder"]


@runtime_checkable
class AttentionListener(Protocol):
    """Receives attention while the model runs.

    ``on_attention(layer, probs)`` gets the probabilities ``N×heads×T×T`` of one layer (with
    their autograd graph when the recorder records gradients); ``on_gradient(layer, grad)``
    gets ``∂score/∂probs`` of the same shape, in reverse layer order, when
    :meth:`AttentionRecorder.backward` runs. A listener with ``accepts_windows = True``
    receives a Swin block's attention (and gradient) as the compact
    :class:`~captum_fvit.attention.WindowedAttention` instead of the full matrix.
    """

    def on_attention(self, layer: int, probs: torch.Tensor) -> None: ...

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None: ...


class AttentionStore:
    """The default listener: keeps every recorded map, detached.

    Attributes
    ----------
    attentions : dict of int to Tensor
        Layer index → probabilities ``N×heads×T×T`` of the last forward pass.
    gradients : dict of int to Tensor
        Layer index → ``∂score/∂probs`` after :meth:`AttentionRecorder.backward`.
    """

    def __init__(self) -> None:
        self.attentions: dict[int, torch.Tensor] = {}
        self.gradients: dict[int, torch.Tensor] = {}

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        self.attentions[layer] = probs.detach()

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:
        self.gradients[layer] = grad.detach()


def _resolve_layers(layers: Iterable[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(num_layers))
    resolved = []
    for layer in layers:
        index = int(layer)
        if not -num_layers <= index < num_layers:
            raise ValueError(
                f"layer {layer} does not exist: the model has {num_layers} attention layers "
                f"(valid indices -{num_layers}..{num_layers - 1})"
            )
        resolved.append(index % num_layers)
    return sorted(set(resolved))


class AttentionRecorder:
    """Context manager that records attention probabilities from a stock ViT.

    Parameters
    ----------
    model : nn.Module
        A timm, torchvision or Hugging Face Vision Transformer or Swin Transformer (or any
        model a registered :class:`~captum_fvit.attention.AttentionAdapter` matches). It is
        not modified beyond the duration of the ``with`` block. A Swin's window attention
        is delivered as each stage's full ``N×heads×T_s×T_s`` matrix (0 between tokens that
        do not share a window).
    listener : AttentionListener, optional
        Receives each layer's attention; defaults to a new :class:`AttentionStore`
        (available as :attr:`store`). It may be swapped between forward passes.
    layers : iterable of int, optional
        Layer indices to record (negative indices count from the end); default all. Layers
        not recorded keep their fused kernels.
    gradients : bool, default False
        Keep what :meth:`backward` needs to deliver ``∂score/∂probs``.
    adapter : AttentionAdapter, optional
        Force an adapter instead of looking one up.

    Raises
    ------
    TypeError
        If no adapter supports ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        listener: AttentionListener | None = None,
        *,
        layers: Iterable[int] | None = None,
        gradients: bool = False,
        adapter: AttentionAdapter | None = None,
    ) -> None:
        self.model = model
        self.adapter = adapter if adapter is not None else find_adapter(model)
        self.num_layers = len(self.adapter.attention_modules(model))
        self.layers = _resolve_layers(layers, self.num_layers)
        self.gradients = gradients
        self.store = listener if listener is not None else AttentionStore()
        self.listener: AttentionListener = self.store
        self._stack: ExitStack | None = None
        self._anchors: list[tuple[int, torch.Tensor, Callable | None]] = []
        self._num_tokens: int | None = None
        self._tokens_by_layer: dict[int, int] = {}

    # -- context management ---------------------------------------------------------------
    def __enter__(self) -> AttentionRecorder:
        if self._stack is not None:
            raise RuntimeError("AttentionRecorder is not re-entrant; use one per `with` block")
        # Hold the model's lock from attaching to restoring (captum_fvit.concurrency): two
        # threads hooking one model would otherwise save and "restore" each other's state.
        stack = ExitStack()
        stack.enter_context(model_lock(self.model))
        try:
            self.adapter.attach(self.model, self.layers, self._emit, stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info) -> None:
        stack, self._stack = self._stack, None
        self._anchors.clear()
        if stack is not None:
            stack.close()  # restores the model, then releases its lock (last in, first out)

    # -- recording ------------------------------------------------------------------------
    def _emit(
        self,
        layer: int,
        probs: torch.Tensor,
        anchor: torch.Tensor,
        to_probs_grad: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self._num_tokens = probs.shape[-1]
        self._tokens_by_layer[layer] = probs.shape[-1]
        self.listener.on_attention(layer, self._for_listener(probs))
        if self.gradients:
            self._anchors.append((layer, anchor, to_probs_grad))

    def _for_listener(self, probs):
        """The full matrix, unless the listener accepts Swin's compact window form."""
        if isinstance(probs, WindowedAttention) and not getattr(
            self.listener, "accepts_windows", False
        ):
            return probs.dense()
        return probs

    def reset(self) -> None:
        """Forget the graph references of the last forward pass."""
        self._anchors.clear()

    def backward(self, score: torch.Tensor) -> None:
        """Deliver ``∂score/∂probs`` of every recorded layer to the listener.

        Only the attention tensors are differentiated (``torch.autograd.grad``), so the
        model's parameter ``.grad`` fields are never touched.

        Parameters
        ----------
        score : Tensor
            A scalar depending on the recorded forward pass, e.g. the sum over the batch of
            each sample's target logit.
        """
        if not self.gradients:
            raise RuntimeError("create the recorder with gradients=True to call backward()")
        if not self._anchors:
            raise RuntimeError("no attention was recorded: run the model inside the `with` block")
        if not score.requires_grad:
            raise RuntimeError(
                "the score does not depend on the recorded attention through autograd; run the "
                "forward pass with gradients enabled (not under torch.no_grad())"
            )
        anchors, self._anchors = self._anchors, []
        grads = torch.autograd.grad(score, [a for _, a, _ in anchors])
        for (layer, _, convert), grad in reversed(list(zip(anchors, grads, strict=True))):
            grad = grad if convert is None else convert(grad)
            self.listener.on_gradient(layer, self._for_listener(grad))

    # -- layout -----------------------------------------------------------------------------
    def layout(self, image_size: Sequence[int]) -> TokenLayout:
        """The token layout of the last forward pass for an input of ``(H, W)`` pixels.

        For hierarchical models (Swin) it lists every stage's grid and the stage of every
        layer; ``grid`` is the first stage's.
        """
        if self._num_tokens is None:
            raise RuntimeError("no attention was recorded yet: run the model first")
        return layout_for(self.model, self.adapter, dict(self._tokens_by_layer), image_size)


def layout_for(
    model: nn.Module,
    adapter: AttentionAdapter,
    num_tokens: int | Mapping[int, int],
    image_size: Sequence[int],
) -> TokenLayout:
    """Token layout of ``model`` for an ``(H, W)`` image.

    Parameters
    ----------
    num_tokens : int or mapping of int to int
        The sequence length the attention saw — one number for a plain ViT, or the length
        of each recorded layer (layer index → ``T``), which hierarchical models need.
    """
    if isinstance(num_tokens, Mapping):
        tokens = {int(k): int(v) for k, v in num_tokens.items()}
    else:
        tokens = {len(adapter.attention_modules(model)) - 1: int(num_tokens)}
    return adapter.layout(model, image_size, tokens)
