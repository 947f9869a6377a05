"""Windowed attention → full token×token matrices (Swin).

A Swin block computes attention inside windows of ``wh×ww`` tokens: it (optionally) shifts
the ``H×W`` token grid cyclically by ``(sh, sw)``, pads it to a multiple of the window, cuts
it into windows and runs softmax attention in each (with a relative-position bias, and a
mask of −100 between tokens that the cyclic shift brought together). The probabilities
come out as ``(N·n_windows)×heads×A×A`` with ``A = wh·ww``.

:class:`WindowGeometry` says which token of the stage each window position holds (or that
it holds padding), and :func:`assemble_windows` places the per-window probabilities into the
stage's block-sparse ``N×heads×T×T`` matrix, ``T = H·W``, tokens row-major: entry
``[i, j]`` is the probability the model computed for query token ``i`` and key token ``j``
when they shared a window, and 0 otherwise. Attention to padding positions (probability
mass the model gave to zero-padded keys) has no token and is dropped, so such rows sum to
less than 1. The same placement turns the gradient with respect to the window
probabilities into the gradient with respect to the full matrix.

Two orders of shifting and padding exist: timm rolls the ``H×W`` grid and then pads
(``pad_first=False``); torchvision and Hugging Face pad first and roll the padded grid
(``pad_first=True``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["WindowGeometry", "WindowedAttention", "assemble_windows"]


@dataclass(frozen=True)
class WindowGeometry:
    """How one Swin block cuts its ``H×W`` token grid into windows.

    Parameters
    ----------
    height, width : int
        The stage's token grid (before padding).
    window : tuple of int
        Window ``(wh, ww)`` in tokens.
    shift : tuple of int
        Cyclic shift ``(sh, sw)`` in tokens (0 for a regular window block).
    pad_first : bool
        Pad to a multiple of the window before the cyclic shift (torchvision, Hugging Face)
        instead of after it (timm).
    """

    height: int
    width: int
    window: tuple[int, int]
    shift: tuple[int, int]
    pad_first: bool

    @property
    def padded(self) -> tuple[int, int]:
        """Padded grid ``(Hp, Wp)``, multiples of the window."""
        wh, ww = self.window
        return -(-self.height // wh) * wh, -(-self.width // ww) * ww

    @property
    def num_windows(self) -> int:
        hp, wp = self.padded
        return (hp // self.window[0]) * (wp // self.window[1])

    @property
    def window_area(self) -> int:
        return self.window[0] * self.window[1]

    @property
    def num_tokens(self) -> int:
        return self.height * self.width

    def token_index(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n_windows×A`` int64: the token (``i·W + j``) at each window position, −1 for
        padding. Windows are in the order the model batches them (row-major over the
        window grid), positions row-major inside a window."""
        return _token_index(self).to(device)


    def real_index(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(positions, tokens)``: the flat window positions (over ``n_windows·A``) that
        hold a token, and that token's index; cached per device."""
        return _real_index(self, torch.device(device))


@functools.lru_cache(maxsize=128)
def _real_index(
    geometry: WindowGeometry, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    index = _token_index(geometry).reshape(-1)
    positions = (index >= 0).nonzero().squeeze(1)
    return positions.to(device), index[positions].to(device)


@functools.lru_cache(maxsize=64)
def _token_index(geometry: WindowGeometry) -> torch.Tensor:
    hp, wp = geometry.padded
    wh, ww = geometry.window
    sh, sw = geometry.shift
    y = torch.arange(hp).view(hp, 1).expand(hp, wp)
    x = torch.arange(wp).view(1, wp).expand(hp, wp)
    if geometry.pad_first:
        # roll(pad(x), -shift): position y holds padded row (y + sh) mod Hp.
        src_y, src_x = (y + sh) % hp, (x + sw) % wp
        valid = (src_y < geometry.height) & (src_x < geometry.width)
    else:
        # pad(roll(x, -shift)): rows y < H hold row (y + sh) mod H, the rest is padding.
        valid = (y < geometry.height) & (x < geometry.width)
        src_y, src_x = (y + sh) % geometry.height, (x + sw) % geometry.width
    index = torch.where(valid, src_y * geometry.width + src_x, torch.full_like(y, -1))
    # window partition: (Hp/wh, wh, Wp/ww, ww) -> (Hp/wh, Wp/ww, wh, ww)
    index = index.reshape(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3)
    return index.reshape(-1, wh * ww).contiguous()


@functools.lru_cache(maxsize=128)
def _pair_index(
    geometry: WindowGeometry, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions (window, query, key) that pair two real tokens, and their flat index
    ``i·T + j`` in the full matrix, on ``device`` (cached: no host copy per forward pass)."""
    index = _token_index(geometry)
    tokens = geometry.num_tokens
    valid = (index[:, :, None] >= 0) & (index[:, None, :] >= 0)
    flat_full = index[:, :, None] * tokens + index[:, None, :]
    positions = valid.reshape(-1).nonzero().squeeze(1)
    return positions.to(device), flat_full.reshape(-1)[positions].to(device)


def assemble_windows(windows: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """Place per-window attention (or its gradient) into the full ``N×heads×T×T`` matrix.

    Parameters
    ----------
    windows : Tensor
        ``(N·n_windows)×heads×A×A`` as the block computed it (windows of one image
        consecutive).
    geometry : WindowGeometry
        The block's windows.

    Returns
    -------
    Tensor
        ``N×heads×T×T``, zero where two tokens did not share a window; differentiable in
        ``windows``.
    """
    num_windows, area = geometry.num_windows, geometry.window_area
    if windows.dim() != 4 or windows.shape[-2:] != (area, area) or windows.shape[0] % num_windows:
        raise ValueError(
            f"window attention of shape {tuple(windows.shape)} does not fit {num_windows} "
            f"windows of {area} tokens ({geometry}); the adapter's geometry is out of date"
        )
    n, heads = windows.shape[0] // num_windows, windows.shape[1]
    positions, flat = _pair_index(geometry, windows.device)
    per_image = windows.reshape(n, num_windows, heads, area, area).transpose(1, 2)
    source = per_image.reshape(n, heads, -1).index_select(-1, positions)
    tokens = geometry.num_tokens
    full = windows.new_zeros(n, heads, tokens * tokens).index_copy(-1, flat, source)
    return full.view(n, heads, tokens, tokens)


@dataclass(frozen=True, eq=False)
class WindowedAttention:
    """One Swin block's attention in its compact window form, with its geometry.

    The full matrix (:meth:`dense`) is block-sparse: each token attends only inside its
    window. Listeners that declare ``accepts_windows = True`` (the built-in methods)
    receive this form from :class:`~captum_fvit.attention.AttentionRecorder` and work on
    ``N·n_windows·heads·A²`` numbers instead of ``N·heads·T²``; every other listener gets
    :meth:`dense`.

    Attributes
    ----------
    windows : Tensor
        ``(N·n_windows)×heads×A×A`` as the block computed it (or its gradient).
    geometry : WindowGeometry
        Which token each window position holds.
    """

    windows: torch.Tensor
    geometry: WindowGeometry

    @property
    def shape(self) -> torch.Size:
        """Shape ``N×heads×T×T`` of the full matrix."""
        n = self.windows.shape[0] // self.geometry.num_windows
        tokens = self.geometry.num_tokens
        return torch.Size((n, self.windows.shape[1], tokens, tokens))

    @property
    def dtype(self) -> torch.dtype:
        return self.windows.dtype

    @property
    def device(self) -> torch.device:
        return self.windows.device

    def per_image(self) -> torch.Tensor:
        """The windows as ``N×n_windows×heads×A×A``."""
        n, heads = self.shape[0], self.shape[1]
        area = self.geometry.window_area
        return self.windows.reshape(n, self.geometry.num_windows, heads, area, area)

    def dense(self) -> torch.Tensor:
        """The full ``N×heads×T×T`` matrix (:func:`assemble_windows`)."""
        return assemble_windows(self.windows, self.geometry)
