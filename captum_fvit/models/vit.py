"""The bundled Vision Transformer: building it, saving it, and loading any timm ViT.

The default model is a small timm ``VisionTransformer`` for the shapes benchmark
(:mod:`captum_fvit.data`): 64×64 RGB inputs cut into 8×8 patches (an 8×8 grid of 64 patch
tokens) plus a class token, six classes. Its inputs are normalised with mean = std = 0.5 per
channel (``model_input = (pixels − 0.5) / 0.5``, pixels in [0, 1]); the values are recorded in
the model's ``pretrained_cfg`` so :func:`captum_fvit.space.resolve_normalization` finds them.

Weights are stored in timm's own Hugging Face layout (a folder with ``config.json`` and
``model.safetensors``), so ``timm.create_model("local-dir:<folder>", pretrained=True)`` loads
them without captum-fvit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import CLASS_NAMES
from ..weight_files import check_json, check_safetensors

__all__ = [
    "DEFAULT_VIT_ARCHITECTURE",
    "DEFAULT_VIT_KWARGS",
    "VIT_MEAN",
    "VIT_STD",
    "build_vit",
    "load_vit",
    "save_vit",
    "vit_pretrained_cfg",
]

#: timm architecture the default ViT is derived from (only its defaults are used).
DEFAULT_VIT_ARCHITECTURE = "vit_tiny_patch16_224"
#: Per-channel normalisation of the default ViT, in [0, 1] pixel units.
VIT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
VIT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

#: Keyword arguments of :func:`timm.create_model` that define the default ViT.
DEFAULT_VIT_KWARGS: dict[str, Any] = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 128,
    "depth": 6,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "num_classes": len(CLASS_NAMES),
    "global_pool": "token",
    "class_token": True,
}

_WEIGHTS_FILE = "model.safetensors"
_CONFIG_FILE = "config.json"
_FIX = "save the model again (captum_fvit.models.save_vit or timm.models.save_for_hf) or download it again"


def vit_pretrained_cfg(
    image_size: int,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] = VIT_MEAN,
    std: Sequence[float] = VIT_STD,
) -> dict[str, Any]:
    """The ``pretrained_cfg`` overlay recording a ViT's input size, normalisation and labels.

    Parameters
    ----------
    image_size : int
        Input side in pixels.
    num_classes : int
        Number of output classes.
    class_names : sequence of str, optional
        One name per class, in label order.
    mean, std : sequence of float
        Per-channel normalisation in [0, 1] pixel units.
    """
    cfg: dict[str, Any] = {
        "input_size": (3, int(image_size), int(image_size)),
        "mean": tuple(float(m) for m in mean),
        "std": tuple(float(s) for s in std),
        "num_classes": int(num_classes),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "fixed_input_size": True,
    }
    if class_names is not None:
        cfg["label_names"] = list(class_names)
    return cfg


def build_vit(
    architecture: str = DEFAULT_VIT_ARCHITECTURE,
    *,
    class_names: Sequence[str] | None = CLASS_NAMES,
    **kwargs: Any,
) -> nn.Module:
    """A randomly initialised ViT (the default one unless ``kwargs`` override it).

    The model draws its initial weights from the global torch RNG (seed it first for a
    reproducible initialisation). Fused attention stays on, as timm builds it; captum-fvit
    switches it off only while it records attention.

    Parameters
    ----------
    architecture : str
        timm architecture to build (its defaults are overridden by ``kwargs``).
    class_names : sequence of str, optional
        Class names recorded in ``pretrained_cfg["label_names"]``.
    **kwargs
        Overrides of :data:`DEFAULT_VIT_KWARGS` (``embed_dim``, ``depth``, ...).

    Returns
    -------
    nn.Module
        A timm ``VisionTransformer`` in train mode with ``pretrained_cfg`` holding the input
        size, mean/std (0.5) and class names.
    """
    import timm

    options = {**DEFAULT_VIT_KWARGS, **kwargs}
    size = options["img_size"]
    size = size if isinstance(size, int) else int(size[0])
    overlay = vit_pretrained_cfg(size, options["num_classes"], class_names)
    return timm.create_model(architecture, pretrained=False, pretrained_cfg_overlay=overlay, **options)


def save_vit(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Save a timm ViT as ``folder/config.json`` + ``folder/model.safetensors``.

    This is timm's own Hugging Face layout (:func:`timm.models.save_for_hf`), loadable with
    ``timm.create_model("local-dir:<folder>", pretrained=True)`` or :func:`load_vit`.

    Returns
    -------
    Path
        ``folder``.
    """
    from timm.models import save_for_hf

    folder = Path(folder)
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def _overlay_num_classes(kwargs: dict[str, Any]) -> dict[str, Any]:
    # timm drops the classifier of a checkpoint whose pretrained_cfg num_classes differs from
    # the model's, so a local file must say how many classes it was trained for.
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if "num_classes" in kwargs:
        overlay.setdefault("num_classes", kwargs["num_classes"])
    return overlay


