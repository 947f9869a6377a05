"""Turning command-line specifications into models, denoisers and datasets.

Models
    ``default`` (the bundled ViT), ``timm:NAME`` (``timm.create_model(NAME, pretrained=True)``:
    taken from the Hugging Face cache without any network call when cached; offline and not
    cached fails in seconds), or ``package.module:factory`` (imported with the current
    directory on ``sys.path``). ``--checkpoint FILE`` loads local weights into any of them.
Denoisers
    ``default`` (the bundled DDPM), ``identity`` (no denoising), ``adm:PATH`` (an OpenAI
    guided-diffusion checkpoint), a diffusers folder or hub id (``owner/name``), or
    ``package.module:factory`` returning a custom ``Denoiser``.
Datasets
    ``shapes`` (the procedural benchmark, seed 2 = test split), a folder with ``images/``
    (and ``masks/``), or a ``gtsegs_ijcv.mat`` file.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "SpecError",
    "check_vit",
    "import_factory",
    "resolve_dataset",
    "resolve_denoiser",
    "resolve_model",
    "timm_data_config",
]

#: Probe of huggingface.co before downloading (seconds).
HUB_PROBE_TIMEOUT = 3.0


class SpecError(ValueError):
    """A command-line specification that cannot be turned into a model, denoiser or dataset."""


def import_factory(spec: str, option: str) -> Any:
    """``package.module:attribute`` imported with the current directory on ``sys.path``;
    a callable attribute is called without arguments."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SpecError(f"{option} {spec!r} must look like 'package.module:factory'")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SpecError(f"cannot import {module_name!r} for {option} {spec!r}: {err}") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise SpecError(f"{module_name!r} has no attribute {attribute!r} ({option} {spec!r})")
    return factory() if callable(factory) and not isinstance(factory, nn.Module) else factory


def check_vit(model: nn.Module, spec: str) -> None:
    """Refuse a model whose attention captum-fvit cannot record (a CNN, an MLP, ...)."""
    from .attention import find_adapter

    try:
        find_adapter(model)
    except (TypeError, ValueError) as err:
        raise SpecError(
            f"--model {spec!r} ({type(model).__name__}) is not a supported Vision Transformer "
            f"(timm, torchvision or Hugging Face ViT): {str(err).splitlines()[0]}"
        ) from None


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load local weights (``.safetensors`` or a ``torch.save`` state dict) into ``model``."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"--checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise SpecError(f"cannot read --checkpoint {path}: {str(err).splitlines()[0]}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise SpecError(
            f"--checkpoint {path} does not fit the model: {str(err).splitlines()[1].strip()}"
        ) from None
    return model


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=HUB_PROBE_TIMEOUT).close()
        return True
    except OSError:
        return False


def _cached_weights(hub_id: str) -> str | None:
    """Path of a hub model's weights in the local Hugging Face cache, or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return cached
    return None


def _timm_model(name: str, checkpoint: str | None) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise SpecError(
            f"--model timm:{name}: timm has no model {name!r} (see "
            f"timm.list_models('{name.split('_')[0]}*'))"
        )
    if checkpoint is not None:
        return load_checkpoint(timm.create_model(name, pretrained=False), checkpoint)
    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    cached = _cached_weights(hub_id) if hub_id else None
    if cached is not None:
        # Load the cached file directly: no network round trip at all.
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached})
    if not _hub_reachable():
        raise SpecError(
            f"timm:{name} needs pretrained weights that are not in the Hugging Face cache and "
            "huggingface.co cannot be reached (offline); download them once with network "
            f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\") or pass "
            "--checkpoint FILE with local weights"
        )
    return timm.create_model(name, pretrained=True)


def resolve_model(spec: str, device: str = "cpu", checkpoint: str | None = None) -> nn.Module:
    """A ViT classifier in eval mode from a specification (see the module docstring).

    ``checkpoint`` loads local weights (``.safetensors`` or a state dict) into the model.
    """
    if spec == "default":
        from .models import load_default

        model = load_default(device=device).model
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
    elif spec.startswith("timm:"):
        model = _timm_model(spec[5:], checkpoint)
    elif ":" in spec:
        model = import_factory(spec, "--model")
        if not isinstance(model, nn.Module):
            raise SpecError(f"--model {spec!r} did not produce a torch.nn.Module")
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
    else:
        raise SpecError(
            f"unknown --model {spec!r}: use 'default', 'timm:NAME' or 'package.module:factory'"
        )
    check_vit(model, spec)
    return model.eval().to(device)


def timm_data_config(model: nn.Module) -> dict:
    """timm's ``resolve_data_config`` of the model (input size, crop_pct, mean, std)."""
    from timm.data import resolve_data_config

    try:
        return resolve_data_config({}, model=model)
    except Exception:  # noqa: BLE001 - non-timm models: timm's defaults are not theirs
        return {}


