"""Turning command-line specifications into models, denoisers and datasets.

Models
    ``default`` (the bundled ViT), ``timm:NAME`` (``timm.create_model(NAME, pretrained=True)``:
    needs the hub or a populated cache), or ``package.module:callable`` (a Python import path
    to a constructor returning the model).
Denoisers
    ``default`` (the bundled DDPM), ``identity`` (no denoising), ``adm:PATH`` (an OpenAI
    guided-diffusion checkpoint), or a diffusers folder / hub id.
Datasets
    ``shapes`` (the procedural benchmark, seed 2 = test split), a folder with ``images/``
    (and ``masks/``), or a ``gtsegs_ijcv.mat`` file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["resolve_model", "resolve_denoiser", "resolve_dataset"]


def resolve_model(spec: str, device: str = "cpu") -> nn.Module:
    """A ViT classifier in eval mode from a specification (see the module docstring)."""
    if spec == "default":
        from ..models import load_default

        return load_default(device=device).model
    if spec.startswith("timm:"):
        import timm

        return timm.create_model(spec[5:], pretrained=True).eval().to(device)
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot import {module_name!r} for --model {spec!r}: {err}") from None
        factory = getattr(module, attribute, None)
        if factory is None:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r} (--model {spec!r})")
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
        if not isinstance(model, nn.Module):
            raise ValueError(f"--model {spec!r} did not produce a torch.nn.Module")
        return model.eval().to(device)
    raise ValueError(
        f"unknown --model {spec!r}: use 'default', 'timm:NAME' or 'package.module:callable'"
    )


def resolve_denoiser(spec: str, device: str = "cpu") -> Callable | None:
    """A denoiser from a specification; ``None`` for ``identity``."""
    if spec == "identity":
        return None
    if spec == "default":
        from ..models import load_default

        return load_default(device=device).denoiser
    from ..denoise import DiffusionDenoiser, load_guided_diffusion

    if spec.startswith("adm:"):
        unet, scheduler = load_guided_diffusion(spec[4:], device=device)
        return DiffusionDenoiser(unet, scheduler)
    return DiffusionDenoiser.from_pretrained(spec, device=device)


def resolve_dataset(spec: str, image_size: int, n_images: int | None = None) -> Any:
    """A dataset of ``{"image", "label", "mask"}`` samples from a specification."""
    if spec == "shapes":
        from ..data import SPLIT_SEEDS, ShapesBenchmark

        return ShapesBenchmark(n_images or 64, image_size=image_size, seed=SPLIT_SEEDS["test"])
    path = Path(spec)
    if path.suffix == ".mat":
        from ..data import ImageNetSegmentation

        return ImageNetSegmentation(path, image_size=image_size)
    if path.is_dir():
        from ..data import ImageFolderWithMasks

        return ImageFolderWithMasks(path, image_size=image_size)
    raise ValueError(
        f"--data {spec!r} is neither 'shapes', a folder with images/, nor a .mat file"
    )
