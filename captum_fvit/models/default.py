"""The bundled default: a trained ViT and diffusion denoiser that ship with the package.

:func:`load_default` loads them offline from ``captum_fvit/models/weights/`` (or from a
folder written by ``captum-fvit train-default``) after checking every file against the
SHA-256 recorded in ``manifest.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..denoise import DiffusionDenoiser
from ..space import Normalization, resolve_normalization
from ..weight_files import check_json, check_safetensors
from .denoiser import load_denoiser
from .manifest import FIX_HINT, BundleError, read_manifest, verify_bundle
from .vit import load_vit

__all__ = ["DEFAULT_WEIGHTS_DIR", "DefaultBundle", "load_default"]

#: Where the bundled weights live inside the installed package.
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass
class DefaultBundle:
    """The bundled default models, ready to explain shapes-benchmark images.

    Attributes
    ----------
    model : nn.Module
        timm ViT classifier (64×64 RGB inputs, 8×8 patches, class token, 6 classes), in eval
        mode with fused attention on. It takes inputs in its own normalisation:
        ``normalization.from_pixels(images)`` for images in [0, 1].
    denoiser : DiffusionDenoiser
        One-shot diffusion denoiser for 64×64 RGB images, ``denoiser(x_noisy, sigma)`` with σ
        in [0, 1] pixel units (σ ≤ 0.5 is the range it was trained for).
    normalization : Normalization
        The ViT's input normalisation (mean = std = 0.5 per channel).
    class_names : tuple of str
        Class names in label order.
    image_size : int
        Input side in pixels (64).
    manifest : dict
        The bundle's ``manifest.json`` (recipe, versions, measured metrics, file hashes).
    path : Path
        The folder the bundle was loaded from.
    """

    model: nn.Module
    denoiser: DiffusionDenoiser
    normalization: Normalization
    class_names: tuple[str, ...]
    image_size: int
    manifest: dict[str, Any] = field(repr=False)
    path: Path = field(default=DEFAULT_WEIGHTS_DIR)

    @property
    def metrics(self) -> dict[str, Any]:
        """The metrics measured when the bundle was trained (fresh benchmark seed)."""
        return self.manifest.get("metrics", {})


def load_default(
    device: str | torch.device = "cpu",
    *,
    path: str | os.PathLike | None = None,
    verify: bool = True,
    **denoiser_kwargs: Any,
) -> DefaultBundle:
    """Load the bundled default ViT and denoiser (offline).

    Parameters
    ----------
    device : str or torch.device, default "cpu"
        Where to put both models.
    path : path, optional
        A bundle folder written by ``captum-fvit train-default --out DIR``; default the
        weights shipped with the package (:data:`DEFAULT_WEIGHTS_DIR`).
    verify : bool, default True
        Check every file's SHA-256 against ``manifest.json`` first.
    **denoiser_kwargs
        Options of :class:`~captum_fvit.denoise.DiffusionDenoiser` (``num_steps``,
        ``exact_noise_match``, ...).

    Returns
    -------
    DefaultBundle

    Raises
    ------
    BundleError
        A :class:`ValueError`: if a file is missing, corrupt or (also with ``verify=False``)
        an empty or truncated safetensors file; the message names the file and how to restore
        it (reinstall captum-fvit, or ``captum-fvit train-default``).
    """
    from safetensors import SafetensorError

    folder = Path(path) if path is not None else DEFAULT_WEIGHTS_DIR
    manifest = verify_bundle(folder) if verify else read_manifest(folder)
    layout = manifest.get("layout", {"vit": "vit", "unet": "unet", "scheduler": "scheduler"})
    # Without the hash check, a damaged file would reach the loaders, whose errors name neither
    # the file nor the cause: check every config's JSON and every safetensors header and size.
    for part in (layout["vit"], layout["unet"], layout["scheduler"]):
        for file in sorted((folder / part).glob("*")):
            try:
                if file.suffix == ".json":
                    check_json(file, FIX_HINT)
                elif file.suffix == ".safetensors":
                    check_safetensors(file, FIX_HINT)
            except (FileNotFoundError, ValueError) as err:
                raise BundleError(f"the weights bundle at {folder} is damaged: {err}") from None
    try:
        model = load_vit(folder / layout["vit"], device=device)
        denoiser = load_denoiser(
            folder,
            subfolder=layout["unet"],
            scheduler=str(folder / layout["scheduler"]),
            device=device,
            local_files_only=True,
            **denoiser_kwargs,
        )
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
        if isinstance(err, BundleError):
            raise
        raise BundleError(f"cannot load the weights bundle at {folder} ({err}); {FIX_HINT}") from err
    normalization = resolve_normalization(model)
    class_names = tuple(manifest.get("class_names") or model.pretrained_cfg.get("label_names") or ())
    return DefaultBundle(
        model=model,
        denoiser=denoiser,
        normalization=normalization,
        class_names=class_names,
        image_size=int(manifest.get("image_size", 64)),
        manifest=manifest,
        path=folder,
    )
