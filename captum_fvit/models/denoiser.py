"""The bundled diffusion denoiser: a small diffusers ``UNet2DModel`` DDPM and its scheduler.

The default UNet is an ε-prediction DDPM for 64×64 RGB images of the shapes benchmark,
trained with diffusers' linear 1000-step schedule (β from 1e-4 to 0.02) only over the
low-noise timesteps that denoised diffusion smoothing uses (pixel noise σ ≤ 0.5 in [0, 1]
pixel units, i.e. ``t ≤ t*(0.5) = 259``). Wrapped in
:class:`~captum_fvit.denoise.DiffusionDenoiser` it removes Gaussian pixel noise in one UNet
evaluation.

It is stored in diffusers' own layout (``unet/config.json`` +
``unet/diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``), so
``UNet2DModel.from_pretrained(folder, subfolder="unet")`` loads it without captum-fvit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..denoise import DiffusionDenoiser

__all__ = [
    "DEFAULT_SCHEDULER_CONFIG",
    "DEFAULT_UNET_CONFIG",
    "build_scheduler",
    "build_unet",
    "load_denoiser",
    "save_denoiser",
]

#: ``UNet2DModel`` arguments of the default denoiser (64×64 RGB, three resolutions,
#: no attention in the down/up blocks, one self-attention layer in the 16×16 mid block).
DEFAULT_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
    "add_attention": True,
    "attention_head_dim": 32,
}

#: ``DDPMScheduler`` arguments: the standard linear DDPM schedule, ε-prediction.
DEFAULT_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
}

UNET_SUBFOLDER = "unet"
SCHEDULER_SUBFOLDER = "scheduler"


def build_unet(**overrides: Any) -> Any:
    """A randomly initialised ``diffusers.UNet2DModel`` (the default one unless overridden).

    Initial weights come from the global torch RNG; seed it first for reproducibility.

    Parameters
    ----------
    **overrides
        Replacements for entries of :data:`DEFAULT_UNET_CONFIG`.
    """
    from diffusers import UNet2DModel

    config = {**DEFAULT_UNET_CONFIG, **overrides}
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        config[key] = tuple(config[key])
    return UNet2DModel(**config)


def build_scheduler(**overrides: Any) -> Any:
    """The ``diffusers.DDPMScheduler`` of the default denoiser (linear β 1e-4 … 0.02)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{**DEFAULT_SCHEDULER_CONFIG, **overrides})


def save_denoiser(unet: Any, scheduler: Any, folder: str | os.PathLike) -> Path:
    """Save a UNet and its scheduler in diffusers' layout under ``folder``.

    Writes ``folder/unet/{config.json, diffusion_pytorch_model.safetensors}`` and
    ``folder/scheduler/scheduler_config.json``; :func:`load_denoiser` (or diffusers' own
    ``from_pretrained``) reads them back.

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    unet.save_pretrained(str(folder / UNET_SUBFOLDER), safe_serialization=True)
    scheduler.save_pretrained(str(folder / SCHEDULER_SUBFOLDER))
    return folder


def load_denoiser(
    hub_id_or_path: str | os.PathLike,
    subfolder: str | None = None,
    **kwargs: Any,
) -> DiffusionDenoiser:
    """Load a diffusers UNet + DDPM scheduler as a :class:`~captum_fvit.denoise.DiffusionDenoiser`.

    Parameters
    ----------
    hub_id_or_path : str or path
        A Hugging Face Hub id (``"google/ddpm-cifar10-32"``; downloaded by diffusers unless
        cached, so it needs network access) or a local folder. A local folder in the layout
        :func:`save_denoiser` writes (``unet/`` and ``scheduler/`` subfolders) is detected
        automatically; a folder holding a UNet's ``config.json`` and
        ``scheduler_config.json`` side by side works as well.
    subfolder : str, optional
        Folder of the UNet inside ``hub_id_or_path`` (its scheduler is then read from the
        sibling ``scheduler`` folder, see :meth:`DiffusionDenoiser.from_pretrained`).
    **kwargs
        Passed to :meth:`DiffusionDenoiser.from_pretrained`: ``scheduler``,
        ``torch_dtype``, ``device``, ``local_files_only`` and the denoiser options
        (``num_steps``, ``exact_noise_match``, ``clip``, ...).

    Returns
    -------
    DiffusionDenoiser
        With the UNet in eval mode.

    Raises
    ------
    FileNotFoundError
        If ``hub_id_or_path`` is an existing folder without a UNet ``config.json`` (at its
        root or in ``unet/``).
    """
    source = os.fspath(hub_id_or_path)
    path = Path(source).expanduser()
    if path.is_dir():
        source = str(path)
        if subfolder is None and (path / UNET_SUBFOLDER / "config.json").is_file():
            subfolder = UNET_SUBFOLDER
        root = path / subfolder if subfolder else path
        if not (root / "config.json").is_file():
            raise FileNotFoundError(
                f"{root} has no UNet config.json; save denoisers with "
                "captum_fvit.models.save_denoiser or UNet2DModel.save_pretrained"
            )
        kwargs.setdefault("local_files_only", True)
    with _quiet_diffusers():
        return DiffusionDenoiser.from_pretrained(source, subfolder=subfolder, **kwargs)


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    # diffusers warns on every load that the optional `accelerate` package is missing; the
    # small UNets here load fine without it.
    from diffusers.utils import logging as diffusers_logging

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(previous)
