"""Training the bundled default (ViT classifier + diffusion denoiser) on this CPU.

The runtime loaders live in :mod:`captum_fvit.models`; this package only makes the weights:

* :func:`train_default` (:mod:`.bundle`) - train both models, measure them and write a
  bundle folder that ``load_default(path=...)`` loads (``captum-fvit train-default``);
* :func:`train_vit`, :func:`finetune_vit`, :func:`train_denoiser` (:mod:`.loops`) - the
  training loops, one shared optimiser loop underneath;
* :class:`ViTRecipe`, :class:`DenoiserRecipe`, :class:`EvalRecipe` (:mod:`.recipe`) - every
  hyper-parameter;
* :func:`evaluate_bundle` and :data:`QUALITY_BARS` (:mod:`.quality`) - the quality bars on a
  fresh benchmark stream;
* :data:`TRAIN_OPTIONS` and :func:`train_from_options` (:mod:`.options`) - the command-line
  options as plain data (the argparse is in :mod:`captum_fvit.cli`).

Example::

    from captum_fvit.training import train_default
    manifest = train_default("my_bundle", quick=True, progress=False)   # seconds
"""

from __future__ import annotations

from .bundle import train_default, write_bundle
from .loops import TrainResult, finetune_vit, merge_finetune_log, token_labels, train_denoiser, train_vit
from .options import TRAIN_OPTIONS, TrainOption, summary_lines, train_from_options
from .quality import (
    QUALITY_BARS,
    classification_accuracy,
    denoising_psnr,
    evaluate_bundle,
    psnr,
    rollout_mass_ratio,
)
from .recipe import DenoiserRecipe, EvalRecipe, ViTRecipe, quick_recipes, recipe_dict, warmup_cosine

__all__ = [
    "QUALITY_BARS",
    "TRAIN_OPTIONS",
    "DenoiserRecipe",
    "EvalRecipe",
    "TrainOption",
    "TrainResult",
    "ViTRecipe",
    "classification_accuracy",
    "denoising_psnr",
    "evaluate_bundle",
    "finetune_vit",
    "merge_finetune_log",
    "psnr",
    "quick_recipes",
    "recipe_dict",
    "rollout_mass_ratio",
    "summary_lines",
    "token_labels",
    "train_default",
    "train_denoiser",
    "train_from_options",
    "train_vit",
    "warmup_cosine",
    "write_bundle",
]
