"""The training loops of the bundled default: the ViT classifier and the diffusion denoiser.

:func:`train_vit` trains the ViT (cross-entropy plus token labels from the object masks,
then a short plain fine-tuning stage, :func:`finetune_vit`) and :func:`train_denoiser` the
UNet (ε-prediction DDPM), both on freshly rendered shapes-benchmark images and both through
one shared loop (:func:`_optimise`: schedule, loss, clipped AdamW step, progress).

Determinism: every random number comes from ``seed`` (model initialisation through the
global torch RNG, diffusion timesteps and noise through a seeded generator) and the training
images are a fixed function of the step. On the CPU a run is bit-for-bit reproducible with
the same ``threads``, torch version and machine; another thread count changes the order of
floating-point reductions and so the last bits of the weights (the metrics do not move
noticeably).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import CLASS_NAMES, SPLIT_SEEDS, render_batch
from ..denoise import DiffusionDenoiser, timestep_for_sigma
from ..models.denoiser import build_scheduler, build_unet
from ..models.vit import build_vit
from ..space import Normalization
from ..validation import check_count, check_seed, check_steps
from .quality import classification_accuracy
from .recipe import DenoiserRecipe, ViTRecipe, warmup_cosine

__all__ = [
    "TrainResult",
    "finetune_vit",
    "merge_finetune_log",
    "token_labels",
    "train_denoiser",
    "train_vit",
]


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
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (restored after; ``None``: unchanged)."""
    if threads is None:
        yield
        return
    threads = check_count(threads, "threads")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _training_seed(seed: object) -> int:
    """A training seed: an int in ``[0, 2**63)`` (``None`` is refused: a run must be repeatable)."""
    if seed is None:
        raise TypeError("seed must be an int (e.g. seed=0): a training run is reproduced from its seed")
    return check_seed(seed)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=2.0)


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
    if not check_count(val_every, "val_every", minimum=0):
        return {}
    val_images = check_count(val_images, "val_images")
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
        Hyper-parameters; default :class:`~captum_fvit.training.recipe.ViTRecipe()` (the
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
    seed = _training_seed(seed)
    steps = check_steps(recipe.steps, "steps")
    norm = Normalization(tuple(recipe.mean), tuple(recipe.std))
    token_losses: list[float] = []
    with torch_threads(threads):
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
    steps = check_steps(recipe.finetune_steps, "finetune_steps")
    norm = Normalization(tuple(recipe.mean), tuple(recipe.std))
    image_size = int(recipe.model_kwargs.get("img_size", 64))
    offset = int(recipe.steps) * recipe.batch_size

    def loss_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = offset + step * recipe.batch_size
        batch = render_batch(recipe.data_seed, np.arange(first, first + recipe.batch_size), image_size)
        logits = model(norm.from_pixels(batch.images))
        loss = F.cross_entropy(logits, batch.labels, label_smoothing=recipe.label_smoothing)
        return loss, loss

    with torch_threads(threads):
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
        Hyper-parameters; default :class:`~captum_fvit.training.recipe.DenoiserRecipe()`.
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
    seed = _training_seed(seed)
    steps = check_steps(recipe.steps, "steps")
    scheduler = build_scheduler(**recipe.scheduler_config)
    abar = scheduler.alphas_cumprod.to(torch.float32)
    t_max = timestep_for_sigma(scheduler.alphas_cumprod, recipe.max_sigma)
    with torch_threads(threads):
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
