"""Training the bundled default: the ViT classifier and the diffusion denoiser, on this CPU.

``train_default(out_dir)`` reproduces the shipped bundle: it trains the ViT
(:func:`train_vit`: cross-entropy plus token labels from the object masks, then a short plain
fine-tuning stage, :func:`finetune_vit`) and the UNet (:func:`train_denoiser`) on freshly
rendered shapes-benchmark images, measures their quality on a fresh benchmark stream (:mod:`.quality`) and writes the
weights and ``manifest.json`` (:mod:`.manifest`) into ``out_dir``, which
:func:`~captum_fvit.models.load_default` then loads with ``path=out_dir``.

Determinism: every random number comes from ``seed`` (model initialisation through the
global torch RNG, diffusion timesteps and noise through a seeded generator) and the training
images are a fixed function of the step. On the CPU a run is bit-for-bit reproducible with
the same ``threads``, torch version and machine; another thread count changes the order of
floating-point reductions and so the last bits of the weights (the metrics do not move
noticeably).

Cost: the shipped recipe needs about an hour on one CPU core (ViT ≈ 44 min, UNet ≈ 16 min on
the shared 2-core machine it was made on); ``--quick`` runs a few steps of each in seconds.

Command line (wired as ``captum-fvit train-default``): see :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import CLASS_NAMES, SPLIT_SEEDS, render_batch
from ..denoise import DiffusionDenoiser, timestep_for_sigma
from ..space import Normalization
from .denoiser import build_scheduler, build_unet, save_denoiser
from .manifest import write_manifest
from .quality import classification_accuracy, denoising_psnr, rollout_mass_ratio
from .recipe import (
    DenoiserRecipe,
    EvalRecipe,
    ViTRecipe,
    quick_recipes,
    recipe_dict,
    warmup_cosine,
)
from .vit import build_vit, save_vit

__all__ = [
    "QUALITY_BARS",
    "TrainResult",
    "add_train_arguments",
    "evaluate_bundle",
    "finetune_vit",
    "main",
    "merge_finetune_log",
    "run_from_args",
    "token_labels",
    "train_default",
    "train_denoiser",
    "train_vit",
    "write_bundle",
]

#: What the shipped bundle must reach on fresh images: ViT accuracy, rollout mass ratio
#: (mass on the object / object's area share) and the one-shot denoiser's PSNR gain at σ = 0.25.
QUALITY_BARS: dict[str, float] = {"accuracy": 0.95, "rollout_mass_ratio": 1.0, "psnr_gain_db": 6.0}


@dataclass
class TrainResult:
    """A trained model and how its training went.

    Attributes
    ----------
    model : nn.Module
        The trained model, in eval mode.
    log : dict
        ``steps``, ``images_seen``, ``wall_s``, ``final_loss`` (mean over the last 50 steps)
        and ``seed``.
    """

    model: nn.Module
    log: dict[str, Any]


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


def _check_steps(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _adamw(
    params: Sequence[nn.Parameter], lr: float, weight_decay: float, betas: Sequence[float]
) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay, betas=tuple(betas), foreach=False)


def _descend(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[nn.Parameter], grad_clip: float
) -> None:
    """One optimiser step on ``loss`` with gradient-norm clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def _optimise(
    optimizer: torch.optim.Optimizer,
    params: Sequence[nn.Parameter],
    loss_at: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    warmup_steps: int,
    grad_clip: float,
    desc: str,
    progress: bool,
    monitor: Callable[[], float] | None = None,
    monitor_every: int = 0,
    monitor_label: str = "val accuracy",
    loss_format: str = ".3f",
) -> tuple[list[float], dict[str, float], float]:
    """The one training loop of every stage: schedule, loss, clipped AdamW step, progress.

    Step ``s`` (0-based) sets the learning rate to ``lr · warmup_cosine(s, steps,
    warmup_steps)``, evaluates ``descend, logged = loss_at(s)``, takes one optimiser step on
    ``descend`` with the global gradient norm of ``params`` clipped to ``grad_clip`` and
    records ``logged`` (the loss reported in the log). Every ``monitor_every`` steps and after
    the last one, ``monitor()`` is called (monitoring only; it must not change the weights).

    Returns
    -------
    losses : list of float
        ``logged`` of every step.
    monitored : dict
        ``{"<steps done>": monitor()}``.
    wall : float
        Seconds the loop took.
    """
    losses: list[float] = []
    monitored: dict[str, float] = {}
    start = time.perf_counter()
    with _progress(steps, desc, progress) as bar:
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * warmup_cosine(step, steps, warmup_steps)
            descend, logged = loss_at(step)
            _descend(optimizer, descend, params, grad_clip)
            losses.append(float(logged.detach()))
            bar.update(1)
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(
                    loss=f"{np.mean(losses[-50:]):{loss_format}}", lr=f"{optimizer.param_groups[0]['lr']:.2e}"
                )
            if monitor is not None and monitor_every and ((step + 1) % monitor_every == 0 or step == steps - 1):
                value = monitor()
                monitored[str(step + 1)] = value
                bar.write(
                    f"{desc} step {step + 1}: {monitor_label} {value:.3f}, "
                    f"loss {np.mean(losses[-50:]):.3f}, {time.perf_counter() - start:.0f} s"
                )
    return losses, monitored, time.perf_counter() - start


