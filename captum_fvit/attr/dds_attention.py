"""``DDSAttention``: attention explanations smoothed by Denoised Diffusion Smoothing (DDS).

For each input and each of ``n_samples`` noise draws (THEORY §1): add Gaussian noise of std σ
in [0, 1] pixel space, denoise in one shot with a diffusion model, run the ViT on the denoised
image with its attention recorded, compute the method's token map ``a_s``, and fold it into
streaming statistics. The smoothed explanation is

* ``"mean"`` smoothing: the average of ``h_s = a_s⁺ / Σ a_s⁺`` (a probability vector over the
  patch tokens), the paper's smoothed attention;
* ``"vote"`` smoothing: ``P(token i is in the top-k of a_s)`` for a given ``k``.

The same denoised samples also give the smoothed classifier: the frequency of each predicted
class and the mean softmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.log import log_usage
from torch import nn

from ..attention.layout import TokenLayout
from ..concurrency import model_lock
from ..explain import TokenMapExplainer, TokenMapMethod
from ..model_io import (
    InputType,
    TargetType,
    forward_args_tuple,
    index_batch_args,
)
from ..noise import SELECTION_STREAM, random_seed
from ..sample_size import choose_n_samples
from ..smoothing import Chunk, SmoothingEngine, sample_range
from ..space import UPSAMPLE_MODES, tokens_to_pixels
from ..stats import ClassCounts, MapStatistics, normalize_maps
from ..validation import check_choice, check_count, check_k, check_seed
from .base import ViTAttribution, prepare_inputs, token_grid
from .selection import explained_classes, select_classes

__all__ = ["DDSAttention", "DDSResult", "SMOOTHINGS", "normalize_maps"]

#: How token maps are smoothed.
SMOOTHINGS = ("mean", "vote")

# ``normalize_maps`` (h = a⁺ / Σ a⁺) lives in :mod:`captum_fvit.stats`; re-exported here.


@dataclass
class DDSResult:
    """Everything one DDS pass measured, per input.

    Attributes
    ----------
    mean : Tensor
        ``N×P`` smoothed map: mean of the sum-normalised token maps ``h``.
    std : Tensor
        ``N×P`` per-token standard deviation of ``h`` over the samples.
    variance : Tensor
        ``N×P`` unbiased sample variance of ``h`` (float64, for confidence bounds).
    votes : Tensor or None
        ``N×P`` counts of samples in which the token was among the top ``k``.
    k : int or None
        The ``k`` of ``votes``.
    class_counts : Tensor
        ``N×K`` how often each class was predicted on the denoised samples.
    mean_softmax : Tensor
        ``N×K`` average softmax of the denoised samples.
    predicted : Tensor
        ``N`` class of the smoothed classifier (most frequent prediction among these samples).
    target : Tensor or None
        ``N`` explained class (class-specific methods), else ``None``.
    n_samples : int
        Noise samples per input (``len(samples)``).
    samples : range
        The noise-sample indices these statistics cover.
    sigma : float
        Noise std in [0, 1] pixel units.
    t_star : int or None
        Diffusion timestep the denoiser started from (``None`` for non-diffusion denoisers).
    layout : TokenLayout
        Prefix tokens, patch grid and patch size of the token maps.
    seed : int
        Seed of the noise.
    """

    mean: torch.Tensor
    std: torch.Tensor
    variance: torch.Tensor
    votes: torch.Tensor | None
    k: int | None
    class_counts: torch.Tensor
    mean_softmax: torch.Tensor
    predicted: torch.Tensor
    target: torch.Tensor | None
    n_samples: int
    samples: range
    sigma: float
    t_star: int | None
    layout: TokenLayout
    seed: int

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of the maps."""
        return self.layout.grid

    @property
    def vote_frequency(self) -> torch.Tensor | None:
        """``votes / n_samples``: estimated ``P(token in top-k)``."""
        return None if self.votes is None else self.votes.double() / self.n_samples

    def to_pixels(
        self, maps: torch.Tensor, image_size: Sequence[int], channels: int = 1, mode: str = "bilinear"
    ) -> torch.Tensor:
        """Spread ``N×P`` token values on this layout over ``N×channels×H×W`` pixels."""
        return tokens_to_pixels(maps, self.layout, image_size, channels, mode)


