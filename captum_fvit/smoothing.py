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
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .denoise.base import check_sigma, denoiser_in_channels
from .denoise.identity import IdentityDenoiser
from .explain.targets import logits_of
from .noise import NOISE_KINDS, block_seed, draw_noise
from .space import Normalization, resolve_normalization
from .stats import ClassCounts

__all__ = ["Chunk", "SmoothingEngine", "SELECTION_STREAM"]

#: Noise stream of the samples that select a class (independent of the estimation samples).
SELECTION_STREAM = 1


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
        ``M×C×H×W`` denoised images in the model's normalisation.
    """

    input_index: torch.Tensor
    sample_index: torch.Tensor
    inputs: torch.Tensor


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
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.denoiser = denoiser
        self.sigma = check_sigma(sigma)
        self.normalization = normalization
        self.batch_size = int(batch_size)
        self.noise = noise
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
        n_samples: int,
        seed: int,
        stream: int = SELECTION_STREAM,
        forward_args: tuple = (),
    ) -> torch.Tensor:
        """``N×K`` counts of the class ``model`` predicts on ``n_samples`` denoised samples."""
        counts = ClassCounts(inputs.shape[0], inputs.device)

        def compute(chunk: Chunk) -> torch.Tensor:
            with torch.no_grad():
                return logits_of(model(chunk.inputs, *forward_args))

        self.run(
            inputs,
            n_samples,
            seed,
            compute,
            lambda chunk, logits: counts.update(chunk.input_index, logits),
            stream=stream,
        )
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

    def _autocast(self, device: torch.device):
        if isinstance(self.autocast, torch.dtype):
            return torch.autocast(device.type, dtype=self.autocast)
        if self.autocast and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast(device.type, enabled=False)

    def _chunk(
        self, pixels: torch.Tensor, seed: int, stream: int, start: int, stop: int
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
        generator = torch.Generator(device=device)
        generator.manual_seed(block_seed(seed, start, stream=1_000 + stream))
        with torch.no_grad():
            denoised = self.denoiser(noisy, self.sigma, generator)
        if denoised.shape != noisy.shape:
            raise ValueError(
                f"the denoiser returned shape {tuple(denoised.shape)} for inputs of shape "
                f"{tuple(noisy.shape)}; a denoiser must return images of the input's size"
            )
        denoised = denoised.to(pixels.dtype)
        if self.clamp:
            denoised = denoised.clamp(0, 1)
        return Chunk(input_index, sample_index, self.normalization.from_pixels(denoised))

    def run(
        self,
        inputs: torch.Tensor,
        n_samples: int,
        seed: int,
        compute: Callable[[Chunk], Any],
        fold: Callable[[Chunk, Any], None],
        *,
        stream: int = 0,
    ) -> None:
        """Run ``n_samples`` noise samples for every input.

        Parameters
        ----------
        inputs : Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        n_samples : int
            Noise samples per input (≥ 1).
        seed : int
            Seed of the noise sequence.
        compute : callable
            ``compute(chunk) -> result``: the expensive part (may run out of memory, then the
            chunk is halved and retried).
        fold : callable
            ``fold(chunk, result)``: folds a result into statistics (runs once per chunk).
        stream : int, default 0
            Independent noise sub-sequence (e.g. 1 for Cohen's selection samples).
        """
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        self.check_inputs(inputs)
        pixels = self.normalization.to_pixels(inputs.detach())
        total = int(n_samples) * pixels.shape[0]
        chunk_size = self.batch_size
        start = 0
        while start < total:
            stop = min(start + chunk_size, total)
            try:
                with self._autocast(pixels.device):
                    chunk = self._chunk(pixels, seed, stream, start, stop)
                    result = compute(chunk)
            except torch.OutOfMemoryError:
                if chunk_size == 1:
                    raise
                chunk_size = max(1, chunk_size // 2)
                if pixels.device.type == "cuda":
                    torch.cuda.empty_cache()
                if not self._warned_oom:
                    warnings.warn(
                        f"out of memory: continuing with chunks of {chunk_size} images "
                        "(pass a smaller batch_size to avoid the retry)",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self._warned_oom = True
                continue
            fold(chunk, result)
            start = stop
