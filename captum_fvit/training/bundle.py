"""Training and writing the bundled default: both models, their quality and ``manifest.json``.

``train_default(out_dir)`` reproduces the shipped bundle: it trains the ViT and the UNet
(:mod:`.loops`) on freshly rendered shapes-benchmark images, measures their quality on a
fresh benchmark stream (:mod:`.quality`) and writes the weights and ``manifest.json``
(:mod:`captum_fvit.models.manifest`) into ``out_dir``, which
:func:`~captum_fvit.models.load_default` then loads with ``path=out_dir``.

Cost: the shipped recipe needs about an hour on one CPU core (ViT ≈ 44 min, UNet ≈ 16 min on
the shared 2-core machine it was made on); ``quick=True`` runs a few steps of each in seconds.
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import CLASS_NAMES
from ..models.denoiser import save_denoiser
from ..models.manifest import write_manifest
from ..models.vit import save_vit
from ..space import Normalization
from ..validation import check_count, check_steps
from .loops import TrainResult, torch_threads, train_denoiser, train_vit
from .quality import evaluate_bundle
from .recipe import DenoiserRecipe, EvalRecipe, ViTRecipe, quick_recipes, recipe_dict

__all__ = ["train_default", "write_bundle"]


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


def _output_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a folder to write into (created); a file there is refused."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file; give a folder to write the weights into")
    out.mkdir(parents=True, exist_ok=True)
    return out


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
        Seed of both trainings (see :func:`~.loops.train_vit`, :func:`~.loops.train_denoiser`).
    vit_steps, unet_steps : int, optional
        Override the recipes' step counts (integers ≥ 1).
    quick : bool, default False
        Use :func:`~captum_fvit.training.recipe.quick_recipes` (a few steps; for checking
        the pipeline, not for use).
    vit_recipe, denoiser_recipe, eval_recipe : optional
        Full recipes (default: the shipped ones, or the quick ones with ``quick``).
    threads : int or None, default 1
        torch CPU threads while training (an integer ≥ 1; ``None`` leaves the setting alone).
    progress : bool, default True
        Show progress bars.

    Returns
    -------
    dict
        The manifest as written (``out_dir/manifest.json``).

    Raises
    ------
    TypeError
        For a non-integer seed, step count or thread count.
    ValueError
        For a step or thread count below 1, or an ``out_dir`` that is a file.
    """
    if vit_steps is not None:
        vit_steps = check_steps(vit_steps, "vit_steps")
    if unet_steps is not None:
        unet_steps = check_steps(unet_steps, "unet_steps")
    if threads is not None:
        threads = check_count(threads, "threads")
    out = _output_folder(out_dir)
    quick_vit, quick_unet, quick_eval = quick_recipes()
    vit_recipe = vit_recipe or (quick_vit if quick else ViTRecipe())
    denoiser_recipe = denoiser_recipe or (quick_unet if quick else DenoiserRecipe())
    eval_recipe = eval_recipe or (quick_eval if quick else EvalRecipe())
    if vit_steps is not None:
        vit_recipe = replace(vit_recipe, steps=vit_steps)
    if unet_steps is not None:
        denoiser_recipe = replace(denoiser_recipe, steps=unet_steps)

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
    out = _output_folder(out_dir)
    image_size = int(vit_recipe.model_kwargs.get("img_size", 64))
    normalization = Normalization(tuple(vit_recipe.mean), tuple(vit_recipe.std))
    start = time.perf_counter()
    with torch_threads(threads):
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
