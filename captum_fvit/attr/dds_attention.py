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

from ..explain import TokenMapExplainer, TokenMapMethod
from ..explain.targets import TargetType, logits_of, resolve_target
from ..noise import random_seed
from ..smoothing import SELECTION_STREAM, Chunk, SmoothingEngine
from ..space import UPSAMPLE_MODES
from ..stats import ClassCounts, RunningMoments, TopKVotes
from .attention_map import InputType, forward_args_tuple, unpack_inputs
from .base import ViTAttribution

__all__ = ["DDSAttention", "DDSResult", "SMOOTHINGS"]

#: How token maps are smoothed.
SMOOTHINGS = ("mean", "vote")

def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """``h = a⁺ / Σ a⁺`` per row (all-zero rows stay zero): a [0, 1]-valued map summing to 1."""
    positive = maps.clamp(min=0)
    total = positive.sum(dim=1, keepdim=True)
    return positive / torch.where(total > 0, total, torch.ones_like(total))


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
        ``N`` class of the smoothed classifier (most frequent prediction).
    target : Tensor or None
        ``N`` explained class (class-specific methods), else ``None``.
    n_samples : int
        Noise samples per input.
    sigma : float
        Noise std in [0, 1] pixel units.
    t_star : int or None
        Diffusion timestep the denoiser started from (``None`` for non-diffusion denoisers).
    grid : tuple of int
        Patch grid ``(h, w)``.
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
    sigma: float
    t_star: int | None
    grid: tuple[int, int]
    seed: int

    @property
    def vote_frequency(self) -> torch.Tensor | None:
        """``votes / n_samples``: estimated ``P(token in top-k)``."""
        return None if self.votes is None else self.votes.double() / self.n_samples


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
        The model's input normalisation; default timm's ``pretrained_cfg``, else [0, 1].
    noise : {"gaussian", "laplace", "uniform"}, default "gaussian"
        Noise distribution (std σ); non-Gaussian noise is for empirical comparison only.
    n_select : int, default 32
        Samples (an independent noise stream) that pick the explained class of
        class-specific methods when ``target`` is ``None``.
    clamp : bool, default False
        Clamp denoised images to [0, 1].
    autocast : bool or torch.dtype, default True
        bf16 autocast on CUDA (``True``), a forced autocast dtype on any device, or off.
    upsample : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        How :meth:`attribute` spreads token values over pixels.
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
        n_select: int = 32,
        clamp: bool = False,
        autocast: bool | torch.dtype = True,
        upsample: str = "bilinear",
        adapter=None,
        **method_options: Any,
    ) -> None:
        super().__init__(model)
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        if smoothing == "vote" and k is None:
            raise ValueError("vote smoothing counts top-k membership: pass k (e.g. k=10)")
        if k is not None and int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        if int(n_select) < 1:
            raise ValueError(f"n_select must be at least 1, got {n_select}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
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
        self.n_samples = int(n_samples)
        self.n_select = int(n_select)
        self.smoothing = smoothing
        self.k = None if k is None else int(k)
        self.upsample = upsample
        self._grid: tuple[int, int] | None = None

    @property
    def grid(self) -> tuple[int, int] | None:
        """Patch grid ``(h, w)`` of the last call."""
        return self._grid

    @property
    def t_star(self) -> int | None:
        """Diffusion timestep used for this σ, if the denoiser is a diffusion model."""
        timestep = getattr(self.denoiser, "timestep", None)
        return int(timestep(self.sigma)) if callable(timestep) else None

    # -- the smoothed classifier ------------------------------------------------------------
    def smoothed_prediction(
        self,
        inputs: torch.Tensor,
        n_samples: int,
        seed: int,
        *,
        stream: int = SELECTION_STREAM,
        forward_args: tuple = (),
    ) -> torch.Tensor:
        """``N×K`` class counts of the model on ``n_samples`` denoised samples per input."""
        return self.engine.class_counts(self.model, inputs, n_samples, seed, stream, forward_args)

    # -- the smoothed explanation -----------------------------------------------------------
    def details(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        k: int | None = None,
        additional_forward_args: Any = None,
        n_samples: int | None = None,
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
            Extra positional arguments for the model.
        n_samples : int, optional
            Override the constructor's ``n_samples`` for this call.
        """
        images, _ = unpack_inputs(inputs)
        forward_args = forward_args_tuple(additional_forward_args)
        seed = random_seed() if seed is None else int(seed)
        n = self.n_samples if n_samples is None else int(n_samples)
        if n < 1:
            raise ValueError(f"n_samples must be at least 1, got {n}")
        k = self.k if k is None else int(k)
        n_inputs = images.shape[0]
        self.engine.check_inputs(images)

        explained = None
        if target is not None:
            with torch.no_grad():
                logits = logits_of(self.model(images[:1], *forward_args))
            explained = resolve_target(target, logits.expand(n_inputs, -1))
        elif self.method.class_specific:
            counts = self.smoothed_prediction(
                images, self.n_select, seed, forward_args=forward_args
            )
            explained = counts.argmax(dim=1)

        state: dict[str, Any] = {}
        classes = ClassCounts(n_inputs, images.device)

        def fold(chunk: Chunk, result) -> None:
            maps, logits = result
            if "moments" not in state:
                state["moments"] = RunningMoments(n_inputs, (maps.shape[1],), images.device)
                if k is not None:
                    state["votes"] = TopKVotes(n_inputs, maps.shape[1], k, images.device)
            state["moments"].update(chunk.input_index, normalize_maps(maps))
            if k is not None:
                state["votes"].update(chunk.input_index, maps)
            classes.update(chunk.input_index, logits)

        with self.explainer.recording() as run:

            def compute(chunk: Chunk):
                chunk_target = None if explained is None else explained[chunk.input_index]
                result = run(chunk.inputs, chunk_target, forward_args)
                state["layout"] = result.layout
                return result.maps, result.logits

            self.engine.run(images, n, seed, compute, fold)

        layout = state["layout"]
        self._grid = layout.grid
        moments = state["moments"]
        return DDSResult(
            mean=moments.mean.to(images.dtype),
            std=moments.std.to(images.dtype),
            variance=moments.variance,
            votes=state["votes"].counts if k is not None else None,
            k=k,
            class_counts=classes.counts,
            mean_softmax=classes.mean_softmax(moments.count).to(images.dtype),
            predicted=classes.counts.argmax(dim=1),
            target=explained,
            n_samples=n,
            sigma=self.sigma,
            t_star=self.t_star,
            grid=layout.grid,
            seed=seed,
        )

    def token_map(
        self,
        inputs: InputType,
        target: TargetType = None,
        seed: int | None = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor:
        """The ``N×P`` smoothed token map (``smoothing``: mean map or vote frequency)."""
        result = self.details(inputs, target, seed, None, additional_forward_args)
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
        images, as_tuple = unpack_inputs(inputs)
        maps = self.token_map(images, target, seed, additional_forward_args)
        pixels = self.explainer.to_pixels(
            maps.to(images.dtype), self._grid, images.shape[-2:], images.shape[1], self.upsample
        )
        return (pixels,) if as_tuple else pixels
