"""The methods' arithmetic on Swin's compact window form (no ``T×T`` matrix is built).

A Swin block's attention matrix is block-sparse: token ``i`` attends only to the tokens of
its window. :class:`~captum_fvit.attention.WindowedAttention` keeps the ``A×A`` windows
(``A = wh·ww``) and their :class:`~captum_fvit.attention.WindowGeometry`. Everything the
methods need is a product of a row vector with such a matrix, or its mean query row, which
this module computes window by window — ``O(T·A)`` instead of ``O(T²)`` — giving exactly
what the same operations on the full matrix give (padding positions hold no token: their
keys are dropped, their queries contribute nothing). The tests compare both paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attention.windows import WindowedAttention, WindowGeometry
from .base import fuse_heads

__all__ = ["WindowFactor", "window_mean_query", "window_rollout_step", "window_cam"]


def _real(geometry: WindowGeometry, device: torch.device) -> torch.Tensor:
    """``n_windows×A`` bool: positions holding a token."""
    return geometry.token_index(device) >= 0


def _scatter_to_tokens(
    per_position: torch.Tensor, geometry: WindowGeometry
) -> torch.Tensor:
    """``…×n_windows×A`` values at window positions → ``…×T`` values per token (each token
    holds exactly one window position; padding positions are dropped)."""
    positions, tokens = geometry.real_index(per_position.device)
    flat = per_position.reshape(*per_position.shape[:-2], -1).index_select(-1, positions)
    out = flat.new_zeros(*flat.shape[:-1], geometry.num_tokens)
    return out.index_copy(-1, tokens, flat)


def window_mean_query(attention: WindowedAttention) -> torch.Tensor:
    """The mean query row of every head, ``N×heads×T``: ``(1/T) Σ_i A[i, :]`` over the
    tokens ``i`` of the stage (padding queries excluded)."""
    geometry = attention.geometry
    x = attention.per_image()  # N × nW × heads × A(query) × A(key)
    real = _real(geometry, x.device).to(x.dtype)
    columns = (x * real[None, :, None, :, None]).sum(dim=-2)  # N × nW × heads × A
    return _scatter_to_tokens(columns.transpose(1, 2), geometry) / geometry.num_tokens


@dataclass(frozen=True, eq=False)
class WindowFactor:
    """One factor ``F`` (or ``I + F`` with ``plus_identity``) of a stage product, as fused
    ``N×n_windows×A×A`` windows."""

    windows: torch.Tensor
    geometry: WindowGeometry
    plus_identity: bool = False

    def left_multiply(self, row: torch.Tensor) -> torch.Tensor:
        """``row · F`` (``row + row · F``) for ``N×T`` rows."""
        index = self.geometry.token_index(row.device)
        real = (index >= 0).to(row.dtype)
        gathered = row[:, index.clamp(min=0)] * real  # N × nW × A (query positions)
        product = (gathered.unsqueeze(-2) @ self.windows).squeeze(-2)  # N × nW × A (keys)
        out = _scatter_to_tokens(product, self.geometry)
        return row + out if self.plus_identity else out

    def mean_query(self) -> torch.Tensor:
        """``u · F`` (``u + u · F``) for the mean query ``u = (1/T)·1``."""
        tokens = self.geometry.num_tokens
        n = self.windows.shape[0]
        u = self.windows.new_full((n, tokens), 1.0 / tokens)
        return self.left_multiply(u)


def window_rollout_step(
    attention: WindowedAttention, head_fusion: str, residual: bool
) -> WindowFactor:
    """``rownorm((fuse_h A + I)/2)`` (or ``rownorm(fuse_h A)``) in window form."""
    geometry = attention.geometry
    fused = fuse_heads(attention.per_image(), head_fusion, dim=2)  # N × nW × A × A
    real = _real(geometry, fused.device)
    fused = fused * real[None, :, None, :].to(fused.dtype)  # padded keys hold no token
    if residual:
        eye = torch.diag_embed(real.to(fused.dtype))  # nW × A × A, 1 on real diagonals
        fused = (fused + eye) / 2
    sums = fused.sum(dim=-1, keepdim=True)
    keep = real[None, :, :, None]
    fused = torch.where(keep, fused / torch.where(keep, sums, torch.ones_like(sums)), 0.0)
    return WindowFactor(fused, geometry)


def window_cam(probs: WindowedAttention, grad: WindowedAttention) -> WindowFactor:
    """``I + mean_h (∇A ⊙ A)⁺`` in window form (Chefer 2021b's per-layer factor)."""
    cam = (grad.per_image() * probs.per_image()).clamp(min=0).mean(dim=2)
    return WindowFactor(cam, probs.geometry, plus_identity=True)
