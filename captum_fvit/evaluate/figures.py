"""Matplotlib figures of the evaluation report (Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["heatmap_grid", "line_plot", "certified_curve_plot", "region_overlay"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def heatmap_grid(
    images: torch.Tensor,
    columns: Mapping[str, torch.Tensor],
    title: str = "",
):
    """One row per image: the image, then one heat map per column.

    Parameters
    ----------
    images : Tensor
        ``N×3×H×W`` in [0, 1] pixel units.
    columns : mapping of str to Tensor
        Column title → ``N×H×W`` (or ``N×h×w``) maps; each is shown min–max scaled per image
        and, when it has the image's size, blended over a grey copy of the image.
    """
    plt = _pyplot()
    n = images.shape[0]
    cols = 1 + len(columns)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False)
    for i in range(n):
        image = _image(images[i])
        axes[i, 0].imshow(image)
        for j, (name, maps) in enumerate(columns.items(), start=1):
            m = maps[i].detach().float().cpu().numpy()
            m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
            if m.shape == image.shape[:2]:
                axes[i, j].imshow(image.mean(-1), cmap="gray", vmin=0, vmax=1)
                axes[i, j].imshow(m, cmap="inferno", alpha=0.65, vmin=0, vmax=1)
            else:
                axes[i, j].imshow(m, cmap="inferno", vmin=0, vmax=1)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def line_plot(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str = "",
):
    """Lines of ``series`` (name → values) against ``x``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for name, values in series.items():
        style = "--" if "vanilla" in name else "-"
        ax.plot(list(x), list(values), style, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def certified_curve_plot(
    radii: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    title: str = "certified curves",
):
    """Fraction of images whose certified radius is ≥ r, against r (ℓ2, pixel units)."""
    return line_plot(radii, curves, "radius r (ℓ2, [0,1] pixel units)", "fraction certified ≥ r", title)


def region_overlay(
    images: torch.Tensor,
    regions: torch.Tensor,
    topk: torch.Tensor | None = None,
    titles: Sequence[str] | None = None,
):
    """Images with their certified faithful region (green) and top-k tokens (outlined).

    Parameters
    ----------
    images : Tensor
        ``N×3×H×W`` in [0, 1].
    regions : Tensor
        ``N×H×W`` bool pixel masks of the certified region.
    topk : Tensor, optional
        ``N×H×W`` bool pixel masks of the (estimated) top-k tokens.
    """
    plt = _pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.5), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        image = _image(images[i])
        ax.imshow(image)
        region = regions[i].cpu().numpy().astype(float)
        overlay = np.zeros((*region.shape, 4))
        overlay[..., 1] = 1.0
        overlay[..., 3] = 0.45 * region
        ax.imshow(overlay)
        if topk is not None:
            ax.contour(topk[i].cpu().numpy().astype(float), levels=[0.5], colors="white", linewidths=0.8)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig
