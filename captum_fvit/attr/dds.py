"""``DDS``: Denoised Diffusion Smoothing around any Captum attribution.

The denoised counterpart of Captum's ``NoiseTunnel``: instead of explaining noisy copies of
the input, it explains *denoised* noisy copies (noise in [0, 1] pixel space, one-shot
diffusion denoising) and averages the attributions with streaming statistics.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import Attribution, GradientAttribution, LayerAttribution
from captum.log import log_usage

from ..concurrency import model_lock
from ..model_io import (
    InputType,
    LogitsModel,
    TargetType,
    forward_args_tuple,
    index_batch_args,
)
from ..noise import random_seed
from ..smoothing import Chunk, SmoothingEngine
from ..stats import RunningMoments
from ..validation import check_count, check_seed
from .base import ViTAttribution, prepare_inputs
from .selection import explained_classes

__all__ = ["DDS", "DDSDetails"]


@dataclass
class DDSDetails:
    """What :meth:`DDS.details` measured, per input.

    Attributes
    ----------
    mean, std : Tensor
        Mean attribution and per-element standard deviation over the samples, both of the
        input's shape ``N×C×H×W``.
    target : Tensor
        ``N`` explained classes.
    n_samples : int
        Noise samples per input.
    seed : int
        Seed of the noise.
    """

    mean: torch.Tensor
    std: torch.Tensor
    target: torch.Tensor
    n_samples: int
    seed: int


def to_input_shape(result: torch.Tensor, inputs: torch.Tensor, name: str) -> torch.Tensor:
    """An attribution of ``inputs``' shape: spatial layer attributions (``M×c×h×w``) are
    upsampled bilinearly with Captum's ``LayerAttribution.interpolate`` and broadcast over the
    channels; anything else that is not input-shaped is refused."""
    if result.shape == inputs.shape:
        return result
    if result.dim() == 4 and result.shape[0] == inputs.shape[0] and result.shape[1] in (1, inputs.shape[1]):
        upsampled = LayerAttribution.interpolate(
            result, tuple(inputs.shape[-2:]), interpolate_mode="bilinear"
        )
        return upsampled.expand(inputs.shape).contiguous()
    raise ValueError(
        f"{name} returned attributions of shape {tuple(result.shape)} for inputs of shape "
        f"{tuple(inputs.shape)}. DDS averages attributions in the input's shape: spatial layer "
        "attributions (N×1×h×w, e.g. LayerGradCam on the patch embedding) are upsampled, but a "
        "token layer's attributions (N×T×D, e.g. a ViT block's norm1) have no pixel layout. "
        "Explain the patch embedding, use a layer with spatial output, or use DDSAttention for "
        "attention maps."
    )


class DDS(ViTAttribution):
    """Denoised Diffusion Smoothing of any Captum attribution.

    Parameters
    ----------
    attribution : captum.attr.Attribution
        The method to smooth (``Saliency(model)``, ``IntegratedGradients(model)``,
        ``LayerGradCam(model, model.patch_embed)``, an :class:`~captum_fvit.AttentionMap`,
        ...). Its ``forward_func`` must be the classifier; models that return a Hugging Face
        ``ImageClassifierOutput`` work (DDS gives the method a copy of itself whose
        ``forward_func`` returns the logits; the original object is not touched).
    denoiser : callable, optional
        ``denoiser(x_noisy, sigma, generator)`` in [0, 1] pixel units; ``None`` = no
        denoising (plain randomized smoothing).
    sigma : float, default 0.25
        Noise std in **[0, 1] pixel units**.
    n_samples : int, default 32
        Noise samples per input.
    batch_size : int, default 32
        Images per chunk handed to the wrapped attribution.
    input_mean, input_std : sequence of float, optional
        The model's normalisation (default the one the model carries, else [0, 1] with a
        warning).
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
    n_select : int, default 64
        Selection samples whose majority class is explained when ``target`` is ``None`` (the
        routine shared with :class:`DDSAttention` and :class:`FaithfulRegion`).
    clamp : bool, default False
    autocast : bool or torch.dtype, default True
        bf16 autocast on CUDA (``True``), a forced autocast dtype on any device, or off.
    progress : bool, default False
        Show a progress bar over the denoised images of each call.

    Notes
    -----
    Keyword arguments of :meth:`attribute` other than ``target``/``seed`` go to the wrapped
    method; tensors whose first dimension is the batch size ``N`` (baselines,
    ``additional_forward_args``) are indexed per sample, and ``additional_forward_args`` are
    also passed to DDS's own model calls (class selection). The result always has the
    input's shape (spatial layer attributions are upsampled, see :func:`to_input_shape`).
    """

    def __init__(
        self,
        attribution: Attribution,
        denoiser: Callable | None = None,
        sigma: float = 0.25,
        n_samples: int = 32,
        batch_size: int = 32,
        *,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        noise: str = "gaussian",
        n_select: int = 64,
        clamp: bool = False,
        autocast: bool | torch.dtype = True,
        progress: bool = False,
    ) -> None:
        if not isinstance(attribution, Attribution) or not callable(
            getattr(attribution, "attribute", None)
        ):
            raise TypeError(
                f"DDS wraps a Captum Attribution instance (e.g. Saliency(model)), got "
                f"{type(attribution).__name__}"
            )
        super().__init__(attribution.forward_func)
        self.n_samples = check_count(n_samples, "n_samples")
        self.n_select = check_count(n_select, "n_select")
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        self.progress = progress
        self.attribution = attribution
        self.model = attribution.forward_func
        # Captum methods expect a tensor from forward_func; HF models return an object with
        # `.logits`. A shallow copy with a logits-returning forward_func is used for the calls.
        self._method = copy.copy(attribution)
        self._method.forward_func = LogitsModel(self.model)
        self.engine = SmoothingEngine.for_model(
            self.model,
            denoiser,
            sigma,
            input_mean=input_mean,
            input_std=input_std,
            batch_size=batch_size,
            noise=noise,
            clamp=clamp,
            autocast=autocast,
        )
        self.denoiser = self.engine.denoiser
        self.normalization = self.engine.normalization
        self.sigma = self.engine.sigma

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution.multiplies_by_inputs

    def details(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        *,
        process_group=None,
        **kwargs: Any,
    ) -> DDSDetails:
        """Mean and standard deviation of the wrapped attribution over the denoised samples.

        Parameters are those of :meth:`attribute`; ``process_group`` splits the samples over
        the ranks of a ``torch.distributed`` group (statistics all-reduced).
        """
        prepared = prepare_inputs(inputs, self.model, self.normalization)
        images = prepared.images
        seed = random_seed() if seed is None else check_seed(seed)
        forward_args = forward_args_tuple(kwargs.get("additional_forward_args"))
        n_inputs = images.shape[0]
        self.engine.check_inputs(images)
        with model_lock(self.model):
            explained = self._explained_classes(images, target, seed, forward_args, process_group)
            moments = RunningMoments(n_inputs, tuple(images.shape[1:]), images.device)

            def compute(chunk: Chunk) -> torch.Tensor:
                chunk_kwargs = {
                    key: index_batch_args(value, n_inputs, chunk.input_index)
                    for key, value in kwargs.items()
                }
                x = chunk.inputs
                if isinstance(self._method, GradientAttribution):
                    x = x.detach().requires_grad_(True)  # what Captum would set itself
                result = self._method.attribute(
                    x, target=explained[chunk.input_index], **chunk_kwargs
                )
                if isinstance(result, tuple):
                    result = result[0]
                result = to_input_shape(result.detach(), x, type(self.attribution).__name__)
                chunk.watch("attribution", result)
                return result

            self.engine.run(
                images,
                self.n_samples,
                seed,
                compute,
                lambda chunk, result: moments.update(chunk.input_index, result),
                process_group=process_group,
                progress=self.progress,
            )
        moments.all_reduce(process_group)
        return DDSDetails(
            mean=moments.mean.to(prepared.dtype),
            std=moments.std.to(prepared.dtype),
            target=explained,
            n_samples=self.n_samples,
            seed=seed,
        )

    def _explained_classes(self, images, target, seed, forward_args, process_group):
        return explained_classes(
            self.engine, self.model, images, target, self.n_select, seed, forward_args,
            process_group=process_group, progress=self.progress,
        )  # fmt: skip

    @log_usage()
    def attribute(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> InputType:
        """Mean attribution of the wrapped method over denoised noisy copies of ``inputs``.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        target : int, sequence of int or Tensor, optional
            Class to explain; ``None`` = the smoothed classifier's prediction.
        seed : int, optional
            Seed of all noise draws.
        **kwargs
            Passed to the wrapped ``attribute`` (per-input tensors indexed per sample).

        Returns
        -------
        Tensor or tuple of one Tensor
            The mean attribution, with the input's shape (:meth:`details` also gives the
            per-element standard deviation).
        """
        as_tuple = isinstance(inputs, tuple)
        mean = self.details(inputs, target, seed, **kwargs).mean
        return (mean,) if as_tuple else mean