def resolve_denoiser(spec: str, device: str = "cpu") -> Callable | None:
    """A denoiser from a specification; ``None`` for ``identity``."""
    if spec == "identity":
        return None
    if spec == "default":
        from .models import load_default

        return load_default(device=device).denoiser
    from .denoise import DiffusionDenoiser, load_guided_diffusion

    if spec.startswith("adm:"):
        path = Path(spec[4:])
        if not path.is_file():
            raise SpecError(f"--denoiser {spec!r}: checkpoint file {path} does not exist")
        try:
            unet, scheduler = load_guided_diffusion(path, device=device)
        except Exception as err:  # noqa: BLE001 - a bad file of any kind is a user error
            raise SpecError(
                f"--denoiser {spec!r}: {path} is not an OpenAI guided-diffusion checkpoint "
                f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
            ) from None
        return DiffusionDenoiser(unet, scheduler)
    if Path(spec).is_dir():
        try:
            return DiffusionDenoiser.from_pretrained(spec, device=device)
        except Exception as err:  # noqa: BLE001
            raise SpecError(
                f"--denoiser {spec!r} is not a diffusers pipeline folder (model_index.json or "
                f"unet/ + scheduler/): {str(err).splitlines()[0]}"
            ) from None
    if ":" in spec:
        denoiser = import_factory(spec, "--denoiser")
        if not callable(denoiser):
            raise SpecError(
                f"--denoiser {spec!r} produced a {type(denoiser).__name__}; it must be a "
                "Denoiser, callable as denoiser(x_noisy, sigma, generator)"
            )
        return denoiser
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", spec) and not Path(spec).exists():
        from huggingface_hub import try_to_load_from_cache

        cached = any(
            isinstance(try_to_load_from_cache(spec, f), str)
            for f in ("model_index.json", "unet/config.json", "config.json")
        )
        if not cached and not _hub_reachable():
            raise SpecError(
                f"--denoiser {spec!r} is neither a local folder nor in the Hugging Face cache, "
                "and huggingface.co cannot be reached; give a local diffusers folder, "
                "'adm:FILE', 'package.module:factory', 'identity' or 'default'"
            )
        return DiffusionDenoiser.from_pretrained(spec, device=device)
    raise SpecError(
        f"--denoiser {spec!r} does not exist: give 'default', 'identity', 'adm:FILE', a "
        "diffusers folder or hub id (owner/name), or 'package.module:factory'"
    )


def resolve_dataset(
    spec: str,
    image_size: int,
    n_images: int | None = None,
    *,
    labels: str | None = None,
    crop_pct: float = 1.0,
) -> Any:
    """A dataset of ``{"image", "label", "mask"}`` samples from a specification.

    ``labels`` (image folders only): a JSON/text mapping file, ``"index"`` or ``"none"``.
    """
    if spec == "shapes":
        from .data import SPLIT_SEEDS, ShapesBenchmark

        return ShapesBenchmark(n_images or 64, image_size=image_size, seed=SPLIT_SEEDS["test"])
    path = Path(spec)
    if path.suffix == ".mat":
        from .data import ImageNetSegmentation

        if not path.is_file():
            raise SpecError(f"--data {spec!r} does not exist")
        return ImageNetSegmentation(path, image_size=image_size)
    if path.is_dir():
        from .data.folder import ImageFolderWithMasks, load_label_map

        has_classes = (path / "images").is_dir() and any(
            p.is_dir() for p in (path / "images").iterdir()
        )
        if labels is None and has_classes:
            raise SpecError(
                f"{path / 'images'} has class folders: give --labels FILE (JSON folder name → "
                "class id of the model, or a text file of folder names, one per class id), "
                "--labels index (sorted folder index, torchvision ImageFolder's convention) or "
                "--labels none (explain the predicted class)"
            )
        mapping: Any = labels or "none"
        if labels not in (None, "index", "none"):
            mapping = load_label_map(labels)
        return ImageFolderWithMasks(path, image_size=image_size, labels=mapping, crop_pct=crop_pct)
    raise SpecError(
        f"--data {spec!r} is neither 'shapes', a folder with images/, nor a .mat file"
    )
