"""The ensemble engine shared by everything that smooths: noise → denoise → model, chunked.

For ``N`` inputs and ``n`` noise samples the engine walks the ``n·N`` (sample, input) pairs in
sample-major order, in chunks of at most ``batch_size`` images. For each chunk it

1. converts the inputs from the model's normalisation to [0, 1] pixel units,
2. adds seeded pixel noise of std σ (:mod:`captum_fvit.noise`: sample ``s`` gets the same
   noise whatever the chunking and whatever the other inputs of the batch),
3. denoises (one-shot diffusion, identity, ...), optionally clamps to [0, 1],
4. converts back to the model's normalisation and hands the chunk to ``compute``
   (a ViT forward with attention recorded, any Captum attribution, ...),
5. folds ``compute``'s result into streaming statistics through ``fold``.

Nothing of size ``n`` is ever held: memory is flat in the number of samples. On CUDA the
denoiser and ``compute`` run under bf16 autocast (optional), and an out-of-memory error halves
the chunk and retries the same samples — which, the noise being chunk-independent, gives the
same result.

With ``graph=True`` the same walk keeps the autograd graph (the adaptive attacks'
expectation-over-transformation gradients, :class:`~captum_fvit.evaluate.DifferentiableDDS`):
the pixels are a leaf, the denoiser runs with autograd, ``objective(chunk, result)`` gives a
scalar whose gradient with respect to the pixels is added to a running sum chunk by chunk, and
each chunk's graph is freed before the next. That path runs in the models' own precision (no
autocast: reduced precision would bias a small average of per-sample gradients) and does not
retry on out-of-memory (pass a smaller ``batch_size``).

Noise streams come from :data:`captum_fvit.noise.NOISE_STREAMS`; the denoiser's own randomness
of stream ``s`` is :func:`~captum_fvit.noise.denoiser_stream` ``(s)``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .denoise.base import check_sigma, denoiser_in_channels
from .denoise.identity import IdentityDenoiser
from .errors import FiniteGuard
from .model_io import index_batch_args, logits_of
from .noise import (
    ESTIMATION_STREAM,
    NOISE_KINDS,
    SELECTION_STREAM,
    SampleNoise,
    denoiser_stream,
    draw_noise,
    stream_generator,
)
from .space import Normalization, resolve_normalization
from .stats import ClassCounts
from .validation import check_choice, check_count

#: ``SELECTION_STREAM`` is re-exported from :mod:`captum_fvit.noise` (where it is defined).
__all__ = ["Chunk", "SmoothingEngine", "SELECTION_STREAM", "shard_samples", "sample_range"]


@dataclass
class Chunk:
    """One batch of denoised samples.

    Attributes
    ----------
    input_index : Tensor
        ``M`` indices of the input each sample belongs to.
    sample_index : Tensor
        ``M`` noise-sample indices.
    inputs : Tensor
        ``M×C×H×W`` denoised images in the model's normalisation (with their autograd graph
        back to the pixels when ``graph``).
    guard : FiniteGuard
        The chunk's non-finite check (:meth:`watch`).
    graph : bool
        Whether the engine runs with the graph (``compute`` should then keep it).
    """

    input_index: torch.Tensor
    sample_index: torch.Tensor
    inputs: torch.Tensor
    guard: FiniteGuard
    graph: bool = False

    def watch(self, stage: str, values: torch.Tensor) -> None:
        """Have the engine check ``values`` (one row per image of the chunk) for NaN/inf
        before the chunk is folded in (``stage``: ``"model"``, ``"method"``, ...)."""
        self.guard.watch(stage, values)


def sample_range(samples: int | range) -> range:
    """``samples`` as a range of noise-sample indices (an int ``n`` means ``range(n)``)."""
    if isinstance(samples, range):
        if samples.step != 1 or len(samples) < 1 or samples.start < 0:
            raise ValueError(
                f"samples must be a non-empty range of sample indices ≥ 0 with step 1, got "
                f"{samples}"
            )
        return samples
    return range(check_count(samples, "n_samples"))


def shard_samples(samples: range, process_group) -> range:
    """The contiguous part of ``samples`` this rank runs (all of it without a group).

    Rank ``r`` of ``W`` takes ``samples[r·n//W : (r+1)·n//W]``: disjoint, covering, and
    each noise sample keeps its index, so the union over ranks is the one-process sample set.
    """
    if process_group is None:
        return samples
    import torch.distributed as dist

    world = dist.get_world_size(process_group)
    rank = dist.get_rank(process_group)
    if len(samples) < world:
        raise ValueError(
            f"{len(samples)} noise samples cannot be split over {world} ranks; use at least "
            "as many samples as ranks"
        )
    n = len(samples)
    return samples[rank * n // world : (rank + 1) * n // world]


class SmoothingEngine:
    """Runs the noise → denoise → ``compute`` ensemble in chunks.

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x_noisy, sigma, generator) -> x`` in [0, 1] pixel units
        (:class:`~captum_fvit.denoise.Denoiser`).
    sigma : float
        Noise std in [0, 1] pixel units (> 0).
    normalization : Normalization
        The model's input normalisation.
    batch_size : int, default 64
        Images per chunk (denoiser and model batch).
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution with std ``sigma``; only Gaussian noise can be certified.
    clamp : bool, default False
        Clamp denoised images to [0, 1] (THEORY §1: no clamping by default; diffusion
        denoisers already clip their output).
    autocast : bool or torch.dtype, default True
        ``True``: run denoiser and ``compute`` under bf16 autocast on CUDA (fp32 on CPU).
        A dtype (``torch.bfloat16``, ``torch.float16``) forces autocast to it on any device,
        CPU included; ``False`` runs in the models' own precision.
    """

    def __init__(
        self,
        denoiser: Callable,
        sigma: float,
        normalization: Normalization,
        *,
        batch_size: int = 64,
        noise: str = "gaussian",
        clamp: bool = False,
        autocast: bool = True,
    ) -> None:
        if not callable(denoiser):
            raise TypeError(
                f"denoiser must be callable as denoiser(x_noisy, sigma, generator), got "
                f"{type(denoiser).__name__}"
            )
        if not isinstance(clamp, bool):
            raise TypeError(f"clamp must be True or False, got {clamp!r}")
        if not isinstance(autocast, (bool, torch.dtype)):
            raise TypeError(
                f"autocast must be True, False or a torch.dtype (e.g. torch.bfloat16), got "
                f"{autocast!r}"
            )
        self.denoiser = denoiser
        self.sigma = check_sigma(sigma)
        self.normalization = normalization
        self.batch_size = check_count(batch_size, "batch_size")
        self.noise = check_choice(noise, "noise", NOISE_KINDS)
        self.clamp = clamp
        self.autocast = autocast
        self._warned_oom = False

    @classmethod
    def for_model(
        cls,
        model: Callable,
        denoiser: Callable | None,
        sigma: float,
        *,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        **options: Any,
    ) -> SmoothingEngine:
        """An engine for ``model``'s normalisation (``input_mean``/``input_std``, else timm's
        ``pretrained_cfg``, else [0, 1]); ``denoiser=None`` means no denoising."""
        normalization = resolve_normalization(model, input_mean, input_std)
        denoiser = denoiser if denoiser is not None else IdentityDenoiser()
        return cls(denoiser, sigma, normalization, **options)

    def class_counts(
        self,
        model: Callable,
        inputs: torch.Tensor,
        samples: int | range,
        seed: int,
        stream: int = SELECTION_STREAM,
        forward_args: tuple = (),
        *,
        process_group=None,
        progress: bool = False,
    ) -> torch.Tensor:
        """``N×K`` counts of the class ``model`` predicts on the denoised ``samples``
        (all-reduced over ``process_group``)."""
        counts = ClassCounts(inputs.shape[0], inputs.device)

        n_inputs = inputs.shape[0]

        def compute(chunk: Chunk) -> torch.Tensor:
            args = index_batch_args(forward_args, n_inputs, chunk.input_index)
            with torch.no_grad():
                logits = logits_of(model(chunk.inputs, *args))
            chunk.watch("model", logits)
            return logits

        self.run(
            inputs,
            samples,
            seed,
            compute,
            lambda chunk, logits: counts.update(chunk.input_index, logits),
            stream=stream,
            process_group=process_group,
            progress=progress,
        )
        counts.all_reduce(process_group)
        return counts.counts

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """Raise if the denoiser cannot take images with these channels."""
        channels = denoiser_in_channels(self.denoiser)
        if channels is not None and channels != inputs.shape[1]:
            raise ValueError(
                f"the denoiser takes {channels}-channel images but the inputs have "
                f"{inputs.shape[1]} channels; use a denoiser trained on {inputs.shape[1]}-channel "
                "images"
            )

    def _autocast(self, device: torch.device, graph: bool = False):
        if graph:  # EOT gradients in the models' own precision
            return torch.autocast(device.type, enabled=False)
        if isinstance(self.autocast, torch.dtype):
            return torch.autocast(device.type, dtype=self.autocast)
        if self.autocast and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(device.type, enabled=False)

    def _generator(
        self, seed: int, stream: int, start: int, sample_index: torch.Tensor, samples: tuple
    ):
        """The denoiser's source of randomness for one chunk.

        Denoisers that declare ``accepts_sample_noise`` get a :class:`SampleNoise`
        addressed by sample index (chunk-independent); others a generator seeded per chunk
        (by the chunk's first flat (sample, input) index ``start``).
        """
        if getattr(self.denoiser, "accepts_sample_noise", False):
            return SampleNoise(seed, sample_index, denoiser_stream(stream), sample_range=samples)
        per_chunk = denoiser_stream(stream, per_sample=False)
        return stream_generator(seed, per_chunk, start, sample_index.device)

    def _denoise(
        self, noisy: torch.Tensor, generator: Any, graph: bool
    ) -> torch.Tensor:
        with torch.enable_grad() if graph else torch.no_grad():
            denoised = self.denoiser(noisy, self.sigma, generator)
        if not isinstance(denoised, torch.Tensor) or denoised.shape != noisy.shape:
            shape = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised)
            raise ValueError(
                f"the denoiser returned {shape} for inputs of shape {tuple(noisy.shape)}; a "
                "denoiser must return images of the input's size"
            )
        if graph and not denoised.requires_grad:
            raise RuntimeError(
                "the denoiser cut the gradient (its output does not require grad): gradients "
                "through DDS need a denoiser that runs with autograd (a DiffusionDenoiser with "
                "differentiable=True; a custom denoiser must not use torch.no_grad)"
            )
        return denoised

    def _chunk(
        self, pixels: torch.Tensor, seed: int, stream: int, start: int, stop: int, graph: bool
    ) -> Chunk:
        n_inputs = pixels.shape[0]
        device = pixels.device
        flat = torch.arange(start, stop, device=device)
        sample_index = flat // n_inputs
        input_index = flat % n_inputs
        first_sample = start // n_inputs
        last_sample = (stop - 1) // n_inputs + 1
        noise = draw_noise(
            seed,
            first_sample,
            last_sample,
            tuple(pixels.shape[1:]),
            self.sigma,
            device=device,
            kind=self.noise,
            stream=stream,
        ).to(pixels.dtype)
        noisy = pixels[input_index] + noise[sample_index - first_sample]
        generator = self._generator(
            seed, stream, start, sample_index, (first_sample, last_sample)
        )
        denoised = self._denoise(noisy, generator, graph)
        guard = FiniteGuard(input_index, sample_index)
        guard.watch("denoiser", denoised)
        denoised = denoised.to(pixels.dtype)
        if self.clamp:
            denoised = denoised.clamp(0, 1)
        inputs = self.normalization.from_pixels(denoised)
        return Chunk(input_index, sample_index, inputs, guard, graph)

    def run(
        self,
        inputs: torch.Tensor,
        samples: int | range,
        seed: int,
        compute: Callable[[Chunk], Any],
        fold: Callable[[Chunk, Any], None],
        *,
        stream: int = ESTIMATION_STREAM,
        process_group=None,
        progress: bool = False,
        graph: bool = False,
        objective: Callable[[Chunk, Any], torch.Tensor | None] | None = None,
    ) -> torch.Tensor | None:
        """Run the noise samples ``samples`` for every input.

        Parameters
        ----------
        inputs : Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        samples : int or range
            Noise-sample indices: ``n`` means ``range(n)``; a range runs exactly those samples
            (sample ``s`` gets the same noise whatever else runs, so ranges can be split over
            calls, stopping times or ranks and give the same union).
        seed : int
            Seed of the noise sequence.
        compute : callable
            ``compute(chunk) -> result``: the expensive part (may run out of memory, then the
            chunk is halved and retried). It should pass what it produces through
            ``chunk.watch(stage, values)`` so that non-finite values stop the call.
        fold : callable
            ``fold(chunk, result)``: folds a result into statistics (runs once per chunk,
            after the non-finite check — one device sync per chunk).
        stream : int, default :data:`~captum_fvit.noise.ESTIMATION_STREAM`
            Independent noise sub-sequence (:data:`~captum_fvit.noise.NOISE_STREAMS`).
        process_group : torch.distributed.ProcessGroup, optional
            Split the samples over its ranks (:func:`shard_samples`); the caller all-reduces
            its statistics (and the gradient) afterwards.
        progress : bool, default False
            Show a progress bar over the denoised images (rank 0 only).
        graph : bool, default False
            Keep the autograd graph from the pixels of ``inputs`` through noise, denoiser and
            ``compute`` (in the models' own precision, no out-of-memory retry).
        objective : callable, optional
            With ``graph``: ``objective(chunk, result) -> scalar`` (or ``None``), evaluated
            after the non-finite check; its gradient with respect to the pixels is summed over
            the chunks, each chunk's graph freed before the next.

        Returns
        -------
        Tensor or None
            With ``graph``: the ``N×C×H×W`` sum over the chunks of ``∂objective/∂pixels``
            (pixels in [0, 1] units, the inputs' dtype); otherwise ``None``.

        Raises
        ------
        NonFiniteError
            When the denoiser or ``compute`` produced NaN or infinite values.
        """
        if not isinstance(graph, bool):
            raise TypeError(f"graph must be True or False, got {graph!r}")
        if graph != (objective is not None):
            raise ValueError(
                "graph=True accumulates the gradient of objective(chunk, result): pass both "
                "(or neither)"
            )
        samples = shard_samples(sample_range(samples), process_group)
        self.check_inputs(inputs)
        pixels = self.normalization.to_pixels(inputs.detach())
        gradient = _GradientSum(pixels, objective) if graph else None
        bar = _progress_bar(progress, len(samples) * pixels.shape[0], process_group)
        try:
            with torch.enable_grad() if graph else contextlib.nullcontext():
                self._walk(pixels, samples, seed, stream, compute, fold, gradient, bar)
        finally:
            if bar is not None:
                bar.close()
        return None if gradient is None else gradient.total

    def _walk(self, pixels, samples, seed, stream, compute, fold, gradient, bar) -> None:
        """Chunk → compute → (gradient) → fold over the flat (sample, input) indices."""
        graph = gradient is not None
        n_inputs = pixels.shape[0]
        start, total = samples.start * n_inputs, samples.stop * n_inputs
        batch_size = self.batch_size
        while start < total:
            stop = min(start + batch_size, total)
            try:
                with self._autocast(pixels.device, graph):
                    chunk = self._chunk(pixels, seed, stream, start, stop, graph)
                    result = compute(chunk)
            except torch.OutOfMemoryError:
                if graph or batch_size == 1:
                    raise
                batch_size = self._halved(batch_size, pixels.device)
                continue
            chunk.guard.check()
            if gradient is not None:
                gradient.add(chunk, result)
            fold(chunk, result)
            del chunk, result  # the chunk's graph goes before the next chunk's forward
            if bar is not None:
                bar.update(stop - start)
            start = stop

    def _halved(self, batch_size: int, device: torch.device) -> int:
        batch_size = max(1, batch_size // 2)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not self._warned_oom:
            warnings.warn(
                f"out of memory: continuing with chunks of {batch_size} images "
                "(pass a smaller batch_size to avoid the retry)",
                RuntimeWarning,
                stacklevel=4,
            )
            self._warned_oom = True
        return batch_size


class _GradientSum:
    """Running sum over chunks of ``∂objective/∂pixels`` (the graph path of the engine)."""

    def __init__(self, pixels: torch.Tensor, objective: Callable) -> None:
        self.pixels = pixels.requires_grad_(True)
        self.objective = objective
        self.total = torch.zeros_like(pixels)

    def add(self, chunk: Chunk, result: Any) -> None:
        value = self.objective(chunk, result)
        if value is None or not value.requires_grad:
            return
        if value.dim() != 0:
            raise ValueError(f"objective must return a scalar, got shape {tuple(value.shape)}")
        (grad,) = torch.autograd.grad(value, self.pixels, allow_unused=True)
        if grad is None:
            raise RuntimeError(
                "the objective does not depend on the input pixels through autograd: a stage "
                "of compute detached them (run it with the graph kept, e.g. inside keep_graph())"
            )
        self.total += grad


def _progress_bar(progress: bool, total: int, process_group):
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not progress:
        return None
    if process_group is not None:
        import torch.distributed as dist

        if dist.get_rank(process_group) != 0:
            return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="denoised samples", leave=False)
