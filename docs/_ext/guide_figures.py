"""The figures of the user guide, drawn from the bundled default models at build time.

Every figure is computed here from code in the repository — the trained ViT and diffusion
denoiser of :func:`captum_fvit.models.load_default` and test images of
:class:`captum_fvit.data.ShapesBenchmark` — with fixed seeds, so two builds draw the same
pictures. Small sample counts keep a CPU build fast (the whole set takes well under a
minute on one core); the figures illustrate, the numbers quoted in the text come from the
tutorials and the bench scripts.

Used by the ``fvit-figure`` directive (``docs/_ext/fvit_figures.py``); also a script::

    python docs/_ext/guide_figures.py OUT_DIR        # writes every figure as OUT_DIR/<name>.png
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

#: Shapes-benchmark test images shown on the guide pages.
IMAGES = (0, 1)
#: DDS setting of the figures (σ in [0, 1] pixel units).
SIGMA, N_SAMPLES, METHOD, K = 0.12, 16, "rollout", 8
#: PGD on the plain ViT's prediction: ε in [0, 1] pixel units (the paper's 8/255, ℓ∞).
EPS = 8 / 255
#: Certificate setting: k, β, α and sample counts.
CERT = dict(k=5, beta=0.6, alpha=0.001, n=200)
CERT_IMAGES = (0, 1, 2)
SEED = 0


@functools.cache
def _bundle():
    from captum_fvit.models import load_default

    return load_default()


@functools.cache
def _data(count: int):
    from captum_fvit.data import ShapesBenchmark

    bundle = _bundle()
    return ShapesBenchmark.from_split("test", size=count, image_size=bundle.image_size).batch(range(count))


def _token_image(tokens: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """One ``P`` token map, sum-normalised, as an ``h×w`` array (share of the map per patch)."""
    t = tokens.detach().double().clamp_min(0)
    return (t / t.sum().clamp_min(1e-12)).reshape(grid).numpy()


def _show_map(ax, image: torch.Tensor, heat: np.ndarray, vmax: float):
    """A token map over a grey copy of the image (nearest-neighbour patches)."""
    h, w = image.shape[-2:]
    grey = image.mean(0).numpy()
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0))
    im = ax.imshow(heat, cmap="inferno", alpha=0.75, vmin=0, vmax=vmax, extent=(0, w, h, 0),
                   interpolation="nearest")  # fmt: skip
    return im


def _clean_axes(axes) -> None:
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def concepts_attack() -> plt.Figure:
    """Clean image, its attention map, the same under PGD, and DDS of both (one row per image)."""
    from captum_fvit import AttentionMap, DDSAttention
    from captum_fvit.evaluate import pgd_attack, topk_overlap

    bundle = _bundle()
    names = bundle.class_names
    data = _data(max(IMAGES) + 1)
    pixels = data["image"][list(IMAGES)]
    labels = data["label"][list(IMAGES)]
    norm = bundle.normalization
    x = norm.from_pixels(pixels)
    x_adv = pgd_attack(bundle.model, x, labels=labels, eps=EPS, seed=SEED)
    adv_pixels = norm.to_pixels(x_adv).clamp(0, 1)
    with torch.no_grad():
        pred = bundle.model(x).argmax(1)
        pred_adv = bundle.model(x_adv).argmax(1)
    plain = AttentionMap(bundle.model, method=METHOD)
    dds = DDSAttention(bundle.model, bundle.denoiser, method=METHOD, sigma=SIGMA,
                       n_samples=N_SAMPLES, batch_size=64)  # fmt: skip
    grid = plain.token_grid(x.shape[-2:])
    maps = {
        ("attention", "clean"): plain.token_map(x, target=labels),
        ("attention", "attacked"): plain.token_map(x_adv, target=labels),
    }
    clean = dds.details(x, target=labels, seed=SEED)
    attacked = dds.details(x_adv, target=labels, seed=SEED)
    maps[("DDS", "clean")], maps[("DDS", "attacked")] = clean.mean, attacked.mean
    smoothed = {"clean": clean.predicted, "attacked": attacked.predicted}

    n = len(IMAGES)
    fig, axes = plt.subplots(n, 6, figsize=(13.5, 2.55 * n), squeeze=False, layout="constrained")
    for i in range(n):
        heats = {key: _token_image(m[i], grid) for key, m in maps.items()}
        vmax = max(float(h.max()) for h in heats.values())
        axes[i, 0].imshow(pixels[i].permute(1, 2, 0).numpy())
        axes[i, 0].set_title(f"clean image\nViT says {names[pred[i]]}", fontsize=9)
        axes[i, 2].imshow(adv_pixels[i].permute(1, 2, 0).numpy())
        axes[i, 2].set_title(f"PGD, ε = 8/255\nViT says {names[pred_adv[i]]}", fontsize=9)
        slots = {("attention", "clean"): 1, ("attention", "attacked"): 3,
                 ("DDS", "clean"): 4, ("DDS", "attacked"): 5}  # fmt: skip
        for (method, state), j in slots.items():
            im = _show_map(axes[i, j], pixels[i] if state == "clean" else adv_pixels[i],
                           heats[(method, state)], vmax)  # fmt: skip
            title = f"{method}, {state}"
            if state == "attacked":
                overlap = float(topk_overlap(maps[(method, "clean")][i:i + 1],
                                             maps[(method, "attacked")][i:i + 1], K)[0])  # fmt: skip
                title += f"\ntop-{K} kept: {overlap:.0%}"
            elif method == "DDS":
                title += f"\nsmoothed: {names[smoothed['clean'][i]]}"
            else:
                title += "\n "
            axes[i, j].set_title(title, fontsize=9)
        bar = fig.colorbar(im, ax=list(axes[i, 1:]), shrink=0.9, pad=0.01)
        bar.set_label("share of the map\nper patch", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    _clean_axes(axes)
    fig.suptitle(
        f"{METHOD} attention of the bundled ViT, plain and with DDS (σ = {SIGMA}, "
        f"{N_SAMPLES} samples); true classes: {', '.join(names[int(c)] for c in labels)}",
        fontsize=10,
    )
    return fig


@functools.cache
def _certificates():
    from captum_fvit import DDSAttention, FaithfulRegion

    bundle = _bundle()
    data = _data(max(CERT_IMAGES) + 1)
    pixels = data["image"][list(CERT_IMAGES)]
    x = bundle.normalization.from_pixels(pixels)
    dds = DDSAttention(bundle.model, bundle.denoiser, method="rollout", sigma=SIGMA,
                       batch_size=128, n_select=16)  # fmt: skip
    region = FaithfulRegion(dds, k=CERT["k"], beta=CERT["beta"], alpha=CERT["alpha"], n_samples=CERT["n"])
    return pixels, data["label"][list(CERT_IMAGES)], region.certify(x, seed=SEED)


def certificate_region() -> plt.Figure:
    """Per image: the faithful region at a radius over the image, and the per-token r_in."""
    pixels, labels, certificates = _certificates()
    names = _bundle().class_names
    n = len(certificates)
    fig, axes = plt.subplots(2, n, figsize=(3.3 * n, 6.4), squeeze=False, layout="constrained")
    for i, c in enumerate(certificates):
        h, w = c.grid
        size = pixels.shape[-2:]
        radius = round(c.radius_beta / 2, 4) if c.radius_beta > 0 else 0.0
        region = c.region_at(radius).reshape(h, w).numpy().astype(float)
        top = torch.zeros(h * w)
        top[c.topk] = 1
        extent = (0, size[1], size[0], 0)
        ax = axes[0, i]
        ax.imshow(pixels[i].permute(1, 2, 0).numpy(), extent=extent)
        overlay = np.zeros((h, w, 4))
        overlay[..., 1] = 0.9
        overlay[..., 3] = 0.55 * region
        ax.imshow(overlay, extent=extent, interpolation="nearest")
        # outlines in the image's pixel coordinates (row 0 at the top, as imshow draws it)
        scale = np.ones((size[0] // h, size[1] // w))
        ys, xs = np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5
        if region.any():
            ax.contour(xs, ys, np.kron(region, scale), levels=[0.5], colors="lime", linewidths=2.2)
        ax.contour(xs, ys, np.kron(top.reshape(h, w).numpy(), scale), levels=[0.5],
                   colors="white", linewidths=1.1, linestyles="--")  # fmt: skip
        ax.set_title(
            f"{names[int(labels[i])]}: faithful region at r = {radius:g}\n"
            f"{int(region.sum())} of the top-{c.k} tokens (R_β = {c.radius_beta:.3f})",
            fontsize=9,
        )
        r_in = c.r_in.reshape(h, w).numpy()
        im = axes[1, i].imshow(r_in, cmap="viridis", vmin=0, interpolation="nearest")
        axes[1, i].set_title("certified r_in per token\n(ℓ2, [0, 1] pixel units)", fontsize=9)
        bar = fig.colorbar(im, ax=axes[1, i], shrink=0.85)
        bar.ax.tick_params(labelsize=7)
    _clean_axes(axes)
    fig.suptitle(
        f"Certified faithful regions of the bundled pipeline (rollout, vote, σ = {SIGMA}, "
        f"n = {CERT['n']}, confidence {certificates[0].confidence:g})\ngreen: the faithful "
        f"region (tokens with r_in > r); dashed white: the estimated top-{CERT['k']} tokens",
        fontsize=9,
    )
    return fig


def certified_radius_curve() -> plt.Figure:
    """Tokens certified in the top-k against the radius, per image, with R_β and R_pred."""
    _pixels, labels, certificates = _certificates()
    names = _bundle().class_names
    c0 = certificates[0]
    needed = int(np.ceil(c0.beta * c0.k))
    top = max(max(c.radius_beta, min(c.radius_pred, 4 * c.radius_beta)) for c in certificates)
    radii = np.linspace(0, 1.15 * max(top, 1e-3), 400)
    fig, ax = plt.subplots(figsize=(7.6, 3.6), layout="constrained")
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D"]
    for i, c in enumerate(certificates):
        r_in = np.sort(c.r_in.numpy())[::-1]
        counts = (r_in[None, :] > radii[:, None]).sum(1)
        line, = ax.step(radii, counts, where="post", linestyle=styles[i % 4], linewidth=1.6,
                        label=f"image {i} ({names[int(labels[i])]}): R_β = {c.radius_beta:.3f}, "
                              f"R_pred = {c.radius_pred:.3f}")  # fmt: skip
        ax.plot([c.radius_beta], [needed], marker=markers[i % 4], color=line.get_color(),
                markersize=7, linestyle="none")  # fmt: skip
        if c.radius_pred < radii[-1]:
            ax.axvline(c.radius_pred, color=line.get_color(), linestyle=":", linewidth=1)
    ax.axhline(needed, color="grey", linewidth=0.8)
    ax.annotate(f"⌈βk⌉ = {needed}", (radii[-1], needed), textcoords="offset points",
                xytext=(-4, 4), ha="right", fontsize=8, color="grey")  # fmt: skip
    ax.set_xlabel("radius r (ℓ2, [0, 1] pixel units)")
    ax.set_ylabel(f"top-{c0.k} tokens certified\nto stay in the top-{c0.k}")
    ax.set_ylim(-0.2, c0.k + 0.4)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Certified-radius curves: markers at R_β, dotted lines at R_pred", fontsize=10)
    return fig


#: name → function drawing the figure.
FIGURES: dict[str, Callable[[], plt.Figure]] = {
    "concepts_attack": concepts_attack,
    "certificate_region": certificate_region,
    "certified_radius_curve": certified_radius_curve,
}


def draw(name: str, path: Path, dpi: int = 90) -> Path:
    """Draw figure ``name`` into ``path`` (PNG)."""
    if name not in FIGURES:
        raise KeyError(f"no guide figure {name!r}; known: {sorted(FIGURES)}")
    torch.manual_seed(SEED)
    with torch.inference_mode(False):
        figure = FIGURES[name]()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "guide_figures")
    for name in FIGURES:
        print(draw(name, out / f"{name}.png"))


if __name__ == "__main__":
    main(sys.argv[1:])