class _Statistics:
    """Streaming statistics of one DDS call (per call, never stored on the attribution)."""

    def __init__(self, n_inputs: int, k: int | None, device) -> None:
        self.maps = MapStatistics(n_inputs, k, device)
        self.classes = ClassCounts(n_inputs, device)
        self.layout: TokenLayout | None = None

    def fold(self, chunk: Chunk, result: tuple[torch.Tensor, torch.Tensor]) -> None:
        maps, logits = result
        self.maps.update(chunk.input_index, maps)
        self.classes.update(chunk.input_index, logits)

    def all_reduce(self, process_group) -> None:
        self.maps.all_reduce(process_group)
        self.classes.all_reduce(process_group)


class DDSAttention(ViTAttribution):
    """Attention explanation of a ViT smoothed by Denoised Diffusion Smoothing.

    Parameters
    ----------
    model : nn.Module
        A supported ViT classifier in ``eval()`` mode (timm, torchvision, Hugging Face, or a
        registered adapter). Left exactly as it was after every call.
    denoiser : callable, optional
        ``denoiser(x_noisy, sigma, generator)`` in [0, 1] pixel units, e.g. a
        :class:`~captum_fvit.denoise.DiffusionDenoiser`. ``None`` uses
        :class:`~captum_fvit.denoise.IdentityDenoiser`: plain randomized smoothing without
        denoising (the paper's "w/o denoise" ablation).
    method : str or TokenMapMethod, default "rollout"
        ``"raw"``, ``"rollout"``, ``"grad_rollout"`` or ``"attn_gradcam"``.
    sigma : float, default 0.25
        Noise std in **[0, 1] pixel units** (> 0).
    n_samples : int, default 64
        Noise samples per input.
    batch_size : int, default 64
        Images per chunk through denoiser and ViT (memory is flat in ``n_samples``).
    smoothing : {"mean", "vote"}, default "mean"
        What :meth:`attribute` returns: the mean normalised map, or top-``k`` vote
        frequencies.
    k : int, optional
        Top-k size for vote smoothing (required when ``smoothing="vote"``).
    input_mean, input_std : sequence of float, optional
        The model's input normalisation; default the one the model carries (timm's
        ``pretrained_cfg``), else [0, 1] with a warning.
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution (std σ); non-Gaussian noise is for empirical comparison only.
    n_select : int, default 64
        Selection samples (an independent noise stream) whose majority class is explained
        by class-specific methods when ``target`` is ``None`` — the same routine and the
        same count name as :class:`FaithfulRegion` and :class:`DDS`, so that with the same
        seed they explain and certify the same class.
    clamp : bool, default False
        Clamp denoised images to [0, 1].
    autocast : bool or torch.dtype, default True
        bf16 autocast on CUDA (``True``), a forced autocast dtype on any device, or off.
    upsample : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        How :meth:`attribute` spreads token values over pixels.
    progress : bool, default False
        Show a progress bar over the denoised images of each call.
    adapter : AttentionAdapter, optional
        Force an attention adapter instead of looking one up.
    **method_options
        Options of the explanation method (``head_fusion``, ``start_layer``, ``layer``).

    Notes
    -----
    Target: an explicit ``target`` wins. Otherwise class-specific methods explain the class
    the *smoothed* classifier predicts — the majority class over ``n_select`` denoised samples
    drawn from an independent noise stream; ``"raw"``/``"rollout"`` need no target.

    Randomness: ``seed`` (an int) fixes every noise draw; the same seed gives the same result
    bit for bit on the same device, and noise sample ``s`` does not depend on
    ``batch_size`` or on the other inputs of the batch. Without a seed one is drawn from
    torch's global generator.

    Errors: NaN or infinite values from the denoiser, the model or the method stop the call
    with :class:`~captum_fvit.errors.NonFiniteError` naming the stage and the input.

    Threads: the object holds configuration only; calls on one model from several threads
    run one after the other (:mod:`captum_fvit.concurrency`) and give the sequential results.

    Scaling out: ``process_group=`` splits each input's samples over the ranks of a
    ``torch.distributed`` group and all-reduces the statistics; every rank gets the result.
    """

    def __init__(
        self,
        model: nn.Module,
        denoiser: Callable | None = None,
        method: str | TokenMapMethod = "rollout",
        sigma: float = 0.25,
        n_samples: int = 64,
        batch_size: int = 64,
        *,
        smoothing: str = "mean",
        k: int | None = None,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        noise: str = "gaussian",
        n_select: int = 64,
        clamp: bool = False,
        autocast: bool | torch.dtype = True,
        upsample: str = "bilinear",
        progress: bool = False,
        adapter: Any = None,
        **method_options: Any,
    ) -> None:
        super().__init__(model)
        self.smoothing = check_choice(smoothing, "smoothing", SMOOTHINGS)
        if smoothing == "vote" and k is None:
            raise ValueError("vote smoothing counts top-k membership: pass k (e.g. k=10)")
        self.k = None if k is None else check_k(k)
        self.n_samples = check_count(n_samples, "n_samples")
        self.n_select = check_count(n_select, "n_select")
        self.upsample = check_choice(upsample, "upsample", UPSAMPLE_MODES)
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        self.progress = progress
        self.model = model
        self.explainer = TokenMapExplainer(model, method, adapter=adapter, **method_options)
        self.method = self.explainer.method
        self.engine = SmoothingEngine.for_model(
            model,
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
    def t_star(self) -> int | None:
        """Diffusion timestep used for this σ, if the denoiser is a diffusion model."""
        timestep = getattr(self.denoiser, "timestep", None)
        return int(timestep(self.sigma)) if callable(timestep) else None

    def token_grid(self, image_size: Sequence[int]) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of the token maps for an ``(H, W)`` image (no model run)."""
        return token_grid(self.explainer, image_size)

    # -- the smoothed classifier ------------------------------------------------------------
    def select(
        self,
        inputs: InputType,
        seed: int,
        additional_forward_args: Any = None,
        *,
        process_group=None,
    ) -> torch.Tensor:
        """``N`` majority classes over ``n_select`` selection samples (what class-specific
        methods explain when ``target`` is ``None``)."""
        prepared = prepare_inputs(inputs, self.model, self.normalization)
        seed = check_seed(seed)
        with model_lock(self.model):
            return select_classes(
                self.engine,
                self.model,
                prepared.images,
                self.n_select,
                seed,
                forward_args_tuple(additional_forward_args),
                process_group=process_group,
            ).classes

    def smoothed_prediction(
        self,
        inputs: torch.Tensor,
        n_samples: int | range,
        seed: int,
        *,
        stream: int = SELECTION_STREAM,
        forward_args: tuple = (),
        process_group=None,
    ) -> torch.Tensor:
        """``N×K`` class counts of the model on ``n_samples`` denoised samples per input
        (``stream``: :data:`~captum_fvit.noise.SELECTION_STREAM`, the default, for the
        selection samples; :data:`~captum_fvit.noise.ESTIMATION_STREAM` for the estimation
        samples)."""
        prepared = prepare_inputs(inputs, self.model, self.normalization)
        seed = check_seed(seed)
        with model_lock(self.model):
            return self.engine.class_counts(
                self.model,
                prepared.images,
                n_samples,
                seed,
                stream,
                forward_args,
                process_group=process_group,
                progress=self.progress,
            )

    # -- the smoothed explanation -----------------------------------------------------------
    def details(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        k: int | None = None,
        additional_forward_args: Any = None,
        n_samples: int | None = None,
        *,
        samples: range | None = None,
        process_group=None,
        progress: bool | None = None,
    ) -> DDSResult:
        """Run DDS and return every statistic (:class:`DDSResult`).

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        target : int, sequence of int or Tensor, optional
            Class to explain (class-specific methods); ``None`` = smoothed prediction.
        seed : int, optional
            Seed of all noise draws (pass an int: Captum's metrics deep-copy kwargs).
        k : int, optional
            Count top-``k`` votes (defaults to the constructor's ``k``).
        additional_forward_args : Any, optional
            Extra positional arguments for the model (per-input tensors are indexed per
            sample, as Captum does).
        n_samples : int, optional
            Run samples ``0 .. n_samples-1`` instead of the constructor's ``n_samples``.
        samples : range, optional
            Run exactly these noise-sample indices (e.g. ``range(1000, 2000)`` to extend an
            earlier run of ``range(1000)``); not together with ``n_samples``.
        process_group : torch.distributed.ProcessGroup, optional
            Split the samples over the group's ranks; statistics are all-reduced.
        progress : bool, optional
            Override the constructor's ``progress`` for this call.
        """
        images = prepare_inputs(inputs, self.model, self.normalization).images
        return self._checked_details(
            images, target, seed, k, additional_forward_args, n_samples, samples, process_group,
            progress,
        )  # fmt: skip

    def _checked_details(
        self, images, target, seed, k, additional_forward_args, n_samples, samples, process_group,
        progress,
    ) -> DDSResult:  # fmt: skip
        """:meth:`details` on inputs already prepared (the other arguments are checked here)."""
        forward_args = forward_args_tuple(additional_forward_args)
        seed = random_seed() if seed is None else check_seed(seed)
        if n_samples is not None and samples is not None:
            raise ValueError("pass n_samples or samples (a range of sample indices), not both")
        if samples is not None:
            if not isinstance(samples, range):
                raise TypeError(f"samples must be a range of sample indices, got {samples!r}")
            samples = sample_range(samples)
        else:
            samples = range(self.n_samples if n_samples is None else check_count(n_samples, "n_samples"))
        k = self.k if k is None else check_k(k)
        if k is not None:
            check_k(k, self.token_count(images.shape[-2:]))
        progress = self.progress if progress is None else progress
        self.engine.check_inputs(images)
        with model_lock(self.model):
            explained = self._explained_classes(
                images, target, seed, forward_args, process_group, progress
            )
            return self.details_prepared(
                images, explained, seed, k, forward_args, samples, process_group, progress
            )

    def details_prepared(
        self,
        images: torch.Tensor,
        explained: torch.Tensor | None,
        seed: int,
        k: int | None,
        forward_args: tuple,
        samples: range,
        process_group=None,
        progress: bool = False,
    ) -> DDSResult:
        """:meth:`details` without argument checks, for callers that checked them already.

        ``images`` are the model-space batch as :meth:`details` prepares it, ``explained``
        the ``N`` classes to explain (``None`` for class-agnostic methods), ``seed`` an int,
        ``forward_args`` a tuple and ``samples`` a range of noise-sample indices. Validation
        runs once per public call: :class:`~captum_fvit.FaithfulRegion` checks its inputs once
        and then draws every look of a sequential test through this method.
        """
        with model_lock(self.model):
            stats = self._run(
                images, samples, seed, explained, forward_args, k, process_group, progress
            )
        moments = stats.maps.moments
        return DDSResult(
            mean=moments.mean.to(images.dtype),
            std=moments.std.to(images.dtype),
            variance=moments.variance,
            votes=stats.maps.vote_counts,
            k=k,
            class_counts=stats.classes.counts,
            mean_softmax=stats.classes.mean_softmax(moments.count).to(images.dtype),
            predicted=stats.classes.counts.argmax(dim=1),
            target=explained,
            n_samples=len(samples),
            samples=samples,
            sigma=self.sigma,
            t_star=self.t_star,
            layout=stats.layout,
            seed=seed,
        )

    def samples_for_stability(
        self,
        inputs: InputType,
        k: int,
        stability: float = 0.9,
        *,
        target: TargetType = None,
        seed: int | None = None,
        additional_forward_args: Any = None,
        n_max: int = 1 << 16,
    ) -> torch.Tensor:
        """``N`` sample sizes at which two DDS runs with *independent* seeds are predicted
        to agree on the top-``k`` tokens with mean overlap ``stability``.

        A pilot run with the configured ``n_samples`` gives each token's mean and variance
        (streamed anyway); :func:`captum_fvit.sample_size.choose_n_samples` turns them into
        the smallest ``n`` whose simulated seed-to-seed overlap reaches ``stability``. It treats
        tokens as independent, which is optimistic for sum-normalised maps: ask for a little
        more than you need and check with two seeds. Mean smoothing only (the statistic
        whose variance is streamed).
        """
        k = check_k(k)
        if self.n_samples < 2:
            raise ValueError("the pilot run needs n_samples ≥ 2 for a variance")
        pilot = self.details(inputs, target, seed, None, additional_forward_args)
        return choose_n_samples(pilot.mean, pilot.variance, k, stability, n_max=n_max)

    def token_count(self, image_size: Sequence[int]) -> int:
        """Number of patch tokens of the maps for an ``(H, W)`` image."""
        h, w = self.token_grid(image_size)
        return h * w

    def _explained_classes(
        self, images, target, seed, forward_args, process_group, progress
    ) -> torch.Tensor | None:
        if target is None and not self.method.class_specific:
            return None
        return explained_classes(
            self.engine, self.model, images, target, self.n_select, seed, forward_args,
            process_group=process_group, progress=progress,
        )  # fmt: skip

    def _run(self, images, samples, seed, explained, forward_args, k, process_group, progress):
        n_inputs = images.shape[0]
        stats = _Statistics(n_inputs, k, images.device)
        with self.explainer.recording() as run:

            def compute(chunk: Chunk):
                chunk_target = None if explained is None else explained[chunk.input_index]
                args = index_batch_args(forward_args, n_inputs, chunk.input_index)
                result = run(chunk.inputs, chunk_target, args)
                chunk.watch("model", result.logits)
                chunk.watch("method", result.maps)
                stats.layout = result.layout
                return result.maps, result.logits

            self.engine.run(
                images,
                samples,
                seed,
                compute,
                stats.fold,
                process_group=process_group,
                progress=progress,
            )
        stats.all_reduce(process_group)
        return stats

    def token_map(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """The ``N×P`` smoothed token map (``smoothing``: mean map or vote frequency), row-major
        over :meth:`token_grid`; :meth:`details` returns it with its layout."""
        result = self.details(inputs, target, seed, None, additional_forward_args)
        return self._smoothed(result)

    def _smoothed(self, result: DDSResult) -> torch.Tensor:
        if self.smoothing == "vote":
            return result.vote_frequency.to(result.mean.dtype)
        return result.mean

    @log_usage()
    def attribute(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        additional_forward_args: Any = None,
    ) -> InputType:
        """Smoothed attribution with exactly the shape of ``inputs``.

        Parameters
        ----------
        inputs : Tensor or tuple of one Tensor
            ``N×C×H×W`` batch in the model's normalisation.
        target : int, sequence of int or Tensor, optional
            Class to explain (class-specific methods); ``None`` = smoothed prediction.
        seed : int, optional
            Seed of all noise draws; fix it to measure the explanation, not Monte-Carlo noise.
        additional_forward_args : Any, optional
            Extra positional arguments for the model.
        """
        prepared = prepare_inputs(inputs, self.model, self.normalization)
        images = prepared.images
        result = self._checked_details(
            images, target, seed, None, additional_forward_args, None, None, None, None
        )
        pixels = result.to_pixels(
            self._smoothed(result), images.shape[-2:], images.shape[1], self.upsample
        )
        return prepared.wrap(pixels)
