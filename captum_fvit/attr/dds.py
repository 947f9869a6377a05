"""``DDS``: Denoised Diffusion Smoothing around any Captum attribution.

The denoised counterpart of Captum's ``NoiseTunnel``: instead of explaining noisy copies of
the input, it explains *denoised* noisy copies (noise in [0, 1] pixel space, one-shot
diffusion denoising) and averages the attributions with streaming statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import Attribution, GradientAttribution
from captum.log import log_usage

from ..explain.targets import TargetType, logits_of, resolve_target
from ..noise import random_seed
from ..smoothing import SELECTION_STREAM, Chunk, SmoothingEngine
from ..stats import RunningMoments
from .attention_map import InputType, unpack_inputs
from .base import ViTAttribution

__all__ = ["DDS"]


def _index_batch_args(value: Any, n_inputs: int, index: torch.Tensor) -> Any:
    """Select the rows of per-input tensors (first dim ``N``) for a chunk; pass the rest."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n_inputs:
        return value[index]
    if isinstance(value, tuple):
        return tuple(_index_batch_args(v, n_inputs, index) for v in value)
    return value


class DDS(ViTAttribution):
    """Denoised Diffusion Smoothing of any Captum attribution.

    Parameters
    ----------
    attribution : captum.attr.Attribution
        The method to smooth (``Saliency(model)``, ``IntegratedGradients(model)``,
        ``LayerGradCam(model, layer)``, an :class:`~captum_fvit.AttentionMap`, ...). Its
        ``forward_func`` must be the classifier (used to pick the class when ``target`` is
        ``None``).
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
        The model's normalisation (default timm's ``pretrained_cfg``, else [0, 1]).
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
    n_select : int, default 32
        Samples that pick the smoothed prediction when ``target`` is ``None``.
    clamp : bool, default False
    autocast : bool or torch.dtype, default True
        bf16 autocast on CUDA (``True``), a forced autocast dtype on any device, or off.

    Notes
    -----
    Keyword arguments of :meth:`attribute` other than ``target``/``seed`` go to the wrapped
    method; tensors whose first dimension is the batch size ``N`` (baselines,
    ``additional_forward_args``) are indexed per sample.
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
        n_select: int = 32,
        clamp: bool = False,
        autocast: bool | torch.dtype = True,
    ) -> None:
        if not isinstance(attribution, Attribution) or not callable(
            getattr(attribution, "attribute", None)
        ):
            raise TypeError(
                f"DDS wraps a Captum Attribution instance (e.g. Saliency(model)), got "
                f"{type(attribution).__name__}"
            )
        super().__init__(attribution.forward_func)
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        if int(n_select) < 1:
            raise ValueError(f"n_select must be at least 1, got {n_select}")
        self.attribution = attribution
        self.engine = SmoothingEngine.for_model(
            attribution.forward_func,
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
        self.n_samples = int(n_samples)
        self.n_select = int(n_select)
        self.last_std: torch.Tensor | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return self.attribution.multiplies_by_inputs

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
            The mean attribution (shape of the wrapped method's output); the per-element
            standard deviation over samples is kept in :attr:`last_std`.
        """
        images, as_tuple = unpack_inputs(inputs)
        seed = random_seed() if seed is None else int(seed)
        n_inputs = images.shape[0]
        if target is None:
            explained = self.engine.class_counts(
                self.forward_func, images, self.n_select, seed, SELECTION_STREAM
            ).argmax(dim=1)
        else:
            with torch.no_grad():
                logits = logits_of(self.forward_func(images[:1]))
            explained = resolve_target(target, logits.expand(n_inputs, -1))

        state: dict[str, RunningMoments] = {}

        def compute(chunk: Chunk) -> torch.Tensor:
            chunk_kwargs = {
                key: _index_batch_args(value, n_inputs, chunk.input_index)
                for key, value in kwargs.items()
            }
            inputs = chunk.inputs
            if isinstance(self.attribution, GradientAttribution):
                inputs = inputs.detach().requires_grad_(True)  # what Captum would set itself
            result = self.attribution.attribute(
                inputs, target=explained[chunk.input_index], **chunk_kwargs
            )
            if isinstance(result, tuple):
                result = result[0]
            return result.detach()

        def fold(chunk: Chunk, result: torch.Tensor) -> None:
            if "moments" not in state:
                state["moments"] = RunningMoments(n_inputs, tuple(result.shape[1:]), images.device)
            state["moments"].update(chunk.input_index, result)

        self.engine.run(images, self.n_samples, seed, compute, fold)
        moments = state["moments"]
        self.last_std = moments.std.to(images.dtype)
        mean = moments.mean.to(images.dtype)
        return (mean,) if as_tuple else mean
