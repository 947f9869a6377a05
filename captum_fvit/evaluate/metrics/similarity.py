"""Similarity of two explanation maps, per image (THEORY §4).

Every function takes two batches of maps of the same shape — ``N×P`` token maps, ``N×H×W`` or
``N×C×H×W`` pixel maps — and compares row ``i`` of ``a`` with row ``i`` of ``b`` over all
non-batch entries (a pixel map's channels count as separate entries: sum or average them
first when they are copies of one map). Each returns an ``N`` tensor; everything is batched
torch (no numpy, no per-image loops).

* :func:`topk_overlap` — ``V_k = |T_k(a) ∩ T_k(b)| / k``, the overlap of the top-``k`` *sets*;
* :func:`spearman` — Spearman rank correlation with average ranks for ties (as SciPy);
* :func:`jsd`, :func:`tvd` — Jensen–Shannon divergence and total variation distance of the
  sum-normalised non-negative parts ``p = a⁺ / Σ a⁺``;
* :func:`topk_mass` — the share of ``p`` on a given set of entries (the quantity the top-k
  explanation attack lowers).
"""

from __future__ import annotations

import math

import torch

from ...validation import check_k, check_same_shape
from .maps import as_map_batch, flatten_maps

__all__ = [
    "average_ranks",
    "jsd",
    "normalize_mass",
    "spearman",
    "topk_indices",
    "topk_mass",
    "topk_overlap",
    "tvd",
]


