"""Differentiable DDS: the smoothed map and the smoothed softmax as functions of the input.

DDS (THEORY §1) is ``g(x) = E_δ[h(D(x + δ))]`` with ``D`` the denoiser and ``h`` the
sum-normalised token map of the ViT on the denoised image; the smoothed classifier's soft
output is ``p̄(x) = E_δ[softmax f(D(x + δ))]``. Both are expectations over the noise, so their
gradients are expectations too (expectation over transformation, EOT):

    ``∇_x g_i(x) = E_δ[∇_x h_i(D(x + δ))]``,  estimated by ``(1/m) Σ_s ∇_x h_i(D(x + δ_s))``.

:class:`DifferentiableDDS` is a thin layer on the one smoothing engine
(:class:`~captum_fvit.smoothing.SmoothingEngine`): the engine chunks the ``m·N`` (sample,
image) pairs, draws the noise by ``(seed, stream, sample)``, gives the denoiser its
randomness, stops on non-finite values (:class:`~captum_fvit.errors.NonFiniteError`) and, on
its graph path, sums each chunk's gradient and frees the chunk's graph before the next. This
module adds what is particular to attacks: several explanation methods on one set of denoised
samples (one denoiser call and one ViT forward per chunk), run inside
:func:`~captum_fvit.explain.base.keep_graph` (gradient methods take ``∂y/∂A`` with
``create_graph=True``: second-order gradients), and the linear objectives whose EOT gradient
is taken.

With the same seed, stream and samples the values (not the gradients) equal
:class:`~captum_fvit.DDSAttention`'s — maps, top-k votes, class counts (run it with
``autocast=False``; ``tests/test_one_engine.py`` pins this) — and neither depends on
``batch_size``.

All images here are in **[0, 1] pixel units**; σ too.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attention import AttentionAdapter, AttentionRecorder, find_adapter
from .attr.selection import select_classes
from .concurrency import model_lock
from .denoise.identity import IdentityDenoiser
from .evaluate.attacks.labels import deprecated_alias
from .explain.base import TokenMapMethod, keep_graph, make_method
from .model_io import logits_of
from .noise import ESTIMATION_STREAM
from .smoothing import Chunk, SmoothingEngine
from .space import Normalization, resolve_normalization
from .stats import ClassCounts, MapStatistics, normalize_maps
from .validation import check_count, check_image_batch, check_k, check_seed, renamed_argument

__all__ = ["DifferentiableDDS", "SmoothedEstimate", "differentiable_denoiser"]


def differentiable_denoiser(denoiser: Callable | None) -> Callable:
    """A denoiser that lets gradients through, without changing the caller's object.

    ``None`` gives :class:`~captum_fvit.denoise.IdentityDenoiser`. A denoiser with a
    ``differentiable`` flag (:class:`~captum_fvit.denoise.DiffusionDenoiser`) that is off is
    shallow-copied with the flag on (the UNet is shared, not copied). Any other callable is
    used as it is; :class:`DifferentiableDDS` raises if its output does not carry a gradient.
    """
    if denoiser is None:
        return IdentityDenoiser()
    if not callable(denoiser):
        raise TypeError(
            f"denoiser must be callable as denoiser(x_noisy, sigma, generator), got "
            f"{type(denoiser).__name__}"
        )
    if getattr(denoiser, "differentiable", True) is False:
        twin = copy.copy(denoiser)
        twin.differentiable = True
        return twin
    return denoiser


@dataclass
class SmoothedEstimate:
    """Monte-Carlo estimates of one pass over ``n_samples`` noise samples per image.

    Attributes
    ----------
    maps : dict of str to Tensor
        Method name → ``N×P`` mean of the sum-normalised token maps ``h`` (the DDS map).
    variance : dict of str to Tensor
        Method name → ``N×P`` unbiased per-token sample variance of ``h`` (NaN for n = 1).
    mean_softmax : Tensor
        ``N×K`` mean softmax of the ViT on the denoised samples (the soft smoothed classifier).
    class_counts : Tensor
        ``N×K`` how often each class was the ViT's argmax.
    n_samples : int
        Samples per image.
    grad : Tensor or None
        ``N×C×H×W`` gradient (pixel units) of the requested objective, or ``None``.
    target : Tensor or None
        ``N`` class explained by class-specific methods.
    votes : dict of str to Tensor or None
        Method name → ``N×P`` int64 counts of samples in which the token was among the top
        ``k`` of the raw map (as ``DDSResult.votes``); ``None`` without a ``k``.
    k : int or None
        The ``k`` of ``votes``.
    """

    maps: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    mean_softmax: torch.Tensor
    class_counts: torch.Tensor
    n_samples: int
    grad: torch.Tensor | None
    target: torch.Tensor | None
    votes: dict[str, torch.Tensor] | None = None
    k: int | None = None

    @property
    def predicted(self) -> torch.Tensor:
        """``N`` majority class of the smoothed classifier (ties: lowest index)."""
        return self.class_counts.argmax(dim=1)


class _FanOut:
    """Hands each recorded layer to the accumulators of the methods that read it."""

    def __init__(self, accumulators: dict[str, Any], layers: dict[str, set[int]]) -> None:
        self.accumulators = accumulators
        self.layers = layers
        self.recorded: dict[int, torch.Tensor] = {}

    def on_attention(self, layer: int, probs: torch.Tensor) -> None:
        self.recorded[layer] = probs
        for name, acc in self.accumulators.items():
            if layer in self.layers[name]:
                acc.on_attention(layer, probs)

    def on_gradient(self, layer: int, grad: torch.Tensor) -> None:  # pragma: no cover
        pass


class _Estimates:
    """The streaming statistics of one pass: one :class:`MapStatistics` per method and the
    shared :class:`ClassCounts`."""

    def __init__(self, n_inputs: int, names: list[str], k: int | None, device) -> None:
        self.maps = {name: MapStatistics(n_inputs, k, device) for name in names}
        self.classes = ClassCounts(n_inputs, device)
        self.k = k

    def fold(self, chunk: Chunk, result: tuple[dict[str, torch.Tensor], torch.Tensor]) -> None:
        maps, logits = result
        for name, stats in self.maps.items():
            stats.update(chunk.input_index, maps[name])
        self.classes.update(chunk.input_index, logits)

    def result(self, n_samples: int, dtype, grad, target) -> SmoothedEstimate:
        moments = {name: stats.moments for name, stats in self.maps.items()}
        if n_samples > 1:
            variance = {name: m.variance for name, m in moments.items()}
        else:
            variance = {name: torch.full_like(m.sum, float("nan")) for name, m in moments.items()}
        votes = None
        if self.k is not None:
            votes = {name: stats.vote_counts for name, stats in self.maps.items()}
        return SmoothedEstimate(
            maps={name: m.mean.to(dtype) for name, m in moments.items()},
            variance=variance,
            mean_softmax=(self.classes.softmax_sum / n_samples).to(dtype),
            class_counts=self.classes.counts,
            n_samples=n_samples,
            grad=grad,
            target=target,
            votes=votes,
            k=self.k,
        )


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax in at least float32, keeping the graph."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.softmax(dim=1)


class DifferentiableDDS:
    """DDS maps and smoothed softmax with EOT gradients through denoiser, ViT and method.

    Parameters
    ----------
    model : nn.Module
        A supported ViT classifier in ``eval()`` mode (any family with an attention adapter).
        Its parameters, their ``.grad``, its mode and its hooks are left as they were:
        gradients are taken with ``torch.autograd.grad`` with respect to the input only.
    denoiser : callable, optional
        ``denoiser(x_noisy, sigma, generator)`` in [0, 1] pixel units. ``None`` = identity
        (plain randomized smoothing). A :class:`~captum_fvit.denoise.DiffusionDenoiser` is
        used through a differentiable twin (:func:`differentiable_denoiser`).
    methods : str, TokenMapMethod or sequence of them, default "rollout"
        Explanation methods computed on the same denoised samples.
    sigma : float, default 0.25
        Noise std in **[0, 1] pixel units**.
    normalization : Normalization, optional
        The model's input normalisation (default :func:`~captum_fvit.space.resolve_normalization`).
    batch_size : int, default 32
        Images per chunk through denoiser and ViT; peak memory is that of one chunk's
        forward and backward, whatever the number of samples (``chunk_size``: deprecated
        name).
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution (std σ).
    clamp : bool, default False
        Clamp denoised images to [0, 1] (as the smoothing engine's ``clamp``).
    n_select : int, default 32
        Samples (selection stream) choosing the class explained by class-specific methods
        when no ``target`` is given (the routine of :class:`~captum_fvit.DDSAttention`).
    adapter : AttentionAdapter, optional
        Force an attention adapter.

    Notes
    -----
    Runs in the models' own precision (an engine with ``autocast=False``): the EOT gradient
    is a small average of per-sample gradients and reduced precision would bias it.
    """

    def __init__(
        self,
        model: nn.Module,
        denoiser: Callable | None = None,
        methods: str | TokenMapMethod | Sequence[str | TokenMapMethod] = "rollout",
        sigma: float = 0.25,
        *,
        normalization: Normalization | None = None,
        batch_size: int = 32,
        noise: str = "gaussian",
        clamp: bool = False,
        n_select: int = 32,
        adapter: AttentionAdapter | None = None,
        chunk_size: int | None = None,
    ) -> None:
        batch_size = renamed_argument(batch_size, chunk_size, "batch_size", "chunk_size", 32,
                                      "DifferentiableDDS")  # fmt: skip
        if isinstance(methods, (str, TokenMapMethod)):
            methods = [methods]
        built = [make_method(m) for m in methods]
        if not built:
            raise ValueError("give at least one explanation method")
        names = [m.name for m in built]
        if len(set(names)) != len(names):
            raise ValueError(f"each method may appear once, got {names}")
        self.model = model
        self.batch_size = check_count(batch_size, "batch_size")
        self.engine = SmoothingEngine(
            differentiable_denoiser(denoiser),
            sigma,
            normalization or resolve_normalization(model),
            batch_size=self.batch_size,
            noise=noise,
            clamp=bool(clamp),
            autocast=False,
        )
        self.denoiser = self.engine.denoiser
        self.sigma = self.engine.sigma
        self.normalization = self.engine.normalization
        self.noise = self.engine.noise
        self.clamp = self.engine.clamp
        self.methods: dict[str, TokenMapMethod] = dict(zip(names, built, strict=True))
        self.n_select = check_count(n_select, "n_select")
        self.adapter = adapter if adapter is not None else find_adapter(model)
        self.num_layers = len(self.adapter.attention_modules(model))
        reason = self.adapter.unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"cannot explain this model with {names}: {reason}")
        #: Class-token index, or ``None``: the explained row is the mean query (pooled models),
        #: exactly as :class:`~captum_fvit.AttentionMap` and :class:`~captum_fvit.DDSAttention`.
        self.cls_index = self.adapter.cls_index(model)
        stages = tuple(self.adapter.layer_stages(model))
        self._stages = stages if any(stages) else None
        self._layers = {n: set(m.layers(self.num_layers)) for n, m in self.methods.items()}
        self._grad_methods = [n for n, m in self.methods.items() if m.needs_gradients]
        self._recorded = sorted(set().union(*self._layers.values()))
        self._grad_layers = sorted(set().union(*(self._layers[m] for m in self._grad_methods)))

    @property
    def chunk_size(self) -> int:
        """Deprecated name of :attr:`batch_size`."""
        return deprecated_alias(self.batch_size, "DifferentiableDDS.chunk_size", "batch_size")

    @property
    def class_specific(self) -> bool:
        """Whether some method needs a target class."""
        return bool(self._grad_methods)

    # -- public API ---------------------------------------------------------------------------
    def estimate(
        self,
        pixels: torch.Tensor,
        n_samples: int,
        seed: int,
        *,
        target: torch.Tensor | None = None,
        stream: int = ESTIMATION_STREAM,
        start: int = 0,
        k: int | None = None,
    ) -> SmoothedEstimate:
        """Smoothed maps and softmax of ``pixels`` (no gradient), samples ``start .. start+n-1``.

        Parameters
        ----------
        pixels : Tensor
            ``N×C×H×W`` images in [0, 1] pixel units.
        n_samples : int
            Noise samples per image.
        seed : int
            Seed of the noise; ``(seed, stream, sample)`` addresses every draw.
        target : Tensor, optional
            ``N`` classes explained by class-specific methods (default: the smoothed
            prediction on ``n_select`` selection samples).
        stream : int, default :data:`~captum_fvit.noise.ESTIMATION_STREAM`
            Noise stream (the estimation stream is the one DDSAttention uses).
        start : int, default 0
            First sample index (EOT steps use disjoint sample ranges).
        k : int, optional
            Also count top-``k`` votes of each method's raw maps (``SmoothedEstimate.votes``).
        """
        return self._pass(pixels, n_samples, seed, target, stream, start, None, None, k)

    def gradient(
        self,
        pixels: torch.Tensor,
        n_samples: int,
        seed: int,
        *,
        map_weights: dict[str, torch.Tensor] | None = None,
        prob_weights: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        stream: int = ESTIMATION_STREAM,
        start: int = 0,
    ) -> SmoothedEstimate:
        """EOT gradient of a linear functional of the smoothed outputs, in one chunked pass.

        The objective is ``J(x) = Σ_i [Σ_m ⟨w_m,i, g_m,i(x)⟩ + ⟨u_i, p̄_i(x)⟩]`` with
        ``w = map_weights`` (method → ``N×P``) and ``u = prob_weights`` (``N×K``); its
        gradient is estimated by the average over the ``n_samples`` samples of the per-sample
        gradients (unbiased), accumulated chunk by chunk.

        Returns
        -------
        SmoothedEstimate
            The estimates of the same samples, with ``grad`` the ``N×C×H×W`` gradient.
        """
        map_weights = dict(map_weights or {})
        unknown = sorted(set(map_weights) - set(self.methods))
        if unknown:
            raise ValueError(f"map_weights names methods {unknown} not among {list(self.methods)}")
        if not map_weights and prob_weights is None:
            raise ValueError("give map_weights and/or prob_weights: the objective is empty")
        return self._pass(pixels, n_samples, seed, target, stream, start, map_weights, prob_weights)

    def loss_gradient(
        self,
        pixels: torch.Tensor,
        n_samples: int,
        seed: int,
        loss: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
        *,
        target: torch.Tensor | None = None,
        stream: int = ESTIMATION_STREAM,
        start: int = 0,
    ) -> tuple[torch.Tensor, SmoothedEstimate]:
        """Gradient of a *nonlinear* ``loss(maps, mean_softmax) -> N`` of the smoothed outputs.

        Two passes over the same samples (the chain rule, exactly): the first estimates the
        smoothed maps ``ĝ`` and softmax ``p̂`` without a graph; the weights
        ``w = ∂loss/∂ĝ``, ``u = ∂loss/∂p̂`` are taken there; the second pass is
        :meth:`gradient` with those weights. Returns ``(loss values, estimate with grad)``.
        """
        first = self.estimate(pixels, n_samples, seed, target=target, stream=stream, start=start)
        maps = {k: v.detach().requires_grad_(True) for k, v in first.maps.items()}
        probs = first.mean_softmax.detach().requires_grad_(True)
        with torch.enable_grad():
            values = loss(maps, probs)
            if values.dim() != 1 or values.shape[0] != pixels.shape[0]:
                raise ValueError(f"loss must return one value per image, got shape {tuple(values.shape)}")
            wanted = [*maps.values(), probs]
            grads = torch.autograd.grad(values.sum(), wanted, allow_unused=True)
        map_weights = {
            name: g for name, g in zip(maps, grads[:-1], strict=True) if g is not None
        }
        prob_weights = grads[-1]
        if not map_weights and prob_weights is None:
            raise ValueError("the loss does not depend on the smoothed maps or softmax")
        second = self._pass(
            pixels, n_samples, seed, first.target, stream, start, map_weights, prob_weights
        )
        return values.detach(), second

    def select_target(self, pixels: torch.Tensor, seed: int) -> torch.Tensor:
        """``N`` majority class of the ViT over ``n_select`` denoised selection samples
        (:func:`captum_fvit.attr.selection.select_classes`, as DDSAttention)."""
        pixels = check_image_batch(pixels, "pixels")
        inputs = self.normalization.from_pixels(pixels.detach())
        with model_lock(self.model):
            return select_classes(
                self.engine, self.model, inputs, self.n_select, self._seed(seed)
            ).classes

    # -- the pass -----------------------------------------------------------------------------
    @staticmethod
    def _seed(seed: object) -> int:
        seed = check_seed(seed)
        if seed is None:
            raise TypeError("seed must be an int: EOT samples are addressed by (seed, sample)")
        return seed

    def _pass(
        self,
        pixels: torch.Tensor,
        n_samples: int,
        seed: int,
        target: torch.Tensor | None,
        stream: int,
        start: int,
        map_weights: dict[str, torch.Tensor] | None,
        prob_weights: torch.Tensor | None,
        k: int | None = None,
    ) -> SmoothedEstimate:
        pixels = check_image_batch(pixels, "pixels")
        n_samples = check_count(n_samples, "n_samples")
        seed = self._seed(seed)
        start = check_count(start, "start", minimum=0)
        k = None if k is None else check_k(k)
        graph = map_weights is not None or prob_weights is not None
        objective = self._objective(map_weights or {}, prob_weights) if graph else None
        inputs = self.normalization.from_pixels(pixels.detach())
        estimates = _Estimates(pixels.shape[0], list(self.methods), k, pixels.device)
        with model_lock(self.model):
            target = self._target(pixels, seed, target)
            recorder = AttentionRecorder(self.model, layers=self._recorded, adapter=self.adapter)
            with recorder:
                grad = self.engine.run(
                    inputs,
                    range(start, start + n_samples),
                    seed,
                    lambda chunk: self._compute(recorder, chunk, target),
                    estimates.fold,
                    stream=stream,
                    graph=graph,
                    objective=objective,
                )
        return estimates.result(
            n_samples, pixels.dtype, None if grad is None else grad / n_samples, target
        )

    def _target(self, pixels: torch.Tensor, seed: int, target) -> torch.Tensor | None:
        n = pixels.shape[0]
        if target is None:
            return self.select_target(pixels, seed) if self._grad_methods else None
        target = torch.as_tensor(target, device=pixels.device).long().reshape(-1)
        if target.numel() == 1:
            target = target.expand(n)
        if target.numel() != n:
            raise ValueError(f"target has {target.numel()} entries for {n} images")
        return target

    @staticmethod
    def _objective(map_weights: dict[str, torch.Tensor], prob_weights: torch.Tensor | None):
        """``objective(chunk, (maps, logits))``: the chunk's part of ``J`` (:meth:`gradient`)."""

        def objective(chunk: Chunk, result) -> torch.Tensor:
            maps, logits = result
            index = chunk.input_index
            terms = []
            for name, weight in map_weights.items():
                h = normalize_maps(maps[name])
                terms.append((weight.to(h.device, h.dtype)[index] * h).sum())
            if prob_weights is not None:
                probs = _softmax(logits)
                terms.append((prob_weights.to(probs.device, probs.dtype)[index] * probs).sum())
            return sum(terms[1:], terms[0])

        return objective

    def _compute(
        self, recorder: AttentionRecorder, chunk: Chunk, target: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """ViT forward with attention recorded, then every method's raw token map."""
        accumulators = {
            name: method.accumulator(self.num_layers, self.cls_index, self._stages)
            for name, method in self.methods.items()
        }
        listener = _FanOut(accumulators, self._layers)
        recorder.listener = listener
        kept = keep_graph() if chunk.graph else contextlib.nullcontext()
        x = chunk.inputs
        if self._grad_methods and not chunk.graph:
            x = x.detach().requires_grad_(True)  # what the explainer does for ∂y/∂A
        try:
            with kept, torch.set_grad_enabled(chunk.graph or bool(self._grad_methods)):
                logits = logits_of(self.model(x))
                chunk.watch("model", logits)
                if self._grad_methods:
                    score = logits.gather(1, target[chunk.input_index][:, None]).sum()
                    self._attention_gradients(listener, score, chunk.graph)
                layout = recorder.layout(x.shape[-2:])
                maps = {name: acc.result(layout) for name, acc in accumulators.items()}
        finally:
            recorder.reset()
        for values in maps.values():
            chunk.watch("method", values)
        if not chunk.graph:
            return {k: v.detach() for k, v in maps.items()}, logits.detach()
        return maps, logits

    def _attention_gradients(self, listener: _FanOut, score: torch.Tensor, graph: bool) -> None:
        """Hand ``∂score/∂A`` of the recorded layers to the gradient methods (last layer
        first), with ``create_graph`` on the graph path (second-order gradients)."""
        layers = self._grad_layers
        recorded = [listener.recorded[layer] for layer in layers]
        try:
            grads = torch.autograd.grad(score, recorded, create_graph=graph, retain_graph=graph)
        except RuntimeError as err:
            raise RuntimeError(
                "cannot differentiate the logit with respect to the recorded attention of this "
                f"{type(self.model).__name__} ({err}); gradient methods in DifferentiableDDS "
                "need an adapter whose recorded probabilities lie on the forward path (timm, "
                "Hugging Face)"
            ) from None
        for layer, grad in reversed(list(zip(layers, grads, strict=True))):
            for name in self._grad_methods:
                if layer in self._layers[name]:
                    listener.accumulators[name].on_gradient(layer, grad)
