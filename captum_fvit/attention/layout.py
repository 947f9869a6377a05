"""Token layout of a Vision Transformer: prefix tokens and the patch grid.

A ViT turns an ``H×W`` image into ``T = P + h·w`` tokens: ``P`` *prefix* tokens (the class
token, a distillation token, register tokens, ...) followed by the ``h×w`` patch tokens in
row-major order. Explanation methods read the class-token row of the attention and keep
only the patch columns, so they need ``P``, the index of the class token and the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TokenLayout", "infer_grid"]


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
        for models without one (pooled models).
    """

    num_prefix_tokens: int
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    cls_index: int | None = 0

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

    def require_cls(self, method: str) -> int:
        """Return the class-token index, or explain why ``method`` cannot run."""
        if self.cls_index is None:
            raise ValueError(
                f"method {method!r} reads the class-token row of the attention, but this model "
                "has no class token (it pools patch tokens). Use a model with a class token "
                "(e.g. timm `class_token=True`) or write a token-map method for pooled models."
            )
        return self.cls_index


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
