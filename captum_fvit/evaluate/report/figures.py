"""Matplotlib figures of the evaluation report (Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "certified_curve_plot",
    "drilldown_maps",
    "heatmap_grid",
    "line_plot",
    "region_overlay",
    "series_styles",
]

#: Label of the colour bar of min–max scaled maps.
SCALED_LABEL = "map value, min–max\nscaled per image"


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
    fig, axes = plt.subplots(
        n, cols, figsize=(1.9 * cols + 0.9, 1.9 * n + 0.5), squeeze=False, layout="constrained"
    )
    mappable = None
    for i in range(n):
        image = _image(images[i])
        axes[i, 0].imshow(image)
        for j, (name, maps) in enumerate(columns.items(), start=1):
            mappable = _scaled_map(axes[i, j], maps[i], image)
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if mappable is not None:
        _colorbar(fig, mappable, axes[:, 1:].ravel().tolist(), SCALED_LABEL)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _scaled_map(ax, values: torch.Tensor, image: np.ndarray | None):
    """Show one map min–max scaled to [0, 1], blended over a grey image when sizes match."""
    m = values.detach().float().cpu().numpy()
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    if image is not None and m.shape == image.shape[:2]:
        ax.imshow(image.mean(-1), cmap="gray", vmin=0, vmax=1)
        return ax.imshow(m, cmap="inferno", alpha=0.65, vmin=0, vmax=1)
    return ax.imshow(m, cmap="inferno", vmin=0, vmax=1)


def _colorbar(fig, mappable, axes, label: str):
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, pad=0.02)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return bar


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_LINESTYLES = ["-", "--", ":", "-."]
#: Fixed line styles of the usual variants: DDS and R_β solid, vanilla and R_pred dashed.
_NAMED_STYLES = {"dds": "-", "vanilla": "--", "R_β": "-", "R_pred": "--"}


def series_styles(names: Sequence[str]) -> dict[str, dict]:
    """Matplotlib styles that keep every series visible, even where lines coincide.

    The first word of a name (the method) picks the colour and marker; the rest (the variant,
    e.g. "vanilla"/"dds" or "R_β"/"R_pred") picks the line style, and "dds" series get hollow
    markers. Series drawn later are thinner with smaller markers, so a series lying exactly
    on an earlier one shows as a thin line inside a thick one instead of hiding it.
    """
    groups = list(dict.fromkeys(n.split(" ", 1)[0] for n in names))
    variants = list(dict.fromkeys(n.split(" ", 1)[1] if " " in n else "" for n in names))
    styles = {}
    count = max(len(names) - 1, 1)
    for order, name in enumerate(names):
        group = groups.index(name.split(" ", 1)[0])
        variant = variants.index(name.split(" ", 1)[1] if " " in name else "")
        color = _COLORS[group % len(_COLORS)]
        hollow = "dds" in name.split()
        suffix = name.split(" ", 1)[1] if " " in name else ""
        styles[name] = dict(
            color=color,
            linestyle=_NAMED_STYLES.get(suffix, _LINESTYLES[variant % len(_LINESTYLES)]),
            marker=_MARKERS[group % len(_MARKERS)],
            markerfacecolor="white" if hollow else color,
            markeredgecolor=color,
            linewidth=3.2 - 2.0 * order / count,
            markersize=8.0 - 4.0 * order / count,
            zorder=2 + order,
        )
    return styles


def line_plot(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str = "",
):
    """Lines of ``series`` (name → values) against ``x``, styled by :func:`series_styles`,
    with the legend outside the axes (it never covers a line)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.4), layout="constrained")
    styles = series_styles(list(series))
    every = max(1, len(x) // 12)  # at most about a dozen markers per line
    for name, values in series.items():
        ax.plot(list(x), list(values), label=name, markevery=every, **styles[name])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                  borderaxespad=0.0)  # fmt: skip
    if title:
        ax.set_title(title, fontsize=10)
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
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6), squeeze=False, layout="constrained")
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
    return fig


def drilldown_maps(
    image: torch.Tensor,
    maps: Mapping[str, Mapping[str, torch.Tensor]],
    title: str = "",
):
    """One image's maps: one row per explanation (e.g. "rollout dds"), one column per
    condition (e.g. "clean", "ε=8/255"), each row with its colour bar.

    Parameters
    ----------
    image : Tensor
        ``3×H×W`` in [0, 1] pixel units.
    maps : mapping
        Row name → (column name → ``H×W`` map); maps are min–max scaled per map.
    """
    plt = _pyplot()
    columns = list(dict.fromkeys(c for row in maps.values() for c in row))
    rows = max(len(maps), 1)
    fig, axes = plt.subplots(
        rows, 1 + len(columns), figsize=(1.9 * (1 + len(columns)) + 1.0, 1.9 * rows + 0.4),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    picture = _image(image)
    for i, (row, cells) in enumerate(maps.items()):
        axes[i, 0].imshow(picture)
        axes[i, 0].set_ylabel(row, fontsize=8)
        mappable = None
        for j, column in enumerate(columns, start=1):
            if column in cells:
                mappable = _scaled_map(axes[i, j], cells[column], picture)
            if i == 0:
                axes[i, j].set_title(column, fontsize=8)
        if mappable is not None:
            _colorbar(fig, mappable, axes[i, 1:].tolist(), SCALED_LABEL)
    axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
