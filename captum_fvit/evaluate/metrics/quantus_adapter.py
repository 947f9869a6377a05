"""Handing captum-fvit explanations to Quantus (``quantus`` 0.6) as its ``explain_func``.

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with
numpy arrays (``inputs`` ``N×C×H×W`` in the model's normalisation, ``targets`` ``N``
classes) and expects a numpy array of attributions, ``N×1×H×W`` by its convention (one
channel, broadcast by Quantus where needed).

Some Quantus metrics call the explanation with a *different* model (model-randomisation
tests pass a randomised copy), so :class:`QuantusExplainFunc` builds the captum-fvit
attribution from a factory for whichever model it receives, caching one per model.

Quantus calls the model itself and expects a logits tensor; Hugging Face classifiers return
an ``ImageClassifierOutput`` (and Quantus takes them for text models). Pass
``QuantusExplainFunc.model_for_quantus(model)`` — the model wrapped so that it returns its
logits — as Quantus's ``model``; the adapter unwraps it again to explain the model itself.

Example
-------
>>> import quantus
>>> from captum_fvit.evaluate import QuantusExplainFunc
>>> explain = QuantusExplainFunc.dds(denoiser, method="rollout", sigma=0.25, n_samples=32)
>>> metric = quantus.MaxSensitivity(nr_samples=5, disable_warnings=True)
>>> scores = metric(model=vit, x_batch=x, y_batch=y, explain_func=explain, device="cpu")
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ...attr import AttentionMap, DDSAttention, FaithfulRegion
from ...model_io import LogitsModel

__all__ = ["QuantusExplainFunc"]


class QuantusExplainFunc:
    """A Quantus ``explain_func`` backed by a captum-fvit attribution.

    Parameters
    ----------
    factory : callable
        ``factory(model) -> attribution``: an :class:`~captum_fvit.AttentionMap`,
        :class:`~captum_fvit.DDSAttention` or :class:`~captum_fvit.FaithfulRegion` for the model.
    seed : int, default 0
        Noise seed of smoothed explanations (fixed, so Quantus measures the explanation, not
        Monte-Carlo noise).
    """

    def __init__(self, factory: Callable[[nn.Module], Any], seed: int = 0) -> None:
        if not callable(factory):
            raise TypeError("factory must be callable as factory(model) -> attribution")
        self.factory = factory
        self.seed = int(seed)
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def attention_map(cls, method: str = "rollout", **options: Any) -> QuantusExplainFunc:
        """Plain attention maps (:class:`~captum_fvit.AttentionMap`)."""
        return cls(lambda model: AttentionMap(model, method, **options))

    @classmethod
    def dds(
        cls, denoiser: Callable | None = None, method: str = "rollout", seed: int = 0, **options: Any
    ) -> QuantusExplainFunc:
        """DDS-smoothed attention (:class:`~captum_fvit.DDSAttention`); σ in pixel units."""
        return cls(lambda model: DDSAttention(model, denoiser, method, **options), seed=seed)

    @classmethod
    def faithful_region(
        cls, denoiser: Callable | None = None, method: str = "rollout", seed: int = 0, **options: Any
    ) -> QuantusExplainFunc:
        """Per-pixel certified radius ``r_in`` (:class:`~captum_fvit.FaithfulRegion`)."""
        return cls(lambda model: FaithfulRegion(model, denoiser, method, **options), seed=seed)

    @staticmethod
    def model_for_quantus(model: nn.Module) -> nn.Module:
        """``model`` as Quantus needs it: called on a tensor, returning ``N×K`` logits (the
        one logits adapter of captum-fvit, :class:`~captum_fvit.model_io.LogitsModel`)."""
        return model if isinstance(model, LogitsModel) else LogitsModel(model)

    def attribution_for(self, model: nn.Module) -> Any:
        """The (cached) attribution of ``model``."""
        attribution = self._cache.get(model)
        if attribution is None:
            attribution = self.factory(model)
            self._cache[model] = attribution
        return attribution

    def __call__(self, model: nn.Module, inputs: Any, targets: Any = None, **kwargs: Any) -> np.ndarray:
        """Explain ``inputs`` (numpy ``N×C×H×W``) for ``targets``; returns ``N×1×H×W``."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"Quantus passed a {type(model).__name__}; expected a torch model")
        if isinstance(model, LogitsModel):
            model = model.model
        device = kwargs.get("device") or next(model.parameters()).device
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        if x.dim() != 4:
            raise ValueError(f"expected N×C×H×W inputs, got shape {tuple(x.shape)}")
        target = None
        if targets is not None:
            target = torch.as_tensor(np.asarray(targets), device=device).long().reshape(-1)
        attribution = self.attribution_for(model)
        if isinstance(attribution, FaithfulRegion):
            result = attribution.attribute(x, seed=self.seed)
        elif isinstance(attribution, DDSAttention):
            result = attribution.attribute(x, target=target, seed=self.seed)
        else:
            result = attribution.attribute(x, target=target)
        return result.mean(dim=1, keepdim=True).detach().float().cpu().numpy()
