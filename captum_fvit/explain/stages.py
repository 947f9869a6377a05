"""The explained row and the way down through Swin's patch merging (methods page: rules).

*Explained row.* A ViT with a class token is explained by that token's row of the
attention (or of a rolled-out matrix). A pooled model (no class token — Swin, timm
``global_pool="avg"``) predicts from the *mean* of its patch tokens, so its explained row
is the *mean query* ``q = (1/P) Σ_{i ∈ patches} M[i, :]``: the average of the patch tokens'
rows.

*Children rule.* A Swin patch merging turns each 2×2 block of stage-``s`` tokens (odd
sides padded with zeros) into one stage-``s+1`` token. Relevance ``r`` over stage-``s+1``
tokens goes down to stage ``s`` by giving each child an equal share of its parent:
``r_s[c] = r_{s+1}[parent(c)] / |children(parent(c))|`` (``|children|`` is 4, or 2 or 1 at
an odd edge), i.e. ``r_s = r_{s+1} M_s`` with ``M_s`` the 2×2 averaging matrix of the merge.
Every row of ``M_s`` sums to 1, so the total relevance is kept, exactly as a rolled-out
attention row keeps its sum; products across stages are
``R = R_S M_{S-1} R_{S-1} ⋯ M_0 R_0`` and every map ends on the first stage's grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..attention.layout import TokenLayout, merged_grid
from .windowed import WindowFactor

__all__ = [
    "query_rows",
    "spread_to_children",
    "to_first_grid",
    "combine_stage_factors",
    "combine_stage_products",
]


def query_rows(
    matrix: torch.Tensor, cls_index: int | None, layout: TokenLayout, stage: int = 0
) -> torch.Tensor:
    """The explained row of ``matrix`` (``…×T×T`` → ``…×T``).

    The class token's row when ``cls_index`` is an index (first stage only: later Swin
    stages have no class token), else the mean of the patch tokens' rows.
    """
    if cls_index is not None and stage == 0:
        return matrix[..., cls_index, :]
    return matrix[..., layout.stage_patch_slice(stage), :].mean(dim=-2)


def spread_to_children(values: torch.Tensor, fine_grid: tuple[int, int]) -> torch.Tensor:
    """Relevance over the merged grid → relevance over ``fine_grid`` (children rule).

    Parameters
    ----------
    values : Tensor
        ``…×(h'·w')`` over the merged grid ``(h', w') = (⌈h/2⌉, ⌈w/2⌉)``, row-major.
    fine_grid : tuple of int
        ``(h, w)`` of the stage before the merge.

    Returns
    -------
    Tensor
        ``…×(h·w)``: each token gets its parent's value divided by the parent's number of
        children.
    """
    h, w = fine_grid
    hc, wc = merged_grid(fine_grid)
    if values.shape[-1] != hc * wc:
        raise ValueError(
            f"relevance over {values.shape[-1]} tokens does not fit the {hc}x{wc} grid "
            f"merged from {h}x{w}"
        )
    device = values.device
    rows, cols = torch.arange(h, device=device) // 2, torch.arange(w, device=device) // 2
    parent = (rows[:, None] * wc + cols[None, :]).reshape(-1)
    per_row = (h - 2 * torch.arange(hc, device=device)).clamp(max=2)
    per_col = (w - 2 * torch.arange(wc, device=device)).clamp(max=2)
    children = (per_row[:, None] * per_col[None, :]).reshape(-1).to(values.dtype)
    return (values / children)[..., parent]


def to_first_grid(values: torch.Tensor, layout: TokenLayout, stage: int) -> torch.Tensor:
    """Relevance over the patch tokens of ``stage`` → over the first stage's patch grid."""
    grids = layout.stage_grids
    for s in range(stage - 1, -1, -1):
        values = spread_to_children(values, grids[s])
    return values


def combine_stage_factors(
    factors: Mapping[int, Sequence[torch.Tensor]], cls_index: int | None, layout: TokenLayout
) -> torch.Tensor:
    """The explained row of ``R = R_S M_{S-1} R_{S-1} ⋯ M_0 R_0`` over the first grid's patches,
    with each stage's ``R_s = F_1 F_2 ⋯ F_m`` given as its factors.

    Only row-vector × matrix products are formed, ``O(T_s²)`` per factor: ``q(R)`` is linear
    in ``R``, so the explained row is pushed down from the last stage instead of multiplying
    ``T×T`` matrices (``O(T³)``, which dominates for Swin's large first stages).

    Parameters
    ----------
    factors : mapping of int to sequence of Tensor or WindowFactor
        Stage → ``N×T_s×T_s`` factors (or Swin window-form factors,
        :class:`~captum_fvit.explain.windowed.WindowFactor`), left to right (a running
        product is one factor); stages without factors contribute the identity.
    cls_index : int or None
        Class-token index, or ``None`` for the mean query.
    layout : TokenLayout
        Stage grids and prefix tokens.
    """
    top = max(factors)
    first, *rest = factors[top]
    if isinstance(first, WindowFactor):  # a Swin layer in window form
        if cls_index is not None and top == 0:
            raise ValueError("window-form attention has no class token to read")
        row = first.mean_query()
    else:
        row = query_rows(first, cls_index, layout, top)
    for factor in rest:
        row = _times(row, factor)
    for s in range(top - 1, -1, -1):
        row = spread_to_children(row, layout.stage_grids[s])
        for factor in factors.get(s, ()):
            row = _times(row, factor)
    return row[..., layout.patch_slice] if top == 0 else row


def _times(row: torch.Tensor, factor) -> torch.Tensor:
    """``row · factor`` for an ``N×T×T`` matrix or a window-form factor."""
    if isinstance(factor, WindowFactor):
        return factor.left_multiply(row)
    return (row.unsqueeze(-2) @ factor).squeeze(-2)


def combine_stage_products(
    products: Mapping[int, torch.Tensor], cls_index: int | None, layout: TokenLayout
) -> torch.Tensor:
    """:func:`combine_stage_factors` with one product matrix ``R_s`` per stage."""
    return combine_stage_factors({s: [p] for s, p in products.items()}, cls_index, layout)
