"""Quality measures of the bundled models on fresh shapes-benchmark images.

* :func:`classification_accuracy` - top-1 accuracy of a classifier;
* :func:`rollout_mass_ratio` - how much of the attention-rollout mass lies on the object,
  relative to the object's share of the image (``> 1``: the map prefers the object);
* :func:`denoising_psnr` - PSNR of noisy and of denoised images at a pixel noise level σ;
* :func:`evaluate_bundle` - all three on one fresh stream against :data:`QUALITY_BARS`.

All images come from :func:`captum_fvit.data.render_batch` with the given ``seed``; use a
seed the models were not trained on (training uses ``SPLIT_SEEDS["train"] = 0``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import render_batch
from ..space import Normalization, resolve_normalization
from ..validation import check_count, check_sigma
from .recipe import EvalRecipe

__all__ = [
    "QUALITY_BARS",
    "classification_accuracy",
    "denoising_psnr",
    "evaluate_bundle",
    "psnr",
    "rollout_mass_ratio",
]

#: What the shipped bundle must reach on fresh images: ViT accuracy, rollout mass ratio
#: (mass on the object / object's area share) and the one-shot denoiser's PSNR gain at σ = 0.25.
QUALITY_BARS: dict[str, float] = {"accuracy": 0.95, "rollout_mass_ratio": 1.0, "psnr_gain_db": 6.0}


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def classification_accuracy(
    model: nn.Module,
    seed: int,
    n: int,
    *,
    image_size: int = 64,
    normalization: Normalization | None = None,
    batch_size: int = 250,
) -> float:
    """Top-1 accuracy on images ``0 … n−1`` of benchmark stream ``seed``.

    Parameters
    ----------
    model : nn.Module
        Classifier taking normalised ``N×3×H×W`` inputs (run in eval mode, restored after).
    seed : int
        Benchmark stream; use one the model was not trained on.
    n : int
        Number of images.
    image_size : int, default 64
    normalization : Normalization, optional
        Default: :func:`~captum_fvit.space.resolve_normalization` of ``model``.
    batch_size : int, default 250

    Returns
    -------
    float
        Fraction of correctly classified images, in [0, 1].
    """
    n = check_count(n, "n")
    batch_size = check_count(batch_size, "batch_size")
    norm = normalization or resolve_normalization(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for idx in _chunks(n, batch_size):
                batch = render_batch(seed, idx, image_size)
                logits = model(norm.from_pixels(batch.images))
                correct += int((logits.argmax(dim=1) == batch.labels).sum())
    finally:
        model.train(was_training)
    return correct / n


def rollout_mass_ratio(
    model: nn.Module,
    seed: int,
    n: int,
    *,
    image_size: int = 64,
    normalization: Normalization | None = None,
    batch_size: int = 100,
) -> dict[str, float]:
    """Share of the attention-rollout mass on the object versus the object's area share.

    For each image the rollout token map (``AttentionMap(model, "rollout").token_map``,
    ``N×P``) is normalised to sum 1; the object mask is average-pooled to the token grid
    (the fraction of each patch inside the object, ``m_p``). The mass on the object is
    ``Σ_p map_p m_p`` and the area share ``mean_p m_p``.

    Parameters
    ----------
    model : nn.Module
        A ViT captum-fvit can record attention from (eval mode, left unchanged).
    seed : int
        Benchmark stream; use one the model was not trained on.
    n : int
        Number of images.
    image_size : int, default 64
    normalization : Normalization, optional
        Default: :func:`~captum_fvit.space.resolve_normalization` of ``model``.
    batch_size : int, default 100

    Returns
    -------
    dict
        ``mass_in_mask`` (mean over images, in [0, 1]), ``mask_share`` (mean area share, in
        [0, 1]), ``ratio`` = ``mass_in_mask / mask_share`` (> 1 means the map concentrates on
        the object) and ``per_image_ratio`` (the mean of the per-image ratios).
    """
    from ..attr import AttentionMap

    n = check_count(n, "n")
    batch_size = check_count(batch_size, "batch_size")
    norm = normalization or resolve_normalization(model)
    explainer = AttentionMap(model, "rollout")
    masses, shares = [], []
    with torch.no_grad():
        for idx in _chunks(n, batch_size):
            batch = render_batch(seed, idx, image_size)
            maps = explainer.token_map(norm.from_pixels(batch.images)).double()
            h, w = explainer.token_grid(batch.images.shape)
            share = F.adaptive_avg_pool2d(batch.masks.double(), (h, w)).flatten(1)
            maps = maps / maps.sum(dim=1, keepdim=True)
            masses.append((maps * share).sum(dim=1))
            shares.append(share.mean(dim=1))
    mass = torch.cat(masses)
    area = torch.cat(shares)
    return {
        "mass_in_mask": float(mass.mean()),
        "mask_share": float(area.mean()),
        "ratio": float(mass.mean() / area.mean()),
        "per_image_ratio": float((mass / area).mean()),
    }


def psnr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1] pixel units (peak 1)."""
    mse = (estimate.double() - reference.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def denoising_psnr(
    denoiser: Any,
    seed: int,
    n: int,
    sigma: float = 0.25,
    *,
    noise_seed: int = 0,
    image_size: int = 64,
    batch_size: int = 64,
) -> dict[str, float]:
    """PSNR of noisy and denoised images at pixel noise ``sigma``.

    Each clean image ``x`` (in [0, 1]) gets ``x + sigma · z``, ``z ~ N(0, I)`` from a
    generator seeded with ``noise_seed`` (not clamped, as DDS feeds it); the denoiser is
    called as ``denoiser(x_noisy, sigma)``.

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x_noisy, sigma) -> x_hat`` in [0, 1] pixel units.
    seed : int
        Benchmark stream of the clean images; use one the denoiser was not trained on.
    n : int
        Number of images.
    sigma : float, default 0.25
        Noise std in [0, 1] pixel units.
    noise_seed : int, default 0
    image_size : int, default 64
    batch_size : int, default 64

    Returns
    -------
    dict
        ``sigma``, ``noisy_db`` and ``denoised_db`` (mean per-image PSNR, peak 1) and
        ``gain_db = denoised_db − noisy_db``.
    """
    n = check_count(n, "n")
    batch_size = check_count(batch_size, "batch_size")
    sigma = check_sigma(sigma)
    generator = torch.Generator().manual_seed(int(noise_seed))
    noisy_db, denoised_db = [], []
    for idx in _chunks(n, batch_size):
        clean = render_batch(seed, idx, image_size).images
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        with torch.no_grad():
            restored = denoiser(noisy, sigma)
        noisy_db.append(psnr(noisy, clean))
        denoised_db.append(psnr(restored, clean))
    noisy_mean = float(torch.cat(noisy_db).mean())
    denoised_mean = float(torch.cat(denoised_db).mean())
    if not (math.isfinite(noisy_mean) and math.isfinite(denoised_mean)):
        raise RuntimeError("the denoiser returned non-finite values")
    return {
        "sigma": float(sigma),
        "noisy_db": noisy_mean,
        "denoised_db": denoised_mean,
        "gain_db": denoised_mean - noisy_mean,
    }


def evaluate_bundle(
    model: nn.Module,
    denoiser: Any,
    recipe: EvalRecipe | None = None,
    *,
    normalization: Normalization | None = None,
    image_size: int = 64,
) -> dict[str, Any]:
    """Measure the quality bars on a fresh benchmark stream.

    Returns
    -------
    dict
        ``seed``; ``accuracy`` (with ``n``); ``rollout`` (see :func:`rollout_mass_ratio`,
        with ``n``); ``denoising`` (see :func:`denoising_psnr`, with ``n``); ``bars`` (the
        thresholds of :data:`QUALITY_BARS`) and ``passed`` (each bar met, and ``all``).
    """
    recipe = recipe or EvalRecipe()
    accuracy = classification_accuracy(
        model, recipe.seed, recipe.accuracy_images, image_size=image_size, normalization=normalization
    )
    rollout = rollout_mass_ratio(
        model, recipe.seed, recipe.rollout_images, image_size=image_size, normalization=normalization
    )
    denoising = denoising_psnr(
        denoiser, recipe.seed, recipe.psnr_images, recipe.sigma, noise_seed=recipe.noise_seed, image_size=image_size
    )
    passed = {
        "accuracy": accuracy >= QUALITY_BARS["accuracy"],
        "rollout_mass_ratio": rollout["ratio"] > QUALITY_BARS["rollout_mass_ratio"],
        "psnr_gain_db": denoising["gain_db"] >= QUALITY_BARS["psnr_gain_db"],
    }
    passed["all"] = all(passed.values())
    return {
        "seed": recipe.seed,
        "accuracy": {"value": accuracy, "n": recipe.accuracy_images},
        "rollout": {**rollout, "n": recipe.rollout_images},
        "denoising": {**denoising, "n": recipe.psnr_images, "noise_seed": recipe.noise_seed},
        "bars": dict(QUALITY_BARS),
        "passed": passed,
    }