def _pair(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    a = as_map_batch(a, "a")
    b = as_map_batch(b, "b")
    check_same_shape(a, b)
    return flatten_maps(a), flatten_maps(b)


def topk_indices(maps: torch.Tensor, k: int) -> torch.Tensor:
    """``N×k`` indices of the ``k`` largest entries of each row of an ``N×D`` tensor.

    Ties are broken deterministically in favour of the lower index (a stable sort), so equal
    maps always give equal sets.
    """
    order = torch.sort(maps, dim=1, descending=True, stable=True).indices
    return order[:, :k]


def _membership(maps: torch.Tensor, k: int) -> torch.Tensor:
    member = torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    return member.scatter_(1, topk_indices(maps, k), True)


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` overlap ``V_k = |T_k(a) ∩ T_k(b)| / k`` per image.

    ``T_k(m)`` is the *set* of the ``k`` entries with the largest values; the order inside the
    set does not matter (comparing sorted index lists position by position would undercount).

    Parameters
    ----------
    a, b : Tensor
        Maps of the same shape ``N×…`` (token or pixel maps).
    k : int
        Set size, ``1 ≤ k ≤ D`` with ``D`` the entries per map.

    Returns
    -------
    Tensor
        ``N`` values in ``[0, 1]`` (float32, or the maps' dtype if float64).

    Notes
    -----
    Ties at the ``k``-th value are broken in favour of the lower index in both maps.
    """
    a, b = _pair(a, b)
    k = check_k(k, a.shape[1], inclusive=True, what="entries per map")
    shared = (_membership(a, k) & _membership(b, k)).sum(dim=1)
    dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
    return shared.to(dtype) / k


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..D`` of each row of an ``N×D`` tensor, ties given their average rank.

    The same convention as ``scipy.stats.rankdata(method="average")``; float64 output.
    """
    n, d = x.shape
    values, order = torch.sort(x, dim=1, stable=True)
    position = torch.arange(d, device=x.device).expand(n, d)
    starts = torch.ones((n, d), dtype=torch.bool, device=x.device)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    # First and last position of each entry's tie group.
    first = torch.cummax(torch.where(starts, position, 0), dim=1).values
    last = torch.where(ends, position, d).flip(1).cummin(dim=1).values.flip(1)
    sorted_ranks = (first + last).double() / 2 + 1
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps.

    The Pearson correlation of the average ranks (ties get the mean of the ranks they span),
    which equals ``scipy.stats.spearmanr`` of the flattened rows.

    Parameters
    ----------
    a, b : Tensor
        Maps of the same shape ``N×…``.

    Returns
    -------
    Tensor
        ``N`` float64 values in ``[-1, 1]``; NaN for a row where either map is constant
        (the correlation is undefined there, as in SciPy).
    """
    a, b = _pair(a, b)
    if a.shape[1] < 2:
        raise ValueError("spearman needs at least 2 entries per map to rank them")
    ra = average_ranks(a)
    rb = average_ranks(b)
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()
    rho = (ra * rb).sum(dim=1) / denominator
    return torch.where(denominator > 0, rho.clamp(-1, 1), torch.nan)


def normalize_mass(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """``p = m⁺ / Σ m⁺`` per row of an ``N×D`` tensor (float64).

    Raises
    ------
    ValueError
        If a row has no positive entry (its distribution is undefined).
    """
    positive = maps.double().clamp(min=0)
    total = positive.sum(dim=1, keepdim=True)
    empty = (total[:, 0] <= 0).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"rows {empty[:8].tolist()} of {name} have no positive entry, so they are not a "
            "distribution after clamping at 0; shift or rectify the maps first (e.g. "
            "`m - m.amin(dim=1, keepdim=True)` or `m.abs()`)"
        )
    return positive / total


def jsd(a: torch.Tensor, b: torch.Tensor, base: float | None = None) -> torch.Tensor:
    """Jensen–Shannon divergence of the sum-normalised maps.

    ``JSD(p, q) = ½ KL(p‖m) + ½ KL(q‖m)`` with ``m = (p + q)/2``, ``p = a⁺/Σa⁺``,
    ``q = b⁺/Σb⁺`` (negative entries clamped to 0). Zero entries contribute ``0·log 0 = 0``.

    Parameters
    ----------
    a, b : Tensor
        Maps of the same shape ``N×…``; each row needs at least one positive entry.
    base : float, optional
        Logarithm base; default ``e`` (**nats**, range ``[0, ln 2]``). ``base=2`` gives bits,
        range ``[0, 1]``.

    Returns
    -------
    Tensor
        ``N`` float64 divergences. Note that ``scipy.spatial.distance.jensenshannon``
        returns the *distance*, the square root of this value.
    """
    a, b = _pair(a, b)
    p = normalize_mass(a, "a")
    q = normalize_mass(b, "b")
    m = (p + q) / 2
    # xlogy(p, p/m) is 0 where p = 0, and m > 0 wherever p > 0.
    safe_m = torch.where(m > 0, m, 1.0)
    kl_pm = torch.xlogy(p, p / safe_m).sum(dim=1)
    kl_qm = torch.xlogy(q, q / safe_m).sum(dim=1)
    divergence = ((kl_pm + kl_qm) / 2).clamp(min=0)
    if base is not None:
        if not base > 0 or base == 1:
            raise ValueError(f"base must be > 0 and ≠ 1, got {base}")
        divergence = divergence / math.log(base)
    return divergence


def tvd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance ``½ Σ |p − q|`` of the sum-normalised maps.

    ``p = a⁺/Σa⁺``, ``q = b⁺/Σb⁺`` (negative entries clamped to 0).

    Returns
    -------
    Tensor
        ``N`` float64 distances in ``[0, 1]``.
    """
    a, b = _pair(a, b)
    p = normalize_mass(a, "a")
    q = normalize_mass(b, "b")
    return (p - q).abs().sum(dim=1) / 2


def topk_mass(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Share of the sum-normalised map ``p = m⁺/Σm⁺`` on the entries ``index`` (``N×k``).

    Differentiable in ``maps`` (used as the objective of the top-k explanation attack); rows
    without positive mass give 0 instead of raising.
    """
    flat = flatten_maps(maps)
    positive = flat.clamp(min=0)
    total = positive.sum(dim=1, keepdim=True)
    share = positive / torch.where(total > 0, total, torch.ones_like(total))
    return share.gather(1, index).sum(dim=1)
