"""Token layout of a Vision Transformer: prefix tokens and the patch grid.

A ViT turns an ``H×W`` image into ``T = P + h·w`` tokens: ``P`` *prefix* tokens (the class
token, a distillation token, register tokens, ...) followed by the ``h×w`` patch tokens in
row-major order. Explanation methods read the *explained row* of the attention — the class
token's row, or for pooled models (no class token, or a head that averages the patch
tokens) the mean of the patch tokens' rows — and keep only the patch columns, so they need
``P``, the class-token index and the grid.

Hierarchical models (Swin) have *stages*: stage ``s + 1`` works on the grid of stage ``s``
merged 2×2 (``⌈h/2⌉×⌈w/2⌉``). Their layout lists every stage's grid and the stage of every
attention layer; token maps are always given on the first stage's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TokenLayout", "infer_grid", "merged_grid"]


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of one forward pass come from.

    Parameters
    ----------
    num_prefix_tokens : int
        Tokens before the patch tokens (class, distillation, register tokens).
    grid : tuple of int
        Patch grid ``(h, w)``; patch tokens are stored row-major after the prefix.
    patch_size : tuple of int
        Patch height and width in pixels of the image the model sees.
    cls_index : int or None
        Index of the class token whose attention row explains the prediction, or ``None``
        for pooled models, whose explained row is the mean of the patch tokens' rows (the
        *mean query*).
    stages : tuple of tuple of int, optional
        Grids ``(h_s, w_s)`` of every stage of a hierarchical model, the first equal to
        ``grid``; empty for a plain ViT (one stage, ``grid``).
    layer_stages : tuple of int, optional
        Stage of each attention layer (layer order); empty for a plain ViT (all stage 0).
    """

    num_prefix_tokens: int
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    cls_index: int | None = 0
    stages: tuple[tuple[int, int], ...] = ()
    layer_stages: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.stages and tuple(self.stages[0]) != tuple(self.grid):
            raise ValueError(
                f"the first stage's grid {self.stages[0]} must be the layout's grid {self.grid}"
            )
        if self.layer_stages and max(self.layer_stages) >= len(self.stage_grids):
            raise ValueError(
                f"layer_stages {self.layer_stages} name stages beyond the "
                f"{len(self.stage_grids)} stage grids {self.stage_grids}"
            )

    @property
    def stage_grids(self) -> tuple[tuple[int, int], ...]:
        """Grid of every stage (``(grid,)`` for a plain ViT)."""
        return tuple(self.stages) if self.stages else (tuple(self.grid),)

    @property
    def mean_query(self) -> bool:
        """Whether the explained row is the mean of the patch tokens' rows (no class token)."""
        return self.cls_index is None

    def stage_of(self, layer: int) -> int:
        """Stage of attention layer ``layer`` (0 for a plain ViT)."""
        return self.layer_stages[layer] if self.layer_stages else 0

    def stage_patch_slice(self, stage: int) -> slice:
        """The patch tokens among the tokens of ``stage`` (later stages have no prefix)."""
        if stage == 0:
            return self.patch_slice
        h, w = self.stage_grids[stage]
        return slice(0, h * w)

    @property
    def num_patches(self) -> int:
        """Number of patch tokens ``h·w``."""
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        """All tokens ``T`` that attention is computed over."""
        return self.num_prefix_tokens + self.num_patches

    @property
    def patch_slice(self) -> slice:
        """Slice selecting the patch tokens out of all tokens."""
        return slice(self.num_prefix_tokens, self.num_tokens)

    @property
    def covered_size(self) -> tuple[int, int]:
        """Pixels ``(h·ph, w·pw)`` covered by the patch grid (may be less than the image)."""
        return self.grid[0] * self.patch_size[0], self.grid[1] * self.patch_size[1]


def merged_grid(grid: tuple[int, int]) -> tuple[int, int]:
    """Grid after a Swin patch merging: 2×2 neighbours → one token, odd sides padded."""
    return (grid[0] + 1) // 2, (grid[1] + 1) // 2


def infer_grid(
    num_tokens: int,
    image_size: tuple[int, int],
    patch_size: tuple[int, int],
    num_prefix_tokens: int | None = None,
) -> tuple[tuple[int, int], int]:
    """Infer the patch grid (and, if unknown, the prefix count) from an observed token count.

    Tries the floor grid ``(H // ph, W // pw)`` (patch embedding without padding) and the
    ceil grid (dynamic padding).

    Parameters
    ----------
    num_tokens : int
        ``T``, the sequence length seen by the attention layers.
    image_size : tuple of int
        ``(H, W)`` in pixels of the tensor given to the model.
    patch_size : tuple of int
        ``(ph, pw)`` in pixels.
    num_prefix_tokens : int, optional
        Known prefix count; when ``None`` it is ``T - h·w``.

    Returns
    -------
    grid : tuple of int
        ``(h, w)``.
    num_prefix_tokens : int
        The prefix count.
    """
    height, width = image_size
    ph, pw = patch_size
    candidates = [
        (height // ph, width // pw),
        (math.ceil(height / ph), math.ceil(width / pw)),
    ]
    for h, w in candidates:
        prefix = num_tokens - h * w if num_prefix_tokens is None else num_prefix_tokens
        if prefix >= 0 and prefix + h * w == num_tokens:
            return (h, w), prefix
    raise ValueError(
        f"cannot match {num_tokens} tokens to a {height}x{width} image with "
        f"{ph}x{pw} patches (expected {num_prefix_tokens if num_prefix_tokens is not None else 'P'}"
        f" prefix tokens + a {candidates[0][0]}x{candidates[0][1]} grid). If the model "
        "resizes or crops internally, register a custom adapter with "
        "`captum_fvit.attention.register_adapter` that reports its layout."
    )