def load_vit(
    name_or_path: str | os.PathLike,
    pretrained: bool = True,
    *,
    architecture: str | None = None,
    device: str | torch.device = "cpu",
    **timm_kwargs: Any,
) -> nn.Module:
    """Load a timm Vision Transformer in eval mode, from timm's registry, the Hub or a file.

    Parameters
    ----------
    name_or_path : str or path
        One of

        * a timm model name (``"vit_base_patch16_224.augreg_in21k_ft_in1k"``) or a Hub id with
          timm's prefix (``"hf-hub:timm/vit_small_patch16_224.augreg_in21k"``): built by
          ``timm.create_model(name, pretrained=pretrained, **timm_kwargs)``, which downloads
          the weights when they are not cached (needs network access);
        * a local folder in timm's Hugging Face layout (``config.json`` +
          ``model.safetensors``, as written by :func:`save_vit` or ``timm.models.save_for_hf``);
        * a local ``.safetensors`` file: its architecture and arguments come from a
          ``config.json`` next to it, or else from ``architecture`` and ``timm_kwargs``.
    pretrained : bool, default True
        Load weights (``False``: only the architecture, randomly initialised).
    architecture : str, optional
        timm architecture of a bare ``.safetensors`` file without a ``config.json``.
    device : str or torch.device, default "cpu"
    **timm_kwargs
        Passed to :func:`timm.create_model` (``img_size``, ``num_classes``, ...).

    Returns
    -------
    nn.Module
        The model in ``eval()`` mode. Its normalisation is in ``model.pretrained_cfg``
        (read it with :func:`captum_fvit.space.resolve_normalization`).

    Raises
    ------
    FileNotFoundError
        If a path is given that does not exist or lacks the files named above.
    ValueError
        If a bare ``.safetensors`` file comes with neither a ``config.json`` nor
        ``architecture``, or if a local weights file is empty, truncated or not a safetensors
        file (the message names the file and the fix).
    """
    import timm

    kwargs = dict(timm_kwargs)
    path = Path(os.fspath(name_or_path)).expanduser()
    is_path = isinstance(name_or_path, os.PathLike) or path.exists() or str(name_or_path).endswith(
        ".safetensors"
    )
    if not is_path:
        model = timm.create_model(str(name_or_path), pretrained=pretrained, **kwargs)
        return model.to(device).eval()

    if not path.exists():
        raise FileNotFoundError(
            f"no ViT weights at {path}: give a folder with config.json and model.safetensors, a "
            ".safetensors file, or a timm model name"
        )
    if path.is_dir():
        folder = path
    elif (path.parent / _CONFIG_FILE).is_file() and path.name == _WEIGHTS_FILE:
        folder = path.parent
    else:
        folder = None

    if folder is not None:
        for needed in (_CONFIG_FILE, _WEIGHTS_FILE) if pretrained else (_CONFIG_FILE,):
            if not (folder / needed).is_file():
                raise FileNotFoundError(
                    f"{folder} is not a timm model folder: {needed} is missing (save models with "
                    "captum_fvit.models.save_vit or timm.models.save_for_hf)"
                )
        check_json(folder / _CONFIG_FILE, _FIX)
        if pretrained:
            check_safetensors(folder / _WEIGHTS_FILE, _FIX)
        model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=pretrained, **kwargs)
        return model.to(device).eval()

    # A bare .safetensors file: the architecture comes from a config.json beside it or the caller.
    config_path = path.parent / _CONFIG_FILE
    if architecture is None and config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        architecture = config.get("architecture")
        for key, value in (config.get("model_args") or {}).items():
            kwargs.setdefault(key, value)
    if architecture is None:
        raise ValueError(
            f"{path} holds weights only; pass architecture='vit_...' and the timm arguments it was "
            f"built with (img_size, patch_size, num_classes, ...), or put its config.json beside it"
        )
    if pretrained:
        check_safetensors(path, _FIX)
    overlay = _overlay_num_classes(kwargs)
    overlay["file"] = str(path.resolve())
    model = timm.create_model(
        architecture, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs
    )
    return model.to(device).eval()
