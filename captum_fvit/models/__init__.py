"""Models: the bundled default (trained offline on the shapes benchmark) and model loaders.

* :func:`load_default` - the ViT classifier and diffusion denoiser shipped in
  ``captum_fvit/models/weights/`` (SHA-256 checked), as a :class:`DefaultBundle`.
* :func:`load_vit` - any timm ViT: a timm name or ``hf-hub:`` id (downloads), or a local
  folder / ``.safetensors`` file.
* :func:`load_denoiser` - a diffusers UNet + DDPM scheduler (Hub id or local folder) as a
  :class:`~captum_fvit.denoise.DiffusionDenoiser`.

Training the weights is :mod:`captum_fvit.training` (``captum-fvit train-default`` on the
command line); ``captum_fvit.models.train_default`` is a deprecated alias of
:func:`captum_fvit.training.train_default`.

Example::

    from captum_fvit.models import load_default
    from captum_fvit.data import ShapesBenchmark
    bundle = load_default()
    x = ShapesBenchmark.from_split("test", size=8).batch(range(8))["image"]   # [0, 1] pixels
    logits = bundle.model(bundle.normalization.from_pixels(x))
    clean = bundle.denoiser(x + 0.25 * torch.randn_like(x), 0.25)
"""

from __future__ import annotations

import warnings
from typing import Any

from .default import DEFAULT_WEIGHTS_DIR, DefaultBundle, load_default
from .denoiser import (
    DEFAULT_SCHEDULER_CONFIG,
    DEFAULT_UNET_CONFIG,
    build_scheduler,
    build_unet,
    load_denoiser,
    save_denoiser,
)
from .manifest import (
    BundleError,
    file_sha256,
    read_manifest,
    verify_bundle,
    write_manifest,
)
from .vit import (
    DEFAULT_VIT_ARCHITECTURE,
    DEFAULT_VIT_KWARGS,
    build_vit,
    load_vit,
    save_vit,
)

__all__ = [
    "DEFAULT_SCHEDULER_CONFIG",
    "DEFAULT_UNET_CONFIG",
    "DEFAULT_VIT_ARCHITECTURE",
    "DEFAULT_VIT_KWARGS",
    "DEFAULT_WEIGHTS_DIR",
    "BundleError",
    "DefaultBundle",
    "build_scheduler",
    "build_unet",
    "build_vit",
    "file_sha256",
    "load_default",
    "load_denoiser",
    "load_vit",
    "read_manifest",
    "save_denoiser",
    "save_vit",
    "train_default",
    "verify_bundle",
    "write_manifest",
]


def train_default(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Deprecated alias of :func:`captum_fvit.training.train_default` (removed next release)."""
    warnings.warn(
        "captum_fvit.models.train_default is deprecated; use captum_fvit.training.train_default",
        DeprecationWarning,
        stacklevel=2,
    )
    from ..training import train_default as _train_default

    return _train_default(*args, **kwargs)
