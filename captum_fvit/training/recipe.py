"""Training recipes of the bundled models: every hyper-parameter in one frozen dataclass each.

:class:`ViTRecipe` trains the classifier, :class:`DenoiserRecipe` the diffusion UNet and
:class:`EvalRecipe` says how the shipped metrics are measured. The defaults are the recipe of
the shipped weights; :func:`quick_recipes` gives a few-step variant that checks the pipeline
end to end in seconds. Both training loops use linear warm-up then cosine decay of the
learning rate (:func:`warmup_cosine`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data import SPLIT_SEEDS
from ..models.denoiser import DEFAULT_SCHEDULER_CONFIG, DEFAULT_UNET_CONFIG
from ..models.vit import DEFAULT_VIT_ARCHITECTURE, DEFAULT_VIT_KWARGS, VIT_MEAN, VIT_STD

__all__ = ["DenoiserRecipe", "EvalRecipe", "ViTRecipe", "quick_recipes", "recipe_dict", "warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based) of ``total``.

    Linear warm-up from ``1/warmup`` to 1 over the first ``warmup`` steps, then cosine decay
    from 1 to 0 at step ``total``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ViTRecipe:
    """How the bundled ViT is trained: cross-entropy on freshly rendered images, plus token labels.

    Besides the image label (on the class token's logits), every patch token is supervised
    by the benchmark's object mask ("token labelling", Jiang et al., NeurIPS 2021): a linear
    auxiliary head on the final patch tokens predicts the object's class for patches at least
    ``token_label_threshold`` inside the object and "background" for the others. This dense
    signal makes the ViT learn shapes from far fewer images; the auxiliary head is discarded,
    so the shipped model is a plain timm ``VisionTransformer``.

    Parameters
    ----------
    steps : int
        Optimiser steps; step ``s`` trains on images ``s·batch_size … (s+1)·batch_size − 1``
        of benchmark stream ``data_seed`` (every image is seen once).
    batch_size : int
    lr : float
        Peak AdamW learning rate.
    weight_decay : float
        AdamW decoupled weight decay (applied to every parameter).
    betas : (float, float)
        AdamW betas.
    warmup_steps : int
        Linear warm-up steps before the cosine decay.
    label_smoothing : float
    grad_clip : float
        Maximum global gradient norm.
    token_label_weight : float
        Weight of the token-label loss (0 disables it).
    token_label_threshold : float
        Fraction of a patch inside the object mask from which the patch is labelled with the
        object's class.
    finetune_steps : int
        Steps of a second stage (0: none): plain cross-entropy (no token labels) with a fresh
        AdamW on the images after those of the first stage.
    finetune_lr : float
        Peak learning rate of the second stage.
    finetune_warmup_steps : int
        Linear warm-up steps of the second stage (then cosine decay to 0).
    data_seed : int
        Benchmark stream of the training images (``SPLIT_SEEDS["train"]``).
    architecture : str
        timm architecture the model is derived from.
    model_kwargs : dict
        ``timm.create_model`` arguments (see :data:`~captum_fvit.models.vit.DEFAULT_VIT_KWARGS`).
    mean, std : tuple of float
        Input normalisation in [0, 1] pixel units.
    """

    steps: int = 6000
    batch_size: int = 64
    lr: float = 7e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 150
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    token_label_weight: float = 1.0
    token_label_threshold: float = 0.5
    finetune_steps: int = 1500
    finetune_lr: float = 1.5e-4
    finetune_warmup_steps: int = 50
    data_seed: int = SPLIT_SEEDS["train"]
    architecture: str = DEFAULT_VIT_ARCHITECTURE
    model_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_VIT_KWARGS))
    mean: tuple[float, ...] = VIT_MEAN
    std: tuple[float, ...] = VIT_STD


@dataclass(frozen=True)
class DenoiserRecipe:
    """How the bundled diffusion UNet is trained (standard DDPM ε-prediction loss).

    Each image ``x`` in [0, 1] becomes ``x0 = 2x − 1``; ``t`` is uniform on
    ``0 … t*(max_sigma)`` (:func:`~captum_fvit.denoise.timestep_for_sigma`, 259 for σ = 0.5
    with the linear schedule); ``x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε`` and the loss is
    ``‖unet(x_t, t) − ε‖²`` (mean over pixels).

    Parameters
    ----------
    steps : int
        Optimiser steps (images ``s·batch_size …`` of stream ``data_seed`` at step ``s``).
    batch_size : int
    lr : float
        Peak AdamW learning rate.
    weight_decay : float
    betas : (float, float)
    warmup_steps : int
    grad_clip : float
    max_sigma : float
        Largest pixel noise std (in [0, 1] pixel units) trained for.
    data_seed : int
        Benchmark stream of the training images.
    unet_config : dict
        ``UNet2DModel`` arguments.
    scheduler_config : dict
        ``DDPMScheduler`` arguments.
    """

    steps: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 25
    grad_clip: float = 1.0
    max_sigma: float = 0.5
    data_seed: int = SPLIT_SEEDS["train"]
    unet_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_UNET_CONFIG))
    scheduler_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULER_CONFIG))


@dataclass(frozen=True)
class EvalRecipe:
    """How the metrics written to the manifest are measured (on a fresh benchmark stream).

    Parameters
    ----------
    seed : int
        Benchmark stream (``SPLIT_SEEDS["test"]``; never used for training).
    accuracy_images, rollout_images, psnr_images : int
        Images for the accuracy, the rollout mass ratio and the denoising PSNR.
    sigma : float
        Pixel noise std of the PSNR measurement, in [0, 1] pixel units.
    noise_seed : int
        Seed of the PSNR noise.
    """

    seed: int = SPLIT_SEEDS["test"]
    accuracy_images: int = 3000
    rollout_images: int = 500
    psnr_images: int = 256
    sigma: float = 0.25
    noise_seed: int = 0


def quick_recipes() -> tuple[ViTRecipe, DenoiserRecipe, EvalRecipe]:
    """A few-step variant of every recipe: checks the pipeline end to end in seconds.

    The models it produces are not useful (near-chance accuracy, little denoising).
    """
    return (
        ViTRecipe(steps=4, batch_size=16, warmup_steps=1, finetune_steps=2, finetune_warmup_steps=1),
        DenoiserRecipe(steps=3, batch_size=4, warmup_steps=1),
        EvalRecipe(accuracy_images=48, rollout_images=8, psnr_images=4),
    )


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """A recipe as a JSON-serialisable dict (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(asdict(recipe))
