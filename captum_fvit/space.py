"""Moving between spaces: pixels ↔ the model's normalisation, token grid ↔ pixels.

Everything captum-fvit measures — the noise level σ, perturbation sizes ε and certified
radii R — is in **[0, 1] pixel units** of the image as passed in. Models, however, take
normalised tensors ``(pixels − mean) / std``. :class:`Normalization` converts between the two;
:func:`tokens_to_pixels` turns an ``N×P`` token map into an ``N×C×H×W`` attribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention.layout import TokenLayout

__all__ = ["Normalization", "resolve_normalization", "tokens_to_pixels", "UPSAMPLE_MODES"]

#: Ways to spread a token value over its patch's pixels.
UPSAMPLE_MODES = ("bilinear", "nearest", "bicubic")


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean``/``std`` a model expects: ``model_input = (pixels − mean) / std``.

    Parameters
    ----------
    mean, std : tuple of float
        One value per channel, in [0, 1] pixel units. ``std`` must be > 0.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} must have the same length")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be > 0 for every channel, got {self.std}")

    @classmethod
    def identity(cls, channels: int = 3) -> Normalization:
        """Inputs already in [0, 1] pixel units."""
        return cls((0.0,) * channels, (1.0,) * channels)

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != len(self.mean) and len(self.mean) != 1:
            raise ValueError(
                f"the normalisation has {len(self.mean)} channels but the inputs have "
                f"{x.shape[1]}; pass input_mean/input_std with one value per channel"
            )
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return mean, std

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model space → [0, 1] pixel units."""
        mean, std = self._stats(x)
        return x * std + mean

    def from_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixel units → model space."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def pixel_scale(self) -> tuple[float, ...]:
        """How much one pixel unit is in model units, per channel (``1/std``)."""
        return tuple(1.0 / s for s in self.std)


def resolve_normalization(
    model: nn.Module,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> Normalization:
    """The normalisation a model's inputs are in.

    Explicit ``input_mean``/``input_std`` win; otherwise the normalisation the model carries:
    timm's ``pretrained_cfg`` (``mean``, ``std``), or ``image_mean``/``image_std`` on a
    Hugging Face config when present. Otherwise the inputs are taken to be [0, 1] pixels and
    a warning (once per model) asks for ``input_mean``/``input_std``: torchvision models and
    Hugging Face models do not carry their normalisation, and with the wrong one σ, ε and
    radii are no longer in pixel units.
    """
    from .validation import warn_once

    if (input_mean is None) != (input_std is None):
        raise ValueError("give both input_mean and input_std, or neither")
    if input_mean is not None:
        try:
            mean = tuple(float(m) for m in input_mean)
            std = tuple(float(s) for s in input_std)
        except TypeError:
            raise TypeError(
                "input_mean and input_std must be sequences of numbers, one per channel, e.g. "
                "input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225)"
            ) from None
        return Normalization(mean, std)
    carried = _carried_normalization(model)
    if carried is not None:
        return carried
    warn_once(
        "normalization",
        model,
        f"{type(model).__name__} does not carry its input normalisation, so its inputs are "
        "taken to be [0, 1] pixels. If the model expects normalised inputs (e.g. ImageNet "
        "mean/std), pass input_mean=... and input_std=... so that σ, ε and radii stay in "
        "[0, 1] pixel units.",
    )
    return Normalization.identity()


def _carried_normalization(model: object) -> Normalization | None:
    """The mean/std a model records about itself (timm, Hugging Face), if any."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
        return Normalization(tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"])))
    config = getattr(model, "config", None)
    mean = getattr(config, "image_mean", None)
    std = getattr(config, "image_std", None)
    if mean is not None and std is not None:
        return Normalization(tuple(map(float, mean)), tuple(map(float, std)))
    return None


def tokens_to_pixels(
    maps: torch.Tensor,
    layout: TokenLayout,
    image_size: Sequence[int],
    channels: int = 1,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Spread an ``N×P`` token map over the pixels of an ``N×C×H×W`` image.

    The grid is upsampled to the pixels it covers (``h·ph × w·pw``); pixels the patch
    embedding never saw (a border when ``H`` is not a multiple of the patch height) get 0,
    and a padded grid is cropped. The map is then repeated over ``channels``.

    Parameters
    ----------
    maps : Tensor
        ``N×P`` values, ``P = h·w`` in row-major order.
    layout : TokenLayout
        Grid and patch size.
    image_size : sequence of int
        ``(H, W)`` in pixels.
    channels : int, default 1
        ``C`` of the output.
    mode : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        ``"nearest"`` gives each patch a constant value.
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    n, num_patches = maps.shape
    h, w = layout.grid
    if num_patches != h * w:
        raise ValueError(f"a {h}x{w} grid needs {h * w} tokens per map, got {num_patches}")
    height, width = int(image_size[-2]), int(image_size[-1])
    grid = maps.reshape(n, 1, h, w)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    covered = F.interpolate(grid, size=layout.covered_size, mode=mode, **kwargs)
    covered = covered[..., :height, :width]
    pad_h, pad_w = height - covered.shape[-2], width - covered.shape[-1]
    if pad_h or pad_w:
        covered = F.pad(covered, (0, pad_w, 0, pad_h))
    return covered.expand(n, channels, height, width).contiguous()
