"""Differentiable DDS: the smoothed map and the smoothed softmax as functions of the input.

DDS (THEORY §1) is ``g(x) = E_δ[h(D(x + δ))]`` with ``D`` the denoiser and ``h`` the
sum-normalised token map of the ViT on the denoised image; the smoothed classifier's soft
output is ``p̄(x) = E_δ[softmax f(D(x + δ))]``. Both are expectations over the noise, so their
gradients are expectations too (expectation over transformation, EOT):

    ``∇_x g_i(x) = E_δ[∇_x h_i(D(x + δ))]``,  estimated by ``(1/m) Σ_s ∇_x h_i(D(x + δ_s))``.

:class:`DifferentiableDDS` computes these estimates *through* the whole pipeline — pixel noise
→ denoiser (the one-shot UNet with autograd, never under ``no_grad``) → ViT with attention
recorded → the explanation methods of :mod:`captum_fvit.explain` run inside
:func:`~captum_fvit.explain.base.keep_graph` (gradient methods use second-order gradients:
``∂y/∂A`` is taken with ``create_graph=True``). Memory is bounded: the ``m·N`` (sample,
image) pairs are walked in chunks of ``chunk_size`` images, each chunk's gradient is taken and
added to a running sum, and its graph is freed before the next chunk.

Noise sample ``s`` is :func:`captum_fvit.noise.draw_noise` ``(seed, s, stream)``, exactly the
noise the smoothing engine uses, so with the same ``seed`` and ``stream=0`` the values (not
the gradients) equal :class:`~captum_fvit.DDSAttention`'s, and neither depends on
``chunk_size``. Several methods can share one set of denoised samples (one denoiser call and
one ViT forward per chunk), which is what the paper preset does.

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

from ..attention import AttentionAdapter, AttentionRecorder, find_adapter
from ..attr.dds_attention import normalize_maps
from ..denoise.base import check_sigma
from ..denoise.identity import IdentityDenoiser
from ..explain.base import TokenMapMethod, keep_graph, make_method
from ..explain.targets import logits_of
from ..noise import NOISE_KINDS, SampleNoise, block_seed, draw_noise
from ..smoothing import SELECTION_STREAM
from ..space import Normalization, resolve_normalization
from ..validation import check_count, check_seed

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
    """

    maps: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    mean_softmax: torch.Tensor
    class_counts: torch.Tensor
    n_samples: int
    grad: torch.Tensor | None
    target: torch.Tensor | None

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
    chunk_size : int, default 32
        Images per chunk through denoiser and ViT; peak memory is that of one chunk's
        forward and backward, whatever the number of samples.
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution (std σ).
    clamp : bool, default False
        Clamp denoised images to [0, 1] (as the smoothing engine's ``clamp``).
    n_select : int, default 32
        Samples (selection stream) choosing the class explained by class-specific methods
        when no ``target`` is given.
    adapter : AttentionAdapter, optional
        Force an attention adapter.

    Notes
    -----
    Runs in the models' own precision (no autocast): the EOT gradient is a small average of
    per-sample gradients and reduced precision would bias it.
    """

    def __init__(
        self,
        model: nn.Module,
        denoiser: Callable | None = None,
        methods: str | TokenMapMethod | Sequence[str | TokenMapMethod] = "rollout",
        sigma: float = 0.25,
        *,
        normalization: Normalization | None = None,
        chunk_size: int = 32,
        noise: str = "gaussian",
        clamp: bool = False,
        n_select: int = 32,
        adapter: AttentionAdapter | None = None,
    ) -> None:
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        if isinstance(methods, (str, TokenMapMethod)):
            methods = [methods]
        built = [make_method(m) for m in methods]
        if not built:
            raise ValueError("give at least one explanation method")
        names = [m.name for m in built]
        if len(set(names)) != len(names):
            raise ValueError(f"each method may appear once, got {names}")
        self.model = model
        self.denoiser = differentiable_denoiser(denoiser)
        self.methods: dict[str, TokenMapMethod] = dict(zip(names, built, strict=True))
        self.sigma = check_sigma(sigma)
        self.normalization = normalization or resolve_normalization(model)
        self.chunk_size = check_count(chunk_size, "chunk_size")
        self.noise = noise
        self.clamp = bool(clamp)
        self.n_select = check_count(n_select, "n_select")
        self.adapter = adapter if adapter is not None else find_adapter(model)
        self.num_layers = len(self.adapter.attention_modules(model))
        self.cls_index = self.adapter.cls_index(model)
        if self.cls_index is None:
            raise ValueError(
                f"{type(model).__name__} has no class token: the attention methods read its "
                "row; use a model with a class token"
            )
        self._layers = {n: set(m.layers(self.num_layers)) for n, m in self.methods.items()}
        self._grad_methods = [n for n, m in self.methods.items() if m.needs_gradients]

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
        stream: int = 0,
        start: int = 0,
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
        stream : int, default 0
            Noise stream (0 = the stream DDSAttention uses).
        start : int, default 0
            First sample index (EOT steps use disjoint sample ranges).
        """
        return self._pass(pixels, n_samples, seed, target, stream, start, None, None)

    def gradient(
        self,
        pixels: torch.Tensor,
        n_samples: int,
        seed: int,
        *,
        map_weights: dict[str, torch.Tensor] | None = None,
        prob_weights: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        stream: int = 0,
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
        stream: int = 0,
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
        """``N`` majority class of the ViT over ``n_select`` denoised selection samples."""
        counts = self._pass(
            pixels, self.n_select, seed, None, SELECTION_STREAM, 0, None, None, maps=False
        ).class_counts
        return counts.argmax(dim=1)

    # -- the pass -----------------------------------------------------------------------------
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
        *,
        maps: bool = True,
    ) -> SmoothedEstimate:
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4:
            raise ValueError("pixels must be an N×C×H×W tensor of images in [0, 1] pixel units")
        n_samples = check_count(n_samples, "n_samples")
        seed = check_seed(seed)
        if seed is None:
            raise TypeError("seed must be an int: EOT samples are addressed by (seed, sample)")
        start = check_count(start, "start", minimum=0)
        want_grad = map_weights is not None or prob_weights is not None
        n = pixels.shape[0]
        device = pixels.device
        leaf = pixels.detach().requires_grad_(want_grad)
        if maps and self._grad_methods and target is None:
            target = self.select_target(pixels.detach(), seed)
        if target is not None:
            target = torch.as_tensor(target, device=device).long().reshape(-1)
            if target.numel() == 1:
                target = target.expand(n)
            if target.numel() != n:
                raise ValueError(f"target has {target.numel()} entries for {n} images")
        method_names = list(self.methods) if maps else []
        sums: dict[str, torch.Tensor] = {}
        squares: dict[str, torch.Tensor] = {}
        prob_sum: torch.Tensor | None = None
        counts: torch.Tensor | None = None
        grad = torch.zeros_like(pixels) if want_grad else None
        layers = sorted(set().union(*(self._layers[m] for m in method_names))) if method_names else [
            self.num_layers - 1
        ]
        total = n_samples * n
        recorder = AttentionRecorder(self.model, layers=layers, adapter=self.adapter)
        with recorder:
            for chunk_start in range(0, total, self.chunk_size):
                chunk_stop = min(chunk_start + self.chunk_size, total)
                flat = torch.arange(chunk_start, chunk_stop, device=device)
                sample = flat // n + start
                image = flat % n
                chunk_maps, logits = self._chunk(
                    recorder, leaf, image, sample, seed, stream, target, method_names, want_grad,
                    chunk_start,
                )
                probs = logits.double().softmax(dim=1) if logits.dtype == torch.float64 else (
                    logits.float().softmax(dim=1)
                )
                if want_grad:
                    objective = torch.zeros((), dtype=leaf.dtype, device=device)
                    for name, weight in (map_weights or {}).items():
                        objective = objective + (weight[image].to(chunk_maps[name].dtype)
                                                 * chunk_maps[name]).sum()
                    if prob_weights is not None:
                        objective = objective + (prob_weights[image].to(probs.dtype) * probs).sum()
                    if objective.requires_grad:
                        (chunk_grad,) = torch.autograd.grad(objective, leaf)
                        grad += chunk_grad / n_samples
                with torch.no_grad():
                    for name in method_names:
                        h = chunk_maps[name].detach().double()
                        if name not in sums:
                            sums[name] = torch.zeros((n, h.shape[1]), dtype=torch.float64, device=device)
                            squares[name] = torch.zeros_like(sums[name])
                        sums[name].index_add_(0, image, h)
                        squares[name].index_add_(0, image, h * h)
                    p = probs.detach().double()
                    if prob_sum is None:
                        prob_sum = torch.zeros((n, p.shape[1]), dtype=torch.float64, device=device)
                        counts = torch.zeros((n, p.shape[1]), dtype=torch.long, device=device)
                    prob_sum.index_add_(0, image, p)
                    counts.index_add_(
                        0, image, torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).long()
                    )
        dtype = pixels.dtype
        means = {k: (v / n_samples).to(dtype) for k, v in sums.items()}
        variance = {}
        for k, v in sums.items():
            if n_samples > 1:
                var = (squares[k] - v * v / n_samples) / (n_samples - 1)
                variance[k] = var.clamp(min=0)
            else:
                variance[k] = torch.full_like(v, float("nan"))
        return SmoothedEstimate(
            maps=means,
            variance=variance,
            mean_softmax=(prob_sum / n_samples).to(dtype),
            class_counts=counts,
            n_samples=n_samples,
            grad=grad,
            target=target,
        )

    def _denoise(
        self, noisy: torch.Tensor, seed: int, stream: int, chunk_start: int, sample: torch.Tensor
    ) -> torch.Tensor:
        if getattr(self.denoiser, "accepts_sample_noise", False):
            generator: Any = SampleNoise(seed, sample, stream=2_000 + stream)
        else:
            generator = torch.Generator(device=noisy.device)
            generator.manual_seed(block_seed(seed, chunk_start, stream=1_000 + stream))
        denoised = self.denoiser(noisy, self.sigma, generator)
        if denoised.shape != noisy.shape:
            raise ValueError(
                f"the denoiser returned shape {tuple(denoised.shape)} for inputs of shape "
                f"{tuple(noisy.shape)}; a denoiser must return images of the input's size"
            )
        if noisy.requires_grad and not denoised.requires_grad:
            raise RuntimeError(
                "the denoiser cut the gradient (its output does not require grad): adaptive "
                "attacks need a denoiser that runs with autograd (DiffusionDenoiser is made "
                "differentiable automatically; a custom denoiser must not use torch.no_grad)"
            )
        denoised = denoised.to(noisy.dtype)
        return denoised.clamp(0, 1) if self.clamp else denoised

    def _chunk(
        self,
        recorder: AttentionRecorder,
        leaf: torch.Tensor,
        image: torch.Tensor,
        sample: torch.Tensor,
        seed: int,
        stream: int,
        target: torch.Tensor | None,
        method_names: list[str],
        want_grad: bool,
        chunk_start: int,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        first, last = int(sample.min()), int(sample.max()) + 1
        noise = draw_noise(
            seed, first, last, tuple(leaf.shape[1:]), self.sigma,
            device=leaf.device, kind=self.noise, stream=stream,
        ).to(leaf.dtype)
        accumulators = {
            name: self.methods[name].accumulator(self.num_layers, self.cls_index)
            for name in method_names
        }
        listener = _FanOut(accumulators, self._layers)
        recorder.listener = listener
        grad_methods = [m for m in method_names if m in self._grad_methods]
        graph = keep_graph() if want_grad else contextlib.nullcontext()
        try:
            with graph, torch.set_grad_enabled(want_grad or bool(grad_methods)):
                with torch.set_grad_enabled(want_grad):
                    noisy = leaf[image] + noise[sample - first]
                    denoised = self._denoise(noisy, seed, stream, chunk_start, sample)
                    inputs = self.normalization.from_pixels(denoised)
                logits = logits_of(self.model(inputs))
                if not torch.isfinite(logits).all():
                    raise ValueError("the model returned non-finite logits on denoised samples")
                if grad_methods:
                    layers = sorted(set().union(*(self._layers[m] for m in grad_methods)))
                    recorded = [listener.recorded[layer] for layer in layers]
                    score = logits.gather(1, target[image][:, None]).sum()
                    try:
                        grads = torch.autograd.grad(
                            score, recorded, create_graph=want_grad, retain_graph=True
                        )
                    except RuntimeError as err:
                        raise RuntimeError(
                            "cannot differentiate the logit with respect to the recorded "
                            f"attention of this {type(self.model).__name__} ({err}); gradient "
                            "methods in DifferentiableDDS need an adapter whose recorded "
                            "probabilities lie on the forward path (timm, Hugging Face)"
                        ) from None
                    for layer, g in reversed(list(zip(layers, grads, strict=True))):
                        for name in grad_methods:
                            if layer in self._layers[name]:
                                accumulators[name].on_gradient(layer, g)
                layout = recorder.layout(leaf.shape[-2:])
                maps = {name: normalize_maps(acc.result(layout)) for name, acc in accumulators.items()}
        finally:
            recorder.reset()
        for name, m in maps.items():
            if not torch.isfinite(m).all():
                raise ValueError(f"method {name!r} returned non-finite token maps")
        if not want_grad:
            logits = logits.detach()
            maps = {k: v.detach() for k, v in maps.items()}
        return maps, logits