def _accuracy_monitor(
    model: nn.Module, val_every: int, val_images: int, image_size: int, norm: Normalization
) -> dict[str, Any]:
    """``_optimise`` arguments that monitor the accuracy on the validation stream."""
    if not val_every:
        return {}
    return {
        "monitor": lambda: classification_accuracy(
            model, SPLIT_SEEDS["val"], val_images, image_size=image_size, normalization=norm
        ),
        "monitor_every": int(val_every),
        "monitor_label": f"val accuracy ({val_images} images)",
    }


def train_vit(
    recipe: ViTRecipe | None = None,
    *,
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = True,
    val_every: int = 0,
    val_images: int = 600,
) -> TrainResult:
    """Train the bundled ViT classifier from scratch.

    Parameters
    ----------
    recipe : ViTRecipe, optional
        Hyper-parameters; default :class:`~captum_fvit.models.recipe.ViTRecipe()` (the
        shipped recipe).
    seed : int, default 0
        Seeds the initialisation (global torch RNG).
    threads : int or None, default 1
        torch CPU threads while training (restored afterwards); ``None`` leaves the setting
        alone. Bit-for-bit reproducibility needs the same value.
    progress : bool, default True
        Show a tqdm progress bar (stderr).
    val_every : int, default 0
        Every ``val_every`` steps, print the accuracy on ``val_images`` images of the
        ``SPLIT_SEEDS["val"]`` stream (0: never). Monitoring only: it does not change the
        weights.
    val_images : int, default 600

    Returns
    -------
    TrainResult
        The model (eval mode, fused attention on) and the training log (with the monitored
        accuracies under ``val_accuracy``).
    """
    recipe = recipe or ViTRecipe()
    steps = _check_steps("steps", recipe.steps)
    norm = Normalization(tuple(recipe.mean), tuple(recipe.std))
    token_losses: list[float] = []
    with _torch_threads(threads):
        torch.manual_seed(seed)
        model = build_vit(recipe.architecture, **recipe.model_kwargs)
        num_classes = int(recipe.model_kwargs.get("num_classes", len(CLASS_NAMES)))
        token_head = nn.Linear(model.embed_dim, num_classes + 1)  # 0 = background
        params = list(model.parameters()) + list(token_head.parameters())
        optimizer = _adamw(params, recipe.lr, recipe.weight_decay, recipe.betas)
        image_size = int(recipe.model_kwargs.get("img_size", 64))
        patch = int(recipe.model_kwargs.get("patch_size", 8))
        prefix = int(model.num_prefix_tokens)

        def loss_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            first = step * recipe.batch_size
            batch = render_batch(recipe.data_seed, np.arange(first, first + recipe.batch_size), image_size)
            features = model.forward_features(norm.from_pixels(batch.images))
            logits = model.forward_head(features)
            loss = F.cross_entropy(logits, batch.labels, label_smoothing=recipe.label_smoothing)
            if recipe.token_label_weight <= 0:
                return loss, loss
            targets = token_labels(batch.masks, batch.labels, patch, recipe.token_label_threshold)
            token_logits = token_head(features[:, prefix:])
            token_loss = F.cross_entropy(token_logits.reshape(-1, num_classes + 1), targets.reshape(-1))
            token_losses.append(float(token_loss.detach()))
            return loss + recipe.token_label_weight * token_loss, loss

        model.train()
        losses, monitored, wall = _optimise(
            optimizer,
            params,
            loss_at,
            steps=steps,
            lr=recipe.lr,
            warmup_steps=recipe.warmup_steps,
            grad_clip=recipe.grad_clip,
            desc="train ViT",
            progress=progress,
            **_accuracy_monitor(model, val_every, val_images, image_size, norm),
        )
    model.eval()
    log = {
        "seed": int(seed),
        "steps": steps,
        "images_seen": steps * recipe.batch_size,
        "wall_s": round(wall, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "final_token_loss": float(np.mean(token_losses[-50:])) if token_losses else None,
        "val_accuracy": monitored,
    }
    if recipe.finetune_steps:
        finetune = finetune_vit(
            model, recipe, threads=threads, progress=progress, val_every=val_every, val_images=val_images
        )
        log = merge_finetune_log(log, finetune.log)
    return TrainResult(model, log)


def finetune_vit(
    model: nn.Module,
    recipe: ViTRecipe,
    *,
    threads: int | None = 1,
    progress: bool = True,
    val_every: int = 0,
    val_images: int = 600,
) -> TrainResult:
    """The recipe's second stage: plain cross-entropy fine-tuning with a fresh AdamW.

    Runs ``recipe.finetune_steps`` steps (linear warm-up over ``finetune_warmup_steps``, then
    cosine decay from ``finetune_lr`` to 0) on the images that follow those of the first
    stage (image indices from ``steps · batch_size`` on), without token labels. Uses no
    randomness. :func:`train_vit` calls it after the first stage.

    Parameters
    ----------
    model : nn.Module
        The ViT after the first stage (trained in place).
    recipe : ViTRecipe
    threads, progress, val_every, val_images
        As in :func:`train_vit`.

    Returns
    -------
    TrainResult
        The same model (eval mode) and the stage's log.
    """
    steps = _check_steps("finetune_steps", recipe.finetune_steps)
    norm = Normalization(tuple(recipe.mean), tuple(recipe.std))
    image_size = int(recipe.model_kwargs.get("img_size", 64))
    offset = int(recipe.steps) * recipe.batch_size

    def loss_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = offset + step * recipe.batch_size
        batch = render_batch(recipe.data_seed, np.arange(first, first + recipe.batch_size), image_size)
        logits = model(norm.from_pixels(batch.images))
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=recipe.label_smoothing)
        return loss, loss

    with _torch_threads(threads):
        params = list(model.parameters())
        optimizer = _adamw(params, recipe.finetune_lr, recipe.weight_decay, recipe.betas)
        model.train()
        losses, monitored, wall = _optimise(
            optimizer,
            params,
            loss_at,
            steps=steps,
            lr=recipe.finetune_lr,
            warmup_steps=recipe.finetune_warmup_steps,
            grad_clip=recipe.grad_clip,
            desc="fine-tune ViT",
            progress=progress,
            **_accuracy_monitor(model, val_every, val_images, image_size, norm),
        )
    model.eval()
    log = {
        "steps": steps,
        "images_seen": steps * recipe.batch_size,
        "wall_s": round(wall, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "val_accuracy": monitored,
    }
    return TrainResult(model, log)


def merge_finetune_log(stage1: dict[str, Any], finetune: dict[str, Any]) -> dict[str, Any]:
    """One training log for both stages: ``wall_s``/``images_seen`` are totals."""
    return {
        **stage1,
        "stage1_wall_s": stage1["wall_s"],
        "finetune": finetune,
        "images_seen": stage1["images_seen"] + finetune["images_seen"],
        "wall_s": round(stage1["wall_s"] + finetune["wall_s"], 1),
    }


def token_labels(masks: torch.Tensor, labels: torch.Tensor, patch: int, threshold: float) -> torch.Tensor:
    """Per-patch targets for token labelling: ``label + 1`` on the object, 0 elsewhere.

    Parameters
    ----------
    masks : Tensor
        ``N×1×H×W`` bool object masks.
    labels : Tensor
        ``(N,)`` image labels.
    patch : int
        Patch side in pixels.
    threshold : float
        Fraction of a patch inside the mask from which it counts as object.

    Returns
    -------
    Tensor
        ``N×P`` int64, patches in row-major order.
    """
    share = F.avg_pool2d(masks.float(), patch).flatten(1)
    return torch.where(share >= threshold, labels[:, None] + 1, torch.zeros_like(labels[:, None]))


def train_denoiser(
    recipe: DenoiserRecipe | None = None,
    *,
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = True,
) -> TrainResult:
    """Train the bundled diffusion UNet (ε-prediction DDPM over the DDS noise range).

    Parameters
    ----------
    recipe : DenoiserRecipe, optional
        Hyper-parameters; default :class:`~captum_fvit.models.recipe.DenoiserRecipe()`.
    seed : int, default 0
        Seeds the initialisation (global torch RNG) and the timesteps and noise (a
        generator seeded with ``seed + 1``).
    threads : int or None, default 1
        torch CPU threads while training (restored afterwards).
    progress : bool, default True
        Show a tqdm progress bar (stderr).

    Returns
    -------
    TrainResult
        ``model`` is a :class:`~captum_fvit.denoise.DiffusionDenoiser` wrapping the UNet
        (``.unet``, eval mode) and its scheduler (``.scheduler``); the log adds ``t_max``.
    """
    recipe = recipe or DenoiserRecipe()
    steps = _check_steps("steps", recipe.steps)
    scheduler = build_scheduler(**recipe.scheduler_config)
    abar = scheduler.alphas_cumprod.to(torch.float32)
    t_max = timestep_for_sigma(scheduler.alphas_cumprod, recipe.max_sigma)
    with _torch_threads(threads):
        torch.manual_seed(seed)
        unet = build_unet(**recipe.unet_config)
        generator = torch.Generator().manual_seed(seed + 1)
        params = list(unet.parameters())
        optimizer = _adamw(params, recipe.lr, recipe.weight_decay, recipe.betas)
        image_size = int(unet.config.sample_size)

        def loss_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            first = step * recipe.batch_size
            images = render_batch(recipe.data_seed, np.arange(first, first + recipe.batch_size), image_size).images
            x0 = 2.0 * images - 1.0
            t = torch.randint(0, t_max + 1, (x0.shape[0],), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            a = abar[t].view(-1, 1, 1, 1)
            x_t = a.sqrt() * x0 + (1.0 - a).sqrt() * noise
            loss = F.mse_loss(unet(x_t, t).sample, noise)
            return loss, loss

        unet.train()
        losses, _, wall = _optimise(
            optimizer,
            params,
            loss_at,
            steps=steps,
            lr=recipe.lr,
            warmup_steps=recipe.warmup_steps,
            grad_clip=recipe.grad_clip,
            desc="train denoiser",
            progress=progress,
            loss_format=".4f",
        )
    unet.eval()
    log = {
        "seed": int(seed),
        "steps": steps,
        "images_seen": steps * recipe.batch_size,
        "wall_s": round(wall, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "t_max": int(t_max),
    }
    return TrainResult(DiffusionDenoiser(unet, scheduler), log)


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
        ``seed``; ``accuracy`` (with ``n``); ``rollout`` (see
        :func:`~captum_fvit.models.quality.rollout_mass_ratio`, with ``n``); ``denoising``
        (see :func:`~captum_fvit.models.quality.denoising_psnr`, with ``n``); ``bars`` (the
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


def _versions(threads: int | None) -> dict[str, Any]:
    import diffusers
    import safetensors
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
    }


def train_default(
    out_dir: str | Path,
    *,
    seed: int = 0,
    vit_steps: int | None = None,
    unet_steps: int | None = None,
    quick: bool = False,
    vit_recipe: ViTRecipe | None = None,
    denoiser_recipe: DenoiserRecipe | None = None,
    eval_recipe: EvalRecipe | None = None,
    threads: int | None = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the default ViT and denoiser, measure them and write a bundle into ``out_dir``.

    Writes ``out_dir/vit/`` (timm layout), ``out_dir/unet/`` and ``out_dir/scheduler/``
    (diffusers layout) and ``out_dir/manifest.json`` (SHA-256 of every file, the recipes,
    library versions, wall times and the metrics). Load it with
    ``load_default(path=out_dir)``.

    Parameters
    ----------
    out_dir : path
        Folder to write (created; existing bundle files are overwritten).
    seed : int, default 0
        Seed of both trainings (see :func:`train_vit`, :func:`train_denoiser`).
    vit_steps, unet_steps : int, optional
        Override the recipes' step counts.
    quick : bool, default False
        Use :func:`~captum_fvit.models.recipe.quick_recipes` (a few steps; for checking the
        pipeline, not for use).
    vit_recipe, denoiser_recipe, eval_recipe : optional
        Full recipes (default: the shipped ones, or the quick ones with ``quick``).
    threads : int or None, default 1
        torch CPU threads while training.
    progress : bool, default True
        Show progress bars.

    Returns
    -------
    dict
        The manifest as written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    quick_vit, quick_unet, quick_eval = quick_recipes()
    vit_recipe = vit_recipe or (quick_vit if quick else ViTRecipe())
    denoiser_recipe = denoiser_recipe or (quick_unet if quick else DenoiserRecipe())
    eval_recipe = eval_recipe or (quick_eval if quick else EvalRecipe())
    if vit_steps is not None:
        vit_recipe = replace(vit_recipe, steps=_check_steps("vit_steps", vit_steps))
    if unet_steps is not None:
        denoiser_recipe = replace(denoiser_recipe, steps=_check_steps("unet_steps", unet_steps))

    vit = train_vit(vit_recipe, seed=seed, threads=threads, progress=progress)
    denoiser = train_denoiser(denoiser_recipe, seed=seed, threads=threads, progress=progress)
    return write_bundle(
        out,
        vit,
        denoiser,
        vit_recipe=vit_recipe,
        denoiser_recipe=denoiser_recipe,
        eval_recipe=eval_recipe,
        seed=seed,
        quick=quick,
        threads=threads,
    )


def write_bundle(
    out_dir: str | Path,
    vit: TrainResult,
    denoiser: TrainResult,
    *,
    vit_recipe: ViTRecipe,
    denoiser_recipe: DenoiserRecipe,
    eval_recipe: EvalRecipe,
    seed: int,
    quick: bool = False,
    threads: int | None = 1,
    notes: str | None = None,
) -> dict[str, Any]:
    """Measure trained models on a fresh stream and write them with their manifest.

    :func:`train_default` is ``train_vit`` + ``train_denoiser`` + this; the two trainings
    are independent (each seeds itself), so they may also run in separate processes and be
    combined here (``notes``, recorded in the manifest, can say so).

    Returns
    -------
    dict
        The manifest as written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_size = int(vit_recipe.model_kwargs.get("img_size", 64))
    normalization = Normalization(tuple(vit_recipe.mean), tuple(vit_recipe.std))
    start = time.perf_counter()
    with _torch_threads(threads):
        metrics = evaluate_bundle(
            vit.model, denoiser.model, eval_recipe, normalization=normalization, image_size=image_size
        )
    eval_wall = time.perf_counter() - start

    save_vit(vit.model, out / "vit")
    save_denoiser(denoiser.model.unet, denoiser.model.scheduler, out)
    content = {
        "name": "captum-fvit default: ViT + diffusion denoiser for the shapes benchmark",
        "quick": bool(quick),
        "image_size": image_size,
        "class_names": list(CLASS_NAMES),
        "normalization": {"mean": list(normalization.mean), "std": list(normalization.std)},
        "layout": {"vit": "vit", "unet": "unet", "scheduler": "scheduler"},
        "seed": int(seed),
        "recipe": {
            "vit": recipe_dict(vit_recipe),
            "denoiser": recipe_dict(denoiser_recipe),
            "eval": recipe_dict(eval_recipe),
        },
        "training": {
            "vit": vit.log,
            "denoiser": denoiser.log,
            "eval_wall_s": round(eval_wall, 1),
            "total_wall_s": round(vit.log["wall_s"] + denoiser.log["wall_s"] + eval_wall, 1),
        },
        "metrics": metrics,
        "environment": _versions(threads),
        "reproduce": (
            f"captum-fvit train-default --out DIR --seed {seed}"
            + (" --quick" if quick else "")
            + (f" --threads {threads}" if threads is not None else "")
        ),
    }
    if notes:
        content["notes"] = notes
    return write_manifest(out, content)


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train-default`` options to ``parser`` (for the ``captum-fvit`` CLI)."""
    parser.add_argument("--out", default="captum_fvit_default", help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument(
        "--quick", action="store_true", help="a few steps only: check the recipe runs end to end"
    )
    parser.add_argument("--vit-steps", type=int, default=None, help="override the ViT's first-stage optimiser steps")
    parser.add_argument("--unet-steps", type=int, default=None, help="override the UNet's optimiser steps")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1; reproducibility needs the same value)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``train-default`` from parsed arguments; print a summary; return the exit status.

    Raises
    ------
    ValueError
        On invalid arguments (the CLI prints it as an error).
    """
    for name in ("vit_steps", "unet_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads < 1:
        raise ValueError("--threads must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder to write the weights into")
    manifest = train_default(
        out,
        seed=args.seed,
        vit_steps=args.vit_steps,
        unet_steps=args.unet_steps,
        quick=args.quick,
        threads=args.threads,
        progress=not args.no_progress,
    )
    m = manifest["metrics"]
    print(f"wrote {out / 'manifest.json'} ({'quick run' if args.quick else 'full recipe'})")
    print(f"accuracy          {m['accuracy']['value']:.4f}  ({m['accuracy']['n']} images, seed {m['seed']})")
    print(f"rollout mass ratio {m['rollout']['ratio']:.3f}  ({m['rollout']['n']} images)")
    d = m["denoising"]
    print(
        f"PSNR at sigma={d['sigma']:g}: noisy {d['noisy_db']:.2f} dB -> denoised {d['denoised_db']:.2f} dB "
        f"(gain {d['gain_db']:.2f} dB, {d['n']} images)"
    )
    print(f"all quality bars met: {m['passed']['all']}; training took {manifest['training']['total_wall_s']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``captum-fvit train-default [--out DIR] [--seed N] [--quick] ...`` as a function."""
    parser = add_train_arguments(
        argparse.ArgumentParser(
            prog="captum-fvit train-default",
            description="Train the bundled default ViT and diffusion denoiser on this CPU.",
        )
    )
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except ValueError as err:
        print(f"captum-fvit train-default: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
