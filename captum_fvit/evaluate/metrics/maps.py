"""Map-batch helpers of the evaluation metrics: checked ``N×…`` maps, flattening, pixel grids.

Argument checks (``k``, ``eps``, ``steps``, shapes) live in :mod:`captum_fvit.validation`.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "as_map_batch",
    "flatten_maps",
    "to_pixel_grid",
]


def as_map_batch(maps: object, name: str = "maps", min_dim: int = 2) -> torch.Tensor:
    """Check that ``maps`` is a non-empty, finite ``N×…`` tensor and return it as floating point.

    Integer and boolean maps are converted to float32 (ties then matter; see each metric).

    Raises
    ------
    TypeError
        If ``maps`` is not a tensor.
    ValueError
        If it has fewer than ``min_dim`` dimensions, is empty or holds NaN/inf.
    """
    if not isinstance(maps, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor (N×P token maps or N×C×H×W / N×H×W pixel maps), "
            f"got {type(maps).__name__}; convert arrays with torch.as_tensor"
        )
    if maps.dim() < min_dim:
        hint = " (add a batch dimension with `m.unsqueeze(0)`)" if maps.dim() == min_dim - 1 else ""
        raise ValueError(
            f"{name} must have a batch dimension and at least {min_dim} dimensions, got shape "
            f"{tuple(maps.shape)}{hint}"
        )
    if maps.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(maps.shape)}): nothing to evaluate")
    if not maps.is_floating_point():
        maps = maps.float()
    if not torch.isfinite(maps).all():
        bad = (~torch.isfinite(maps.reshape(maps.shape[0], -1))).any(dim=1).nonzero().flatten()
        raise ValueError(
            f"{name} contains NaN or infinite values (rows {bad[:8].tolist()}); check the "
            "explanation that produced them (e.g. a 0/0 normalisation)"
        )
    return maps


def flatten_maps(maps: torch.Tensor) -> torch.Tensor:
    """``N×…`` → ``N×D``: every non-batch entry (token or pixel and channel) is one item."""
    return maps.reshape(maps.shape[0], -1)


def _square_grid(num_tokens: int, name: str) -> tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{name} has {num_tokens} tokens per map, which is not a square grid; pass "
            "grid=(h, w) (e.g. `explainer.grid`)"
        )
    return side, side


def to_pixel_grid(
    maps: torch.Tensor,
    size: tuple[int, int],
    *,
    grid: tuple[int, int] | None = None,
    name: str = "maps",
) -> torch.Tensor:
    """Any map batch → ``N×H×W`` float64 at ``size`` (bilinear upsampling, channels averaged).

    ``N×P`` token maps are laid out on ``grid`` (row-major; a square grid when ``None``);
    ``N×h×w`` and ``N×C×h×w`` maps are averaged over channels. A map at another resolution
    than ``size`` is resized bilinearly (``align_corners=False``), as Chefer et al. (2021)
    upsample ViT maps.
    """
    n = maps.shape[0]
    maps = maps.double()
    if maps.dim() == 2:
        h, w = _square_grid(maps.shape[1], name) if grid is None else (int(grid[0]), int(grid[1]))
        if h * w != maps.shape[1]:
            raise ValueError(
                f"grid {h}x{w} needs {h * w} tokens per map but {name} has {maps.shape[1]}"
            )
        maps = maps.reshape(n, 1, h, w)
    elif maps.dim() == 3:
        maps = maps.unsqueeze(1)
    elif maps.dim() == 4:
        # Channel copies (AttentionMap/DDS broadcast one map) are taken as they are: averaging
        # would round values apart or together and change the ties.
        same = bool((maps == maps[:, :1]).all())
        maps = maps[:, :1] if same else maps.mean(dim=1, keepdim=True)
    else:
        raise ValueError(
            f"{name} must be N×P token maps, N×H×W or N×C×H×W pixel maps, got shape "
            f"{tuple(maps.shape)}"
        )
    height, width = int(size[0]), int(size[1])
    if maps.shape[-2:] != (height, width):
        if maps.shape[-2] > height or maps.shape[-1] > width:
            raise ValueError(
                f"{name} are {maps.shape[-2]}x{maps.shape[-1]} pixels but the target size is "
                f"{height}x{width}: a map may be coarser than the images/masks, not finer; "
                "give masks and images at the resolution of the input images"
            )
        maps = torch.nn.functional.interpolate(
            maps, size=(height, width), mode="bilinear", align_corners=False
        )
    return maps[:, 0]
